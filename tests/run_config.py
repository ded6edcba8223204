"""A run configuration without Hydra's command line: the packaged config.yaml with an experiment given inline,
for tests that drive :class:`xaibench.run.runner.Runner` in-process."""

from omegaconf import OmegaConf



def make_cfg(experiment: dict, n_samples: int = 2, **top):
    """The run's default options, with ``experiment``, ``dataset.n_samples`` and
    quiet output (no summary, report or gallery); ``top`` sets further top-level options."""
    from xaibench.run.options import RunConfig

    cfg = OmegaConf.create(RunConfig().values())  # the typed options' defaults (xaibench/run/options.py)
    for g in ("model", "dataset", "method", "metric"):
        cfg[g] = {}
    cfg.experiment = OmegaConf.create(experiment)
    cfg.dataset = OmegaConf.create({"n_samples": n_samples})
    cfg.print_summary = False
    cfg.report = False
    cfg.gallery = 0
    for k, v in top.items():
        cfg[k] = v
    return cfg
