"""``hydra/launcher=parallel``: Hydra's joblib launcher (k runs at once in worker processes), with each worker
pinned to one GPU of the machine — round-robin over ``hydra.launcher.gpus`` (``CUDA_VISIBLE_DEVICES``
entries; null = every visible GPU), several workers per GPU when ``n_jobs`` exceeds them. Each worker claims
its slot before it touches CUDA (``imbalance_lab.worker.claim_gpu``, called by the run)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher


class ParallelLauncher(JoblibLauncher):
    def __init__(self, gpus: Sequence | None = None, **joblib) -> None:
        super().__init__(**joblib)
        self.gpus = None if gpus is None else list(gpus)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from imbalance_lab.schema import check
        from imbalance_lab.worker import gpus_for_workers

        n_jobs = self.joblib.get("n_jobs")
        check(isinstance(n_jobs, int) and n_jobs != 0, "hydra.launcher.n_jobs", n_jobs,
              "an integer >= 1 (runs at once), or negative for all CPUs but n_jobs + 1")
        with gpus_for_workers(self.gpus, Path(str(self.config.hydra.sweep.dir)) / ".gpu_slots"):
            return super().launch(job_overrides, initial_job_idx)
