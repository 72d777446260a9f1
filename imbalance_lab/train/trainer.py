"""The training loop. The split is already on the device as uint8; each step draws a batch by index,
augments it there, and runs forward/backward (bf16 autocast and channels_last on CUDA). The only host
syncs are one per epoch (the epoch loss, which is also the NaN check) and evaluation."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .augment import random_crop_flip
from .optim import build_optimizer, build_scheduler
from .precision import Precision
from .samplers import epoch_indices, epoch_size


class TrainingFailed(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message is the reason recorded, ``history``
    the epochs finished before it."""

    def __init__(self, reason: str, history: list[dict] | None = None):
        super().__init__(reason)
        self.history = history or []


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@torch.no_grad()
def evaluate(model, loss_fn, x: torch.Tensor, y: torch.Tensor, precision: Precision, *,
             batch_size: int = 1000, with_features: bool = False) -> dict[str, np.ndarray]:
    """Predictions on a device-resident split: true labels, predicted labels, softmax of the class scores
    (and the features entering the head, if asked)."""
    model.eval()
    scores, features = [], []
    for i in range(0, len(y), batch_size):
        with precision.autocast():
            f = model.features(precision.inputs(x[i:i + batch_size]))
            logits = model.head(f)
        scores.append(loss_fn.scores(logits.float()))
        if with_features:
            features.append(f.float())
    probs = torch.cat(scores).softmax(dim=1)
    out = {"y_true": y.cpu().numpy(), "y_pred": probs.argmax(1).cpu().numpy(), "probs": probs.cpu().numpy()}
    if with_features:
        out["features"] = torch.cat(features).cpu().numpy()
    return out


@torch.no_grad()
def recalibrate_batchnorm(model, x: torch.Tensor, batches: list[torch.Tensor], precision: Precision):
    """Recompute BatchNorm running statistics as plain averages over fixed training batches ("precise BN",
    Wu & Johnson 2021). The exponential running averages lag badly while Adam moves the weights quickly
    (seen here: 83% eval-mode vs 95% batch-statistics accuracy on MNIST after 100 steps); evaluation then
    uses statistics of the final weights. Training images only, unaugmented like the evaluation inputs."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or not batches:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for idx in batches:
        with precision.autocast():
            model(precision.inputs(x[idx]))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def fit(model, loss_fn, x: torch.Tensor, y: torch.Tensor, *, trainer_cfg, optim_cfg, augment: bool,
        generator: torch.Generator, sampler: str = "uniform",
        on_eval: Callable[[int], dict] | None = None,
        batch_transform: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        ) -> list[dict]:
    """Train in place; returns the per-epoch history. ``on_eval(epoch)`` runs every ``eval_every`` epochs
    and after the last one, and its dict is merged into that epoch's record; BatchNorm statistics are
    recalibrated before it (and after the last epoch in any case). ``batch_transform(x, y)`` turns each
    augmented uint8 batch into the one trained on (e.g. a self-supervised pretext task)."""
    device = x.device
    precision = Precision.of(trainer_cfg, device)
    class_counts = torch.bincount(y, minlength=loss_fn.num_classes)
    n = epoch_size(sampler, class_counts.tolist())
    batch_size = min(trainer_cfg.batch_size, n)
    steps = n // batch_size  # the incomplete last batch is dropped; the draw changes every epoch
    epochs = trainer_cfg.epochs

    optimizer = build_optimizer(param_groups(model, loss_fn, optim_cfg.weight_decay), optim_cfg)
    scheduler = build_scheduler(optimizer, steps, epochs, optim_cfg)
    step_fn = torch.compile(model) if trainer_cfg.compile else model
    calibration = torch.randperm(len(y), device=device, generator=generator)
    calibration = list(calibration[:trainer_cfg.bn_recalibration_batches * batch_size].split(batch_size))

    history = []
    bar = tqdm(total=epochs * steps, unit="step", disable=not trainer_cfg.progress, dynamic_ncols=True)
    for epoch in range(epochs):
        bar.set_description(f"epoch {epoch + 1}/{epochs}")
        loss_fn.start_epoch(epoch)
        model.train()
        t0 = time.perf_counter()
        order = epoch_indices(sampler, y, class_counts, generator)
        loss_sum = torch.zeros((), device=device)
        for i in range(steps):
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb = x[idx]
            yb = y[idx]
            if augment:
                xb = random_crop_flip(xb, generator=generator)
            if batch_transform is not None:
                xb, yb = batch_transform(xb, yb)
            with precision.autocast():
                logits = step_fn(precision.inputs(xb))
            loss = loss_fn(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach()
            bar.update()
        epoch_loss = loss_sum.item() / steps
        seconds = time.perf_counter() - t0
        if not math.isfinite(epoch_loss):
            bar.close()
            raise TrainingFailed(f"training loss became {epoch_loss} in epoch {epoch + 1}", history)
        record = {"epoch": epoch + 1, "loss": epoch_loss, "lr": optimizer.param_groups[0]["lr"],
                  "seconds": seconds, "images_per_s": steps * batch_size / seconds}
        if (epoch + 1) % trainer_cfg.eval_every == 0 or epoch + 1 == epochs:
            recalibrate_batchnorm(model, x, calibration, precision)
            if on_eval is not None:
                record.update(on_eval(epoch))
        history.append(record)
        bar.set_postfix(loss=f"{epoch_loss:.4f}", img_s=f"{record['images_per_s']:.0f}",
                        **{k: f"{v:.4f}" for k, v in record.items() if k.endswith("macro_f1")})
    bar.close()
    return history


def param_groups(model, loss_fn, weight_decay: float) -> list[dict]:
    """All trainable parameters of the model and the loss; those flagged ``no_weight_decay`` get none."""
    # A loss may hold the model's head (affinity centres): count shared parameters once.
    params = list({id(p): p for p in [*model.parameters(), *loss_fn.parameters()] if p.requires_grad}.values())
    decay = [p for p in params if not getattr(p, "no_weight_decay", False)]
    no_decay = [p for p in params if getattr(p, "no_weight_decay", False)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
