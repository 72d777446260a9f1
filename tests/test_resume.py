"""Long runs survive being killed: a run started again in its folder continues from its last checkpoint and
ends exactly as an uninterrupted run (CPU); a damaged checkpoint is never loaded half."""

import os
import signal
import subprocess
import sys
import time

import torch
from conftest import CLI_ENV, REPO, TINY, run_in_process

from imbalance_lab import checkpoint

# A stateful loss (the debiased loss's q̂ and its history), deferred re-weighting switching on mid-run, a
# validation split (best-on-validation), checkpoints every 2 of 16 epochs; the same thread count everywhere.
RUN = [*TINY, "data.synthetic.train_per_class=200", "trainer.epochs=16", "trainer.checkpoint_every=2",
       "trainer.threads=2", "loss=debiased", "loss.drw_epoch=8", "data.val_fraction=0.2"]
TIMES = {"wall_seconds", "train_seconds", "train_images_per_s", "resumed_from_epoch", "stack"}


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMES} | {
        "history": [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")}
                    for h in metrics["history"]]}


def test_a_killed_run_continues_from_its_checkpoint_and_ends_as_if_never_stopped(tmp_path):
    args = RUN
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "imbalance_lab", *args, f"hydra.run.dir={killed}"], cwd=REPO,
                            env={**os.environ, **CLI_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not (killed / checkpoint.CHECKPOINT).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (killed / "metrics.json").exists(), "the run ended before it could be killed"

    resumed = run_in_process(killed, *args)  # started again in the same folder
    alone = run_in_process(tmp_path / "uninterrupted", *args)
    assert resumed["resumed_from_epoch"] >= 2 and alone["resumed_from_epoch"] is None
    assert resumed["status"] == alone["status"] == "done"
    assert comparable(resumed) == comparable(alone)
    assert len(resumed["q_hat_history"]) == 16 and resumed["best_on_validation"]["epoch"] >= 1
    # a finished run keeps its final weights and drops its checkpoints
    weights = torch.load(killed / checkpoint.FINAL_WEIGHTS, weights_only=True)
    assert set(weights) >= {"head.weight", "backbone.features.0.0.weight"}
    assert not list(killed.glob("checkpoint*.pt"))


def test_a_truncated_checkpoint_falls_back_to_the_one_before(tmp_path):
    digest = checkpoint.config_hash({"seed": 0})
    for epoch in (2, 4):
        checkpoint.save(tmp_path, {"epoch": epoch, "config_hash": digest, "weights": torch.ones(3) * epoch})
    assert checkpoint.latest([tmp_path], [digest])[0]["epoch"] == 4
    newest = tmp_path / checkpoint.CHECKPOINT
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    (state,) = checkpoint.latest([tmp_path], [digest])
    assert state["epoch"] == 2 and torch.equal(state["weights"], torch.full((3,), 2.0))
    (tmp_path / checkpoint.PREVIOUS).write_bytes(b"")  # both damaged: start from scratch
    assert checkpoint.latest([tmp_path], [digest]) is None
    # a checkpoint of another config (the folder reused with other settings) is not loaded
    checkpoint.save(tmp_path, {"epoch": 6, "config_hash": "other", "weights": torch.zeros(3)})
    assert checkpoint.latest([tmp_path], [digest]) is None


def test_a_stack_resumes_from_the_newest_epoch_every_member_has(tmp_path):
    digest = checkpoint.config_hash({})
    for name, epochs in (("a", (2, 4)), ("b", (2,))):  # b was killed before writing its epoch-4 checkpoint
        (tmp_path / name).mkdir()
        for epoch in epochs:
            checkpoint.save(tmp_path / name, {"epoch": epoch, "config_hash": digest})
    states = checkpoint.latest([tmp_path / "a", tmp_path / "b"], [digest, digest])
    assert [s["epoch"] for s in states] == [2, 2]
