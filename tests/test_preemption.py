"""Told to stop (SIGTERM; SIGUSR2, SLURM's time-limit and preemption signal through submitit), a run writes a
checkpoint at the next step boundary and a re-run continues from that step: at most one step is redone, and
the result equals an uninterrupted run's (CPU). The real scheduler's requeue is in test_slurm.py."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import CLI_ENV, REPO, TINY, compose_run, run_in_process
from test_ssl import SSL

from imbalance_lab import checkpoint, preemption
from imbalance_lab.run import Job, run_stack
from imbalance_lab.train import trainer

TIMES = {"wall_seconds", "train_seconds", "train_images_per_s", "resumed_from_epoch", "resumed_from_step", "stack"}
# 3 epochs of 9 steps (296 training images after the validation split, batch 32); no scheduled checkpoint, so
# whatever is resumed was written on the signal
LONG = [*TINY, "data.synthetic.train_per_class=200", "trainer.epochs=3", "trainer.checkpoint_every=0",
        "loss=debiased", "loss.drw_epoch=2", "data.val_fraction=0.1"]


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMES} | {
        "history": [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")} for h in metrics["history"]]}


def signal_at(monkeypatch, signum: int, call: int) -> None:
    """Deliver ``signum`` to this process during the ``call``-th batch augmentation (inside a step)."""
    crop, calls = trainer.random_crop_flip, []

    def crop_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            signal.raise_signal(signum)
        return crop(*args, **kwargs)

    monkeypatch.setattr(trainer, "random_crop_flip", crop_then_signal)


def test_sigterm_inside_an_epoch_checkpoints_that_step_and_the_rerun_continues_equal(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        signal_at(patch, signal.SIGTERM, call=9 + 5)  # in epoch 2, step 5
        with pytest.raises(preemption.Terminated, match="SIGTERM in epoch 2 after step 5 of 9"):
            run_in_process(tmp_path / "stopped", *LONG)
    state = torch.load(tmp_path / "stopped" / checkpoint.CHECKPOINT, weights_only=True)
    assert checkpoint.position(state) == (1, 5) and len(state["order"]) >= 5 * 32
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is given back

    resumed = run_in_process(tmp_path / "stopped", *LONG)
    alone = run_in_process(tmp_path / "alone", *LONG)
    assert (resumed["resumed_from_epoch"], resumed["resumed_from_step"]) == (1, 5)
    assert comparable(resumed) == comparable(alone)
    assert len(resumed["q_hat_history"]) == 3  # the debiased loss's per-epoch record is not doubled


def test_a_fixmatch_stack_told_to_stop_hands_the_signal_on_and_resumes_equal(tmp_path, monkeypatch):
    """SIGUSR2 with a handler installed before the run (submitit's requeue-and-exit, here a recorder): a
    vmapped FixMatch stack writes every member's checkpoint of the step (its slice of the stacked weights and
    optimiser, the unlabelled order and pseudo-label counts so far), then that handler is called."""
    stacking = "vmap"
    def jobs(folder):
        out = []
        for seed in (0, 1):
            cfg, resolved, option = compose_run(*SSL, "trainer.epochs=2", "trainer.checkpoint_every=0",
                                                f"trainer.stacking={stacking}", f"seed={seed}")
            out.append(Job(cfg, folder / str(seed), resolved, option))
        return out

    handed_on = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: handed_on.append(signum))
    try:
        with monkeypatch.context() as patch:
            signal_at(patch, signal.SIGUSR2, call=2 * 2 + 1)  # 2 members' crops a step: in step 3 of 4
            with pytest.raises(preemption.Terminated, match="SIGUSR2 in epoch 1 after step 3"):
                run_stack(jobs(tmp_path / "stopped"))
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert handed_on == [signal.SIGUSR2]
    resumed = run_stack(jobs(tmp_path / "stopped"))
    alone = run_stack(jobs(tmp_path / "alone"))
    for a, b in zip(resumed, alone):
        assert (a["resumed_from_epoch"], a["resumed_from_step"]) == (0, 3)
        assert comparable(a) == comparable(b)


def test_a_killed_cli_run_stops_at_a_step_with_one_line_and_continues(tmp_path):
    """A real SIGTERM from outside, at whatever moment, to a run with the GPU's arithmetic (bf16,
    channels_last: test_gpu_path.py): exit code 143, one line with the command that continues, and the re-run
    ends as the uninterrupted run (test_resume.py kills one with SIGKILL)."""
    run = [*LONG, "data.synthetic.train_per_class=400", "trainer.epochs=4", "trainer.threads=1", "trainer.amp=true",
           "trainer.channels_last=true"]
    folder = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "imbalance_lab", *run, f"hydra.run.dir={folder}"], cwd=REPO,
                            env={**os.environ, **CLI_ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (folder / "imbalance_lab.log").exists() or "epoch 1/4" not in (folder / "imbalance_lab.log").read_text():
        assert proc.poll() is None and time.time() < deadline, "the run ended or stalled before its second epoch"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("stopped by SIGTERM ")  # in epoch e after step s (or after epoch e)
    assert f"re-run with hydra.run.dir={folder} to continue" in err
    resumed = run_in_process(folder, *run)
    assert resumed["resumed_from_epoch"] >= 1
    assert comparable(resumed) == comparable(run_in_process(tmp_path / "alone", *run))
