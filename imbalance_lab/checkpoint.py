"""Checkpoints of a run in training, and its final weights.

Every ``trainer.checkpoint_every`` epochs a run writes ``checkpoint.pt`` in its folder — atomically, after
renaming the one before to ``checkpoint.prev.pt`` — holding what ``train.fit_stack`` needs to continue (see
``train.trainer.member_state``), the run's best-on-validation record and a hash of its config. A run started
again in the same folder (after ``kill -9``, a crash, Ctrl-C, a preempted job) continues from the newest
checkpoint that loads and belongs to the same config; an unreadable (truncated) one falls back to the one
before, or to the start. A stack resumes from the newest position every member has. Besides every
``checkpoint_every`` epochs, a run writes one where it stands when told to stop (SIGTERM, SIGUSR2: a time limit,
a preemption), at the next step boundary (``imbalance_lab.preemption``). A finished run keeps its
final weights as ``model.pt`` (a state dict: ``torch.load(path, weights_only=True)``), writes its
``metrics.json``, and only then drops its checkpoints.

Files are device-free: every tensor is saved from the CPU and loaded onto the CPU (``map_location="cpu"``),
so a file written on a GPU loads on a machine without one and random-generator states come back as the CPU
byte tensors ``Generator.set_state`` takes; loading a state into a model or optimiser moves it to the
device of their parameters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from pathlib import Path

import torch

from .atomic import atomic_write
from .train.trainer import to_cpu

log = logging.getLogger(__name__)

CHECKPOINT, PREVIOUS, FINAL_WEIGHTS = "checkpoint.pt", "checkpoint.prev.pt", "model.pt"


# Settings that do not change what a run computes, left out of a checkpoint's identity: a run stopped under one
# value continues under another (a progress bar switched on, the data mirror moved). trainer.threads changes
# numbers on a CPU in their last bits, but so does trainer.threads=null (the default: one thread per core) on
# another machine, and a requeued job may land on one; it is left out too, and a resume with another count is
# logged (and recorded: metrics.json's device.threads is the count it finished with).
NOT_IDENTITY = ("data.root", "data.download_dir", "trainer.progress", "trainer.checkpoint_every",
                "trainer.sync_check", "trainer.threads")


def config_hash(resolved_config: dict) -> str:
    """A run's identity for its checkpoints: the resolved config without ``NOT_IDENTITY``."""
    config = json.loads(json.dumps(resolved_config, default=str))
    for key in NOT_IDENTITY:
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def save(out_dir: Path, state: dict) -> None:
    path = Path(out_dir) / CHECKPOINT
    if path.exists():
        os.replace(path, Path(out_dir) / PREVIOUS)
    state = to_cpu(state)
    atomic_write(path, lambda f: torch.save(state, f))


def _load(path: Path, config: str) -> dict | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:  # truncated, damaged
        log.warning("checkpoint %s cannot be read (%s: %s): ignored", path, type(exc).__name__, exc)
        return None
    if not isinstance(state, dict) or state.get("config_hash") != config:
        log.warning("checkpoint %s belongs to another config: ignored", path)
        return None
    return state


def latest(out_dirs: list[Path], configs: list[str]) -> list[dict] | None:
    """The newest checkpoints of the same epoch for every run (tensors on the CPU), or None (start from
    scratch)."""
    found = [[s for s in (_load(Path(d) / name, c) for name in (CHECKPOINT, PREVIOUS)) if s]
             for d, c in zip(out_dirs, configs)]
    positions = sorted({position(s) for s in found[0]}, reverse=True) if found else []
    for at in positions:
        states = [next((s for s in run if position(s) == at), None) for run in found]
        if all(states):
            return states
    return None


def position(state: dict) -> tuple[int, int]:
    """(epoch, step) a checkpoint continues from: step > 0 inside epoch ``epoch`` (0-based), written when the
    run was told to stop; step 0 after ``epoch`` whole epochs."""
    return state["epoch"], state.get("step", 0)


def save_final(out_dir: Path, model: torch.nn.Module) -> None:
    """Keep a finished run's final weights (``model.pt``, CPU tensors), atomically."""
    weights = to_cpu(model.state_dict())
    atomic_write(Path(out_dir) / FINAL_WEIGHTS, lambda f: torch.save(weights, f))


def drop(out_dir: Path) -> None:
    """Delete a run's checkpoints — only once its ``metrics.json`` is written: a run killed between the two is
    done, one killed before still has its checkpoints."""
    for name in (CHECKPOINT, PREVIOUS):
        (Path(out_dir) / name).unlink(missing_ok=True)
