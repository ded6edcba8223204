"""A run configuration without Hydra's command line: the packaged config.yaml with an experiment given inline,
for tests that drive :class:`xaibench.run.runner.Runner` in-process."""

from omegaconf import OmegaConf

from xaibench.run.plan import conf_dir


def make_cfg(experiment: dict, n_samples: int = 2, **top):
    """``config.yaml`` minus its defaults and hydra nodes, with ``experiment``, ``dataset.n_samples`` and
    quiet output (no summary, report or gallery); ``top`` sets further top-level options."""
    cfg = OmegaConf.load(conf_dir() / "config.yaml")
    cfg.pop("defaults")
    cfg.pop("hydra")
    cfg.experiment = OmegaConf.create(experiment)
    cfg.dataset = OmegaConf.create({"n_samples": n_samples})
    cfg.print_summary = False
    cfg.report = False
    cfg.gallery = 0
    for k, v in top.items():
        cfg[k] = v
    return cfg
