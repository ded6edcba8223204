"""xaibench's Hydra launcher plugin.

* ``hydra/launcher=local`` (:mod:`.local_launcher`): every point of a sweep in a process of its own; a dead
  point is recorded as failed and the others go on.
* Stand-ins for the launcher configs of the ``cluster`` extra (``submitit_slurm``, ``submitit_local``,
  ``joblib``) when its plugins are not installed (:mod:`.missing`): ``hydra/launcher=slurm`` or
  ``slurm_local`` on a plain install then stops with one line that says to install ``xaibench[cluster]``,
  instead of Hydra's "Could not load 'hydra/launcher/submitit_local'".  Registered only when the plugin
  module cannot be found, so an installed plugin is never shadowed.

Hydra finds the package by scanning the ``hydra_plugins`` namespace (it imports every module of it).
"""

import importlib.util

from hydra.core.config_store import ConfigStore

#: launcher config -> (the plugin module that provides it, the pip package)
EXTRA_LAUNCHERS = {"submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
                   "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
                   "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher")}


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


for _name, (_module, _package) in EXTRA_LAUNCHERS.items():
    if not _found(_module):
        ConfigStore.instance().store(
            group="hydra/launcher", name=_name, provider="xaibench_launcher",
            node={"_target_": "hydra_plugins.xaibench_launcher.missing.MissingPluginLauncher", "plugin": _package})
