"""``hydra/launcher=stacked``: a multirun's jobs that can share a stack (the same data, model, optimiser and
trainer settings; seeds and loss hyperparameters may differ) train together in one process, as one stack
(``imbalance_lab.run.run_stack``); every job keeps its own run folder.

1. Every job is set up by Hydra's own ``run_job`` (its folder, ``.hydra/``, logging) with a task that only
   validates the config: a run already done is skipped, a refused one recorded as failed.
2. The jobs left are grouped by ``run.stack_key`` and cut into stacks of at most ``max_stack``; a job that
   shares its settings with no other (or ``method=majority_only``) runs alone, with the reason logged.
3. The stacks train where ``executor`` says:

   - ``local``: ``n_jobs`` of them at once in separate processes (joblib), each pinned to one GPU
     (``gpus``, round-robin; ``imbalance_lab.worker``), or one after another in this process;
   - ``slurm``: one SLURM job per stack (a submitit job array, with the keys of ``hydra/launcher=slurm``). A
     stack told to stop by a time limit or a preemption writes every member's checkpoint at the step it is in
     and is requeued (``max_num_timeout`` times); a job that ends without its runs records them failed.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


def stacks(jobs: list, max_stack: int) -> list[list]:
    """The jobs grouped by ``stack_key`` (first appearance order), each group cut into stacks of at most
    ``max_stack``; a job that cannot be stacked is a stack of its own."""
    from imbalance_lab.run import stack_key

    groups: dict[Any, list] = {}
    for i, job in enumerate(jobs):
        key = stack_key(job.cfg)
        groups.setdefault(("alone", i) if key is None else key, []).append(job)
    out = []
    for (kind, *_), members in ((k if isinstance(k, tuple) else ("stack",), v) for k, v in groups.items()):
        if len(members) == 1:
            reason = ("its method is not stackable" if kind == "alone"
                      else "no other job shares its data, model, optimiser and trainer settings")
            log.info("runs alone (%s): %s", reason, members[0].out_dir)
        out += [members[i:i + max_stack] for i in range(0, len(members), max_stack)]
    return out


def train_stack(jobs: list, threads: int | None = None) -> list[dict]:
    """One stack, start to finish: each run's log also goes to its own folder. ``threads``: CPU threads for
    this process (a worker among n_jobs gets its share of the cores)."""
    from imbalance_lab.app import record_failure
    from imbalance_lab.data import DatasetUnavailable
    from imbalance_lab.preemption import Terminated
    from imbalance_lab.run import run_stack
    from imbalance_lab.runfolder import describe_error, is_done
    from imbalance_lab.schema import ConfigError
    from imbalance_lab.worker import claim_gpu, end_with_parent

    end_with_parent()
    claim_gpu()
    if threads:
        import torch

        torch.set_num_threads(threads)
    root = logging.getLogger()
    handlers = [logging.FileHandler(Path(j.out_dir) / "imbalance_lab.log") for j in jobs]
    for h in handlers:
        h.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        root.addHandler(h)
    try:
        log.info("training a stack of %d: %s", len(jobs), ", ".join(Path(j.out_dir).name for j in jobs))
        return run_stack(jobs)
    except Terminated as exc:  # SIGTERM: every member wrote its checkpoint; a re-run continues the stack
        for j in jobs:
            if not is_done(Path(j.out_dir)):
                record_failure(Path(j.out_dir), f"stopped by {exc}; re-run the sweep with its hydra.sweep.dir to "
                               "continue", j.resolved_config)
        raise
    except Exception as exc:  # every run of the stack fails with the reason; the sweep goes on
        if isinstance(exc, ConfigError | DatasetUnavailable):  # found while reading the data
            reason = str(exc)
            log.error("error: %s", reason)
        else:  # a bug, an out-of-memory: the traceback goes to the runs' logs
            reason = describe_error(exc)
            log.exception("stack failed with an unexpected error")
        return [record_failure(Path(j.out_dir), reason, j.resolved_config) for j in jobs]
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()


class StackJob:
    """One stack as a SLURM job (submitit pickles this and calls it there). On a time-out or preemption
    submitit calls ``checkpoint`` (after the stack wrote its members' checkpoints) and requeues the job,
    which then calls it again: the stack continues from those checkpoints."""

    def __call__(self, jobs: list) -> list[dict]:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        return train_stack(jobs)

    def checkpoint(self, jobs: list):
        import submitit

        return submitit.helpers.DelayedSubmission(self, jobs)


class StackedLauncher(Launcher):
    def __init__(self, max_stack: int = 20, executor: str = "local", n_jobs: int = 1, gpus=None,
                 **slurm: Any) -> None:
        self.max_stack, self.n_jobs, self.executor = int(max_stack), int(n_jobs), str(executor)
        self.gpus = None if gpus is None else list(gpus)
        self.slurm = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                      for k, v in slurm.items()}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from imbalance_lab.app import objective, prepare
        from imbalance_lab.preemption import Terminated
        from imbalance_lab.run import Job
        from imbalance_lab.schema import check, one_of

        check(self.max_stack >= 1, "hydra.launcher.max_stack", self.max_stack, "an integer >= 1")
        check(self.n_jobs >= 1, "hydra.launcher.n_jobs", self.n_jobs, "an integer >= 1")
        one_of("hydra.launcher.executor", self.executor, ("local", "slurm"))
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("stacked launcher: %d jobs, stacks of at most %d, %s", len(job_overrides), self.max_stack,
                 "one SLURM job each" if self.executor == "slurm" else f"{self.n_jobs} at once")
        returns: list[JobReturn] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            returns.append(run_job(hydra_context=self.hydra_context, task_function=prepare, config=sweep_config,
                                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
        root = logging.getLogger()  # run_job left the last job's log file attached: each stack attaches its own
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(handler)
            handler.close()
        jobs = [r.return_value for r in returns if r.status == JobStatus.COMPLETED
                and isinstance(r.return_value, Job)]
        groups = stacks(jobs, self.max_stack)
        try:
            results = self.on_slurm(groups) if self.executor == "slurm" else self.locally(groups)
        except KeyboardInterrupt:
            print(f"interrupted; resume with hydra.sweep.dir={self.config.hydra.sweep.dir} (finished runs are "
                  "kept, the others continue from their checkpoints)", file=sys.stderr)
            raise SystemExit(130) from None
        except Terminated as exc:
            print(f"stopped by {exc}; re-run with hydra.sweep.dir={self.config.hydra.sweep.dir} to continue",
                  file=sys.stderr)
            raise SystemExit(128 + exc.signum) from None
        metrics = {id(job): m for group, result in zip(groups, results) for job, m in zip(group, result)}
        for r in returns:
            if r.status == JobStatus.COMPLETED:
                value = r.return_value
                r.return_value = objective(metrics[id(value)] if isinstance(value, Job) else value)
        return returns

    def locally(self, groups: list[list]) -> list[list[dict]]:
        """The stacks in this machine's processes: n_jobs at once (joblib), each process on one GPU."""
        from imbalance_lab.worker import gpus_for_workers

        assign = self.gpus is not None or self.n_jobs > 1  # one process alone keeps the default device
        slots = Path(str(self.config.hydra.sweep.dir)) / ".gpu_slots"
        with gpus_for_workers(self.gpus, slots) if assign else nullcontext():
            if self.n_jobs > 1 and len(groups) > 1:
                from joblib import Parallel, delayed

                threads = max(1, (os.cpu_count() or 1) // self.n_jobs)
                return Parallel(n_jobs=self.n_jobs, backend="loky")(delayed(train_stack)(g, threads)
                                                                     for g in groups)
            return [train_stack(g) for g in groups]

    def on_slurm(self, groups: list[list]) -> list[list[dict]]:
        """One SLURM job per stack (a job array); waits for them. A job that ends without its runs' results
        (cancelled, killed) records them failed with the job's state, and the sweep goes on."""
        from .slurm import collect, make_executor, record_lost_run

        executor = make_executor(self.slurm, "slurm", Path(str(self.config.hydra.sweep.dir)))
        submitted = executor.map_array(StackJob(), groups)
        log.info("submitted %d stacks as SLURM jobs %s", len(groups), ", ".join(j.job_id for j in submitted))
        by_job = {id(j): g for j, g in zip(submitted, groups)}

        def lost(job, why: str) -> list[dict]:
            return [record_lost_run(Path(j.out_dir), why, j.resolved_config) for j in by_job[id(job)]]

        return collect(submitted, lost)
