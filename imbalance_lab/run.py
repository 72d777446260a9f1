"""One experiment, start to finish: split -> model + loss -> fit -> metrics -> run folder."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .baselines import run_majority_only
from .data import build_split
from .losses import build_loss
from .metrics import compute_metrics, format_report, plot_confusion
from .models import build_model
from .plots import plot_embedding
from .runfolder import METRICS_FILE, library_versions, save_npz_atomic, write_json_atomic
from .schema import Config
from .train import TrainingFailed, evaluate, fit, resolve_device

log = logging.getLogger(__name__)

HEADLINE = ("macro_f1", "micro_f1", "accuracy", "balanced_accuracy", "minority_f1", "few_shot_acc")


def seed_everything(seed: int, device: torch.device) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    return torch.Generator(device=device).manual_seed(seed)


def headline(metrics: dict) -> dict:
    return {k: metrics[k] for k in HEADLINE if metrics.get(k) is not None}


def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(device)}
    return {"type": "cpu", "name": "cpu", "threads": torch.get_num_threads()}


def method_label(cfg: Config) -> str:
    return cfg.method if cfg.method != "supervised" else cfg.loss.name


@dataclass
class Outcome:
    """What training leaves for the run folder."""

    history: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # loss or method state for metrics.json
    last: dict = field(default_factory=dict)  # split -> (predictions, metrics) of the latest evaluation
    best_val: dict = field(default_factory=dict)  # the test headline at the best validation macro F1
    centres: np.ndarray | None = None  # affinity centres, for the embedding plot
    centres_per_class: int = 1


def train_supervised(cfg: Config, split, device: torch.device, generator: torch.Generator, outcome: Outcome):
    """Model + loss from the config, trained with evaluations on the test (and validation) split; fills
    ``outcome`` as it goes, so a run that fails keeps what it had."""
    loss_fn = build_loss(cfg.loss, split.class_counts["train"])
    model = build_model(cfg.model.name, split.in_channels, split.num_classes, split.mean, split.std,
                        cfg.model.embedding_dim, make_head=loss_fn.make_head).to(device)
    loss_fn.to(device)
    amp = cfg.trainer.amp and device.type == "cuda"
    channels_last = cfg.trainer.channels_last and device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def on_device(x, y):
        return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    train_x, train_y = on_device(split.train_x, split.train_y)
    eval_sets = {"test": on_device(split.test_x, split.test_y)}
    if len(split.val_y):
        eval_sets["val"] = on_device(split.val_x, split.val_y)
    last, best_val = outcome.last, outcome.best_val
    plot_features = cfg.model.embedding_dim == 2

    def on_eval(epoch: int) -> dict:
        record = {}
        for name, (x, y) in eval_sets.items():
            pred = evaluate(model, loss_fn, x, y, amp=amp, channels_last=channels_last,
                            with_features=plot_features and name == "test")
            metrics = compute_metrics(pred["y_true"], pred["y_pred"], pred["probs"],
                                      split.class_counts["train"], split.class_names)
            last[name] = (pred, metrics)
            record.update({f"{name}_{k}": v for k, v in headline(metrics).items()})
        if "val" in last and last["val"][1]["macro_f1"] > best_val.get("val_macro_f1", -1.0):
            best_val.update(epoch=epoch + 1, val_macro_f1=last["val"][1]["macro_f1"],
                            test=headline(last["test"][1]))
        return record

    outcome.history = fit(model, loss_fn, train_x, train_y, trainer_cfg=cfg.trainer, optim_cfg=cfg.optim,
                          augment=cfg.data.augment, generator=generator, sampler=cfg.sampler, on_eval=on_eval)
    outcome.extra = loss_fn.extra_metrics()
    centres = getattr(model.head, "centres", None)
    if centres is not None:
        outcome.centres = centres.detach().float().cpu().numpy()
        outcome.centres_per_class = model.head.m


def run_experiment(cfg: Config, out_dir: Path, resolved_config: dict) -> dict:
    """Train and evaluate; writes ``metrics.json`` (status done or failed), predictions and plots."""
    started = time.time()
    device = resolve_device(cfg.trainer.device)
    generator = seed_everything(cfg.seed, device)
    split = build_split(cfg.data)
    log.info("data: %s | train %s | test %s | fingerprint %s", split.description,
             split.class_counts["train"], split.class_counts["test"], split.fingerprint)
    if split.note:
        log.warning("dataset note: %s", split.note)

    save_npz_atomic(out_dir / "subset_indices.npz", **split.indices)
    outcome = Outcome()
    status, reason = "done", None
    t_train = time.perf_counter()
    try:
        if cfg.method == "majority_only":
            pred, outcome.extra, outcome.history = run_majority_only(cfg, split, device, generator)
            outcome.last["test"] = (pred, compute_metrics(pred["y_true"], pred["y_pred"], pred["probs"],
                                                          split.class_counts["train"], split.class_names))
        else:
            train_supervised(cfg, split, device, generator, outcome)
    except TrainingFailed as exc:
        status, reason = "failed", str(exc)
        log.error("run failed: %s", reason)
    train_seconds = time.perf_counter() - t_train
    last, history = outcome.last, outcome.history

    payload = {
        "status": status,
        "reason": reason,
        "headline": "last-epoch test metrics",
        "dataset": split.description,
        "test": last["test"][1] if status == "done" else None,
        "val": last["val"][1] if status == "done" and "val" in last else None,
        "best_on_validation": outcome.best_val or None,
        "history": history,
        "data": split.summary(),
        "config": resolved_config,
        "device": device_info(device),
        "seed": cfg.seed,
        "epochs": cfg.trainer.epochs,
        "train_seconds": train_seconds,
        "wall_seconds": time.time() - started,
        "train_images_per_s": float(np.mean([h["images_per_s"] for h in history])) if history else None,
        "versions": library_versions(),
    }
    payload.update(outcome.extra)
    if status == "done":
        pred, metrics = last["test"]
        arrays = {}
        for key in ("features", "scores"):
            if key in pred:
                arrays[key] = pred[key]
        if "features" in pred and pred["features"].shape[1] == 2:
            plot_embedding(pred["features"], pred["y_true"], split.class_names, out_dir / "embedding.png",
                           title=f"{split.description}: test embeddings, {cfg.loss.name}",
                           centres=outcome.centres, centres_per_class=outcome.centres_per_class)
        save_npz_atomic(out_dir / "predictions.npz", y_true=pred["y_true"], y_pred=pred["y_pred"],
                        probs=pred["probs"], test_indices=split.indices["test"], **arrays)
        plot_confusion(np.array(metrics["confusion_matrix"]), split.class_names, out_dir / "confusion.png",
                       title=f"{cfg.data.name} r={cfg.data.imbalance:g} {method_label(cfg)} (test, last epoch)")
        log.info("\n%s", format_report(metrics))
    write_json_atomic(out_dir / METRICS_FILE, payload)
    log.info("%s in %.1f s (%.0f train images/s on %s) -> %s", status, payload["wall_seconds"],
             payload["train_images_per_s"] or 0, device.type, out_dir)
    return payload
