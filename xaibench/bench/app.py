"""``xaibench``: the Hydra entry point.

    xaibench                                   # the default experiment
    xaibench experiment=NAME                   # conf/experiment/NAME.yaml
    xaibench dataset.n_samples=8               # limit every dataset
    xaibench hydra.run.dir=out/my_run          # choose the run folder
    xaibench -m method.lambda=0,0.5,1          # a sweep (one run folder per value)
    xaibench resume=true hydra.run.dir=DIR     # continue an interrupted run

Every run folder gets ``results.parquet``, ``results.csv``, ``summary.csv`` and
``provenance.json`` (see :mod:`xaibench.bench.results`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ..errors import UserError
from .config import CONF_DIR


def _task(cfg: DictConfig):
    from .runner import Runner

    import torch

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary, status = Runner(cfg, out).run()
    except UserError as e:
        print(f"xaibench: error: {e}", file=sys.stderr)
        sys.exit(2)
    if status != "complete":
        sys.exit(130)
    return summary


def main():
    if not (CONF_DIR / "config.yaml").exists():
        print(f"xaibench: error: no configuration folder at {CONF_DIR}; run from a checkout of the repository "
              f"(pip install -e .) or set XAIBENCH_CONF to its conf/ folder", file=sys.stderr)
        sys.exit(2)
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(_task)()


if __name__ == "__main__":
    main()
