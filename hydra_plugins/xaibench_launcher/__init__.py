"""xaibench's Hydra launcher plugin (``hydra/launcher=local``): see :mod:`.local_launcher`."""
