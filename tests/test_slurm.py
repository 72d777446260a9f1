"""The SLURM launchers against a real scheduler: the one-node cluster of ``scripts/slurm_local.sh start``
(``.ci/run`` starts it). Marked ``slurm``: skipped, with the reason, where ``sinfo`` finds no node to run on.
Each run is the smallest synthetic one; every job asks for 1 CPU, so the 2-CPU node runs two at once."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CLI_ENV, REPO, TINY, read_json, run_in_process

pytestmark = pytest.mark.slurm

ON_SLURM = ["hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=2", "trainer.threads=1"]
TIMES = {"wall_seconds", "train_seconds", "train_images_per_s", "resumed_from_epoch", "resumed_from_step", "stack",
         "slurm"}


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMES} | {
        "history": [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")} for h in metrics["history"]]}


def sweep(sweep_dir: Path, *overrides: str, wait: bool = True):
    args = [sys.executable, "-m", "imbalance_lab", "-m", *TINY, *ON_SLURM, *overrides, f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, **CLI_ENV}
    if wait:
        return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def runs(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: read_json(p) for p in sweep_dir.glob("*/metrics.json")}


def wait_for(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"waited {timeout:.0f} s for {what}"
        time.sleep(0.1)


def job_of(sweep_dir: Path, seed: int) -> str:
    """The SLURM job id running seed ``seed`` of a sweep (submitit's job folders are named after it)."""
    for folder in (sweep_dir / ".submitit").iterdir():
        pickle = folder / f"{folder.name}_submitted.pkl"
        if pickle.exists() and f"seed={seed}".encode() in pickle.read_bytes():
            return folder.name
    raise AssertionError(f"no job for seed={seed} in {sweep_dir / '.submitit'}")


def requeued_and_released(job: str) -> bool:
    """True once the job is back in the queue; SLURM holds a requeued batch job for two minutes
    (Reason=BeginTime), which this cluster's tests do not wait out: it is released after 5 s, once its first
    instance is gone (released at once, it can start while that instance's credential is being revoked, and
    is then killed)."""
    state = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=False).stdout
    if "Reason=BeginTime" in state:
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now+5"], check=True)
        return True
    return "Restarts=1" in state and "JobState=RUNNING" in state


def test_a_stacked_sweep_on_slurm_is_one_job_per_stack(tmp_path):
    done = sweep(tmp_path, "hydra/launcher=stacked", "hydra.launcher.executor=slurm", "hydra.launcher.max_stack=3",
                 "data.imbalance=2,4", "seed=0,1,2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = runs(tmp_path)
    assert len(results) == 6 and all(m["status"] == "done" for m in results.values())
    jobs = {m["slurm"]["job_id"] for m in results.values()}
    assert len(jobs) == 2 and all(m["stack"]["size"] == 3 for m in results.values())
    assert "submitted 2 stacks as SLURM jobs" in done.stderr + done.stdout


LONG = ["data.synthetic.train_per_class=1500", "trainer.epochs=2", "trainer.checkpoint_every=0", "loss=debiased"]


def test_a_job_told_of_its_time_limit_is_requeued_and_continues_from_that_step(tmp_path):
    """SIGUSR2 — what SLURM sends a submitit job before its time limit (and on preemption) — in the second
    epoch: the run writes a checkpoint of that step, submitit requeues the job, the job starts again and
    continues from that step; no scheduled checkpoint exists (checkpoint_every=0). The result equals an
    uninterrupted run's."""
    proc = sweep(tmp_path / "sweep", "hydra/launcher=slurm", *LONG, "seed=0", wait=False)
    try:
        logs = lambda: list((tmp_path / "sweep").glob("*/imbalance_lab.log"))
        wait_for(lambda: logs() and "epoch 1/2" in logs()[0].read_text(), "the first epoch")
        job = job_of(tmp_path / "sweep", 0)
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        wait_for(lambda: requeued_and_released(job), "the requeue")
        out, _ = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-4000:]
    (resumed,) = runs(tmp_path / "sweep").values()
    assert resumed["status"] == "done" and resumed["slurm"]["restart_count"] == "1"
    assert resumed["resumed_from_epoch"] == 1 and resumed["resumed_from_step"] >= 1
    alone = run_in_process(tmp_path / "alone", *TINY, *LONG, "seed=0", "trainer.threads=1")
    assert comparable(resumed) == comparable(alone)


def test_a_2x2_sweep_survives_a_cancelled_job_and_a_rerun_redoes_only_it(tmp_path):
    """One SLURM job per run; one job is cancelled (scancel) as soon as it starts — Python's start-up outlasts
    the signal, so its run never finishes. The sweep ends with the other three done, that run failed with the
    job's id and state, exit code 1 and a summary; the same command with hydra.sweep.dir redoes only that run,
    and the sweep ends with 4 done runs."""
    grid = ["hydra/launcher=slurm", "data.imbalance=2,4", "seed=0,1"]
    proc = sweep(tmp_path, *grid, wait=False)
    try:
        wait_for(lambda: len(list((tmp_path / ".submitit").glob("*/*_submitted.pkl"))) == 4, "the 4 jobs")
        cancelled = job_of(tmp_path, 1)
        wait_for(lambda: any((tmp_path / ".submitit" / cancelled).glob("*.out")), "the job to start")
        subprocess.run(["scancel", cancelled], check=True)
        out, _ = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 1, out[-4000:]  # a run did not finish done
    results = runs(tmp_path)
    assert len(results) == 4 and len({m["slurm"]["job_id"] for m in results.values() if m.get("slurm")}) == 3
    (lost,) = [name for name, m in results.items() if m["status"] != "done"]
    assert f"SLURM job {cancelled} ended CANCELLED without finishing its run" in results[lost]["reason"]
    assert (tmp_path / "summary.md").exists() and "3 done, 1 failed" in (tmp_path / "summary.md").read_text()
    finished = {name: (tmp_path / name / "metrics.json").stat().st_mtime_ns for name in results if name != lost}

    again = sweep(tmp_path, *grid)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    results = runs(tmp_path)
    assert len(results) == 4 and all(m["status"] == "done" for m in results.values())
    assert {name: (tmp_path / name / "metrics.json").stat().st_mtime_ns for name in finished} == finished
    assert "4 done" in (tmp_path / "summary.md").read_text()
