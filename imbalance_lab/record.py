"""What one run leaves in its folder (the files are listed in the README): ``subset_indices.npz`` before
training, then ``predictions.npz``, the plots (a semi-supervised run: also its pseudo-label plots) and, as the
very last step, ``metrics.json`` (written atomically, so a run killed before it never looks done)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from . import worker
from .data import ImbalancedSplit
from .data.unlabelled import UnlabelledSplit
from .evaluation import Outcome
from .metrics import format_report, plot_confusion
from .plots import plot_embedding, plot_pseudo_labels
from .provenance import code_version
from .runfolder import METRICS_FILE, library_versions, save_npz_atomic, write_json_atomic
from .train.precision import Precision

log = logging.getLogger(__name__)


def device_info(device: torch.device, precision: dict) -> dict:
    """The device and the precision policy a run trained with (``train.precision``), and the GPU its worker
    process was given by a launcher (``worker.claim_gpu``: its slot and CUDA_VISIBLE_DEVICES)."""
    claimed = worker.claimed()
    assigned = {"worker_slot": claimed[0], "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")} \
        if claimed else {}
    if device.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(device), **precision, **assigned}
    return {"type": "cpu", "name": "cpu", "threads": torch.get_num_threads(), **precision, **assigned}


def slurm_info() -> dict | None:
    """The SLURM job this process runs in (None outside one): a stack's runs share one job."""
    keys = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID", "array_task_id": "SLURM_ARRAY_TASK_ID",
            "restart_count": "SLURM_RESTART_COUNT", "node": "SLURMD_NODENAME"}
    return {k: os.environ[v] for k, v in keys.items() if v in os.environ} if "SLURM_JOB_ID" in os.environ else None


DEBUG_SWITCHES = {"fast_dev_run": False, "overfit_batches": 0, "limit_train_batches": 1.0}  # name: off


def debug_modes(trainer_cfg) -> dict | None:
    """The debug switches a run had on (configs/debug/: fdr, overfit, limit), or None for a real run."""
    on = {k: getattr(trainer_cfg, k) for k, off in DEBUG_SWITCHES.items() if getattr(trainer_cfg, k) != off}
    return on or None


def with_threads(resolved_config: dict, device: torch.device) -> dict:
    """The config as recorded: on CPU ``trainer.threads`` is the count used (numbers depend on it)."""
    trainer = resolved_config.get("trainer")
    if device.type != "cpu" or not isinstance(trainer, dict) or trainer.get("threads") is not None:
        return resolved_config
    return resolved_config | {"trainer": trainer | {"threads": torch.get_num_threads()}}


class RunRecord:
    """The run folder of one run: what it is (method, imbalance ratio, dataset, config) and what it gave.
    ``unlabelled``: a semi-supervised run's unlabelled split (its indices join the labelled ones')."""

    def __init__(self, out_dir: Path, cfg, method: str, split: ImbalancedSplit, device: torch.device,
                 resolved_config: dict, unlabelled: UnlabelledSplit | None = None):
        self.out_dir, self.cfg, self.method, self.split = Path(out_dir), cfg, method, split
        self.unlabelled = unlabelled
        self.device, self.resolved_config = device, with_threads(resolved_config, device)
        self.started = time.time()
        self.code = code_version()  # the code this run started with
        self.resumed_from: int | None = None  # the epoch of the checkpoint this run continued from
        self.resumed_from_step: int | None = None  # the step inside that epoch, for one written when told to stop
        self.resumed_from_device: str | None = None  # that checkpoint's device type, where it was another
        self.out_dir.mkdir(parents=True, exist_ok=True)
        extra = {"unlabelled": unlabelled.indices} if unlabelled is not None else {}
        save_npz_atomic(self.out_dir / "subset_indices.npz", **split.indices, **extra)

    def finish(self, outcome: Outcome, status: str = "done", reason: str | None = None,
               train_seconds: float = 0.0, stack: dict | None = None) -> dict:
        """Write predictions and plots (a finished run) and ``metrics.json``; returns its content. ``stack``:
        the runs this one trained with (size, engine, run folders); ``train_seconds`` is then the stack's."""
        done = status == "done"
        history = outcome.history
        payload = {
            "status": status,
            "reason": reason,
            "method": self.method,
            "imbalance": self.cfg.data.imbalance,
            "headline": "last-epoch test metrics",
            "dataset": self.split.description,
            "test": outcome.test[1] if done else None,
            "val": outcome.val[1] if done and outcome.val else None,
            "best_on_validation": outcome.best_on_validation,
            "history": history,
            "data": self.split.summary() | ({"unlabelled": self.unlabelled.summary()} if self.unlabelled else {}),
            "config": self.resolved_config,
            "device": device_info(self.device, Precision.of(self.cfg.trainer, self.device).describe()),
            "seed": self.cfg.seed,
            "epochs": 1 if self.cfg.trainer.fast_dev_run else self.cfg.trainer.epochs,
            "train_seconds": train_seconds,
            "resumed_from_epoch": self.resumed_from,
            "resumed_from_step": self.resumed_from_step,
            "resumed_from_device": self.resumed_from_device,
            "stack": stack or {"size": 1, "engine": "loop", "runs": [str(self.out_dir)]},
            "slurm": slurm_info(),
            "wall_seconds": time.time() - self.started,
            "train_images_per_s": float(np.mean([h["images_per_s"] for h in history])) if history else None,
            "versions": library_versions(),
            "code": self.code,
            "tags": list(self.cfg.tags),
            "debug": debug_modes(self.cfg.trainer),
            **outcome.extra,
        }
        if done:
            self.write_predictions(outcome)
            log.info("\n%s", format_report(outcome.test[1]))
        write_json_atomic(self.out_dir / METRICS_FILE, payload)
        log.info("%s in %.1f s (%.0f train images/s on %s) -> %s", status, payload["wall_seconds"],
                 payload["train_images_per_s"] or 0, self.device.type, self.out_dir)
        return payload

    def write_predictions(self, outcome: Outcome) -> None:
        pred, metrics = outcome.test
        split, title = self.split, f"{self.cfg.data.name} r={self.cfg.data.imbalance:g} {self.method}"
        arrays = {key: pred[key] for key in ("features", "scores") if key in pred}
        if "features" in pred and pred["features"].shape[1] == 2:
            plot_embedding(pred["features"], pred["y_true"], split.class_names, self.out_dir / "embedding.png",
                           title=f"{split.description}: test embeddings, {self.method}",
                           centres=outcome.centres, centres_per_class=outcome.centres_per_class)
        save_npz_atomic(self.out_dir / "predictions.npz", y_true=pred["y_true"], y_pred=pred["y_pred"],
                        probs=pred["probs"], test_indices=split.indices["test"][:len(pred["y_true"])], **arrays)
        plot_confusion(np.array(metrics["confusion_matrix"]), split.class_names, self.out_dir / "confusion.png",
                       title=f"{title} (test, last epoch)")
        if outcome.extra.get("pseudo_label_confusion"):
            plot_confusion(np.array(outcome.extra["pseudo_label_confusion"]), split.class_names,
                           self.out_dir / "pseudo_label_confusion.png",
                           title=f"{title}: accepted pseudo-labels (columns) vs hidden labels, last epoch")
            plot_pseudo_labels({self.method: outcome.history}, split.class_names,
                               self.out_dir / "pseudo_labels.png", title=f"{title}: accepted pseudo-labels")
