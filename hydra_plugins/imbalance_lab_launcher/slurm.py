"""``hydra/launcher=slurm`` and ``slurm_local``: Hydra's submitit launchers (one job per run), with two changes.

- A job that ends without finishing its run — ``scancel``, a node failure, a kill after the time limit ran
  out, a requeue limit reached — no longer ends the sweep with that job's exception: the run is recorded
  ``failed`` in its folder with the job's id, state and error (unless it finished ``done``), and the sweep
  goes on to its summary; a re-run with ``hydra.sweep.dir=…`` redoes it, from its checkpoint if it has one.
- The executor set-up is shared with ``hydra/launcher=stacked hydra.launcher.executor=slurm``
  (:func:`make_executor`, :func:`collect`), which submits one job per stack.

Each run records the SLURM job it ran in (``metrics.json`` → ``slurm``: job id, array task, restarts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

INIT_KEYS = {"submitit_folder", "max_num_timeout"}  # arguments of the executor itself, not of each job


def make_executor(params: dict, cluster: str, sweep_dir: Path):
    """A submitit executor for ``cluster`` (slurm, local) with the launcher's parameters, as Hydra's submitit
    launcher builds it: the generic queue keys as they are, the others prefixed with the cluster's name."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    sweep_dir.mkdir(parents=True, exist_ok=True)
    init = {"folder": params["submitit_folder"]}
    if "max_num_timeout" in params:
        init[f"{cluster}_max_num_timeout"] = params["max_num_timeout"]
    executor = submitit.AutoExecutor(cluster=cluster, **init)
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in generic else f"{cluster}_{k}": v for k, v in params.items()
                                  if k not in INIT_KEYS})
    return executor


def job_error(job, exc: BaseException) -> str:
    """What became of a job that returned no result, in one line: its id, its state and its error."""
    try:
        state = job.state
    except Exception:  # noqa: BLE001 - the scheduler may not know the job any more
        state = "UNKNOWN"
    message = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return f"SLURM job {job.job_id} ended {state} without finishing: {message[:300]}"


def collect(jobs: list, on_lost: Callable[[Any, BaseException], Any]) -> list:
    """Each job's result, waiting for all; ``on_lost(job, exception)`` stands in for a job that has none."""
    results = []
    for job in jobs:
        try:
            results.append(job.result())
        except Exception as exc:  # noqa: BLE001 - cancelled, killed, failed outside the run: recorded, go on
            log.error("%s", job_error(job, exc))
            results.append(on_lost(job, exc))
    return results


def record_lost_run(folder: Path, reason: str, resolved: dict) -> dict:
    """A run whose job ended without its result: ``failed`` with the reason, unless it finished ``done``."""
    from imbalance_lab.app import record_failure
    from imbalance_lab.runfolder import is_done, read_metrics

    if is_done(folder):
        return read_metrics(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return record_failure(folder, f"{reason}; re-run the sweep with its hydra.sweep.dir to redo it", resolved)


class _Tolerant:
    """``launch`` of Hydra's submitit launchers with :func:`collect` in place of ``[j.results()[0] ...]``."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from imbalance_lab.app import objective

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        executor = make_executor(self.params, self._EXECUTOR, sweep_dir)
        log.info("submitit %s launcher: %d runs, one job each, into %s", self._EXECUTOR, len(job_overrides),
                 sweep_dir)
        params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*params))
        log.info("submitted jobs %s", ", ".join(j.job_id for j in jobs))
        by_job = {id(j): overrides for j, overrides in zip(jobs, job_overrides)}

        def lost(job, exc) -> JobReturn:
            overrides = list(by_job[id(job)])
            config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            folder = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
            resolved = OmegaConf.to_container(config, resolve=True)
            resolved.pop("hydra", None)
            metrics = record_lost_run(folder, job_error(job, exc), resolved)
            return JobReturn(overrides=overrides, working_dir=str(folder), task_name=str(config.hydra.job.name),
                             status=JobStatus.COMPLETED, _return_value=objective(metrics))

        return collect(jobs, lost)


class SlurmLauncher(_Tolerant, submitit_launcher.SlurmLauncher):
    """``hydra/launcher=slurm``."""


class LocalLauncher(_Tolerant, submitit_launcher.LocalLauncher):
    """``hydra/launcher=slurm_local``: the same through submitit's local executor (no cluster)."""

