"""One experiment, start to finish: config -> split -> model + loss -> fit -> evaluate -> run folder."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import numpy as np
import torch

from .baselines import majority_only_outcome
from .data import ImbalancedSplit, build_split
from .evaluation import Evaluator, Outcome
from .losses import build_loss
from .models import build_model
from .record import RunRecord
from .schema import Config
from .train import Precision, TrainingFailed, fit, resolve_device

log = logging.getLogger(__name__)


def seed_everything(seed: int, device: torch.device) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    return torch.Generator(device=device).manual_seed(seed)


def method_name(cfg: Config, loss_option: str | None = None) -> str:
    """What a run is called in plots and reports: the loss option chosen (``affinity_m5``, ``ldam_drw``;
    ``loss.name`` when unknown) or the non-supervised method (``majority_only``)."""
    if cfg.method != "supervised":
        return cfg.method
    return loss_option or cfg.loss.name


def train_supervised(cfg: Config, split: ImbalancedSplit, device: torch.device,
                     generator: torch.Generator) -> Outcome:
    """Model + loss from the config, trained on the split's training images, evaluated as it goes."""
    loss_fn = build_loss(cfg.loss, split.class_counts["train"]).to(device)
    model = build_model(cfg.model.name, split.in_channels, split.num_classes, split.mean, split.std,
                        cfg.model.embedding_dim, make_head=loss_fn.make_head).to(device)
    precision = Precision.of(cfg.trainer, device)
    model = precision.prepare(model)
    evaluator = Evaluator(split, model, loss_fn, device, precision, with_features=cfg.model.embedding_dim == 2)
    x, y = torch.from_numpy(split.train_x).to(device), torch.from_numpy(split.train_y).to(device)
    history = fit(model, loss_fn, x, y, trainer_cfg=cfg.trainer, optim_cfg=cfg.optim, augment=cfg.data.augment,
                  generator=generator, sampler=cfg.sampler, on_eval=evaluator)
    return evaluator.outcome(history, loss_fn.extra_metrics())


METHODS = {"supervised": train_supervised, "majority_only": majority_only_outcome}


def run_experiment(cfg: Config, out_dir: Path, resolved_config: dict, loss_option: str | None = None) -> dict:
    """Train and evaluate one run; writes its folder and returns ``metrics.json``'s content (status done,
    or failed with the reason)."""
    device = resolve_device(cfg.trainer.device)
    generator = seed_everything(cfg.seed, device)
    split = build_split(cfg.data)
    log.info("data: %s | train %s | test %s | fingerprint %s", split.description,
             split.class_counts["train"], split.class_counts["test"], split.fingerprint)
    if split.note:
        log.warning("dataset note: %s", split.note)
    record = RunRecord(out_dir, cfg, method_name(cfg, loss_option), split, device, resolved_config)
    started = time.perf_counter()
    try:
        outcome, status, reason = METHODS[cfg.method](cfg, split, device, generator), "done", None
    except TrainingFailed as exc:
        outcome, status, reason = Outcome(history=exc.history), "failed", str(exc)
        log.error("run failed: %s", reason)
    return record.finish(outcome, status, reason, train_seconds=time.perf_counter() - started)
