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
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from omegaconf import OmegaConf, open_dict

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


# SLURM job states after which a job will not run again (requeued ones pass through PENDING / REQUEUED)
ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
         "SPECIAL_EXIT", "TIMEOUT"}
POLL_S, GRACE_S = 1.0, 5.0


def slurm_state(job_id: str) -> str | None:
    """The job's state from ``scontrol`` (None once SLURM has forgotten it). Not ``sacct``: clusters without
    accounting storage (like the test cluster) have none, and submitit then never learns that a job without a
    result file (cancelled, killed) has ended."""
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                             timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"JobState=(\S+)", out)
    return found.group(1) if found else None


def wait_until_ended(job) -> str | None:
    """Wait for the job's result file (returns None), or until SLURM says it ended without one (returns the
    state, or UNKNOWN once SLURM forgot the job). Jobs of other executors: their own wait."""
    import submitit

    if not isinstance(job, submitit.SlurmJob):
        job.wait()
        return None
    ended_at, folder = None, job.paths.folder

    def has_result() -> bool:
        try:  # refreshes a network file system's cached view of the folder (as submitit does)
            folder.chmod(folder.stat().st_mode)
        except OSError:
            pass
        return job.paths.result_pickle.exists()

    while not has_result():
        state = slurm_state(job.job_id)
        if state is None or state in ENDED:  # give its result file time to appear on a shared file system
            ended_at = ended_at or time.time()
            if time.time() - ended_at > GRACE_S:
                return state or "UNKNOWN"
        else:
            ended_at = None
        time.sleep(POLL_S)
    return None


def collect(jobs: list, on_lost: Callable[[Any, str], Any]) -> list:
    """Each job's result, waiting for all; ``on_lost(job, why)`` stands in for a job that has none (it
    raised, or SLURM ended it without a result: cancelled, killed, out of requeues)."""
    results = []
    for job in jobs:
        state = wait_until_ended(job)
        if state is None:
            try:
                results.append(job.result())
                continue
            except Exception as exc:  # noqa: BLE001 - the job's own error: recorded, the sweep goes on
                message = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
                why = f"SLURM job {job.job_id} failed: {message[:300]}"
        else:
            why = f"SLURM job {job.job_id} ended {state} without finishing its run"
        log.error("%s", why)
        results.append(on_lost(job, why))
    return results


def record_lost_run(folder: Path, reason: str, resolved: dict, overrides: list[str] | None = None) -> dict:
    """A run whose job ended without its result: ``failed`` with the reason, unless it finished ``done``. A
    job cancelled before it started has no folder yet: it gets the ``.hydra/`` files Hydra would have written
    (the config and the overrides), so the sweep's summary lists the run."""
    import yaml

    from imbalance_lab.app import record_failure
    from imbalance_lab.runfolder import is_done, read_metrics, write_text_atomic

    if is_done(folder):
        return read_metrics(folder)
    hydra_dir = folder / ".hydra"
    if not hydra_dir.is_dir() and overrides is not None:
        hydra_dir.mkdir(parents=True)
        write_text_atomic(hydra_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
        write_text_atomic(hydra_dir / "overrides.yaml", yaml.safe_dump(list(overrides)))
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

        def lost(job, why: str) -> JobReturn:
            overrides = list(by_job[id(job)])
            config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            folder = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
            task_name = str(config.hydra.job.name)
            with open_dict(config):
                del config["hydra"]  # its runtime part exists only inside the job
            metrics = record_lost_run(folder, why, OmegaConf.to_container(config, resolve=True), overrides)
            return JobReturn(overrides=overrides, working_dir=str(folder), task_name=task_name,
                             status=JobStatus.COMPLETED, _return_value=objective(metrics))

        return collect(jobs, lost)


class SlurmLauncher(_Tolerant, submitit_launcher.SlurmLauncher):
    """``hydra/launcher=slurm``."""


class LocalLauncher(_Tolerant, submitit_launcher.LocalLauncher):
    """``hydra/launcher=slurm_local``: the same through submitit's local executor (no cluster)."""

