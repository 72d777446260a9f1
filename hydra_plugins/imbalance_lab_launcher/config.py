"""The configs of ``hydra/launcher=stacked`` and ``hydra/launcher=parallel`` (no ``from __future__ import
annotations`` here: Hydra's plugin scan executes this module outside ``sys.modules``, where postponed
annotations break dataclasses)."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class StackedLauncherConf(SlurmQueueConf):
    """Runs that can share a stack train together, one stack per process (executor=local) or per SLURM job
    (executor=slurm, with the SLURM keys of hydra/launcher=slurm: partition, gpus_per_node, timeout_min, ...)."""

    _target_: str = "hydra_plugins.imbalance_lab_launcher.stacked_launcher.StackedLauncher"
    max_stack: int = 20  # runs in one stack at most
    executor: str = "local"  # local: in this machine's processes; slurm: one SLURM job per stack
    n_jobs: int = 1  # local: stacks trained at once (separate processes, one GPU each: gpus)
    gpus: list[Any] | None = None  # local: GPUs the processes are pinned to, round-robin; null = all visible
    # executor=slurm: per stack job (SlurmQueueConf's other keys: qos, account, constraint, setup, ...)
    timeout_min: int = 60
    gpus_per_node: int | None = 1
    cpus_per_task: int | None = 4
    mem_gb: int | None = 32
    array_parallelism: int = 32
    max_num_timeout: int = 3  # a timed-out or preempted stack is requeued and continues from its checkpoints
    additional_parameters: dict = field(default_factory=dict)


@dataclass
class ParallelLauncherConf(JobLibLauncherConf):
    """k runs at once on one machine (joblib worker processes), each worker on one GPU."""

    _target_: str = "hydra_plugins.imbalance_lab_launcher.parallel.ParallelLauncher"
    n_jobs: int = 2  # k, explicit: k runs must fit in the machine's (and each GPU's) memory
    gpus: list[Any] | None = None  # GPUs the workers are pinned to, round-robin; null = all visible


ConfigStore.instance().store(group="hydra/launcher", name="stacked", node=StackedLauncherConf,
                             provider="imbalance_lab")
ConfigStore.instance().store(group="hydra/launcher", name="parallel", node=ParallelLauncherConf,
                             provider="imbalance_lab")
