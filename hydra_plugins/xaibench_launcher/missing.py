"""The stand-in launcher of a config whose plugin (``cluster`` extra) is not installed: one line, exit 2."""

from __future__ import annotations

import sys

from hydra.plugins.launcher import Launcher


class MissingPluginLauncher(Launcher):
    """Stops the sweep before any point runs: the launcher's plugin is not installed."""

    def __init__(self, plugin: str = "", **kwargs) -> None:
        self.plugin = plugin

    def setup(self, *, hydra_context, task_function, config) -> None:
        choice = ""
        try:
            choice = str(config.hydra.runtime.choices.get("hydra/launcher") or "")
        except Exception:  # noqa: BLE001 - the message works without the name
            pass
        name = f"hydra/launcher={choice}" if choice else "this launcher"
        print(f"xaibench: error: {name} needs the {self.plugin} plugin, which is not installed: "
              f"pip install 'xaibench[cluster]' (or use hydra/launcher=local, which needs nothing more)",
              file=sys.stderr)
        raise SystemExit(2)

    def launch(self, job_overrides, initial_job_idx):  # pragma: no cover - setup stops first
        raise SystemExit(2)
