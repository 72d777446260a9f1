"""The config of ``hydra/launcher=stacked`` (no ``from __future__ import annotations`` here: Hydra's plugin
scan executes this module outside ``sys.modules``, where postponed annotations break dataclasses)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class StackedLauncherConf:
    _target_: str = "hydra_plugins.imbalance_lab_launcher.stacked_launcher.StackedLauncher"
    max_stack: int = 20  # runs in one stack at most
    n_jobs: int = 1  # stacks trained at once (separate processes sharing the machine and its GPU)


ConfigStore.instance().store(group="hydra/launcher", name="stacked", node=StackedLauncherConf,
                             provider="imbalance_lab")
