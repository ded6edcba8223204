"""The harness: Hydra entry point, runner, timing, result tables and the regression gate."""
