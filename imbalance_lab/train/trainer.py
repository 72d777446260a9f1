"""The training loop. The split is already on the device as uint8; each step draws a batch by index,
augments it there, and runs forward/backward under the precision policy (``train.precision``: bf16
convolutions and channels_last by default on CUDA, the same arithmetic on CPU when asked for). Nothing in the
step loop waits for the host; the host syncs are once per epoch (the epoch's end, for its time and the epoch
loss, which is also the NaN check) and evaluation."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import preemption
from ..runfolder import describe_error
from ..schema import check
from .augment import random_crop_flip
from .objective import Objective
from .precision import Precision
from .samplers import epoch_indices, epoch_size
from .stack import make_engine
from .sync import no_host_sync, synchronize

log = logging.getLogger(__name__)


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
        with precision.compute():
            f = model.features(precision.inputs(x[i:i + batch_size]))
            logits = precision.logits(model.head(f))
        scores.append(loss_fn.scores(logits))
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
    # trainer.bn_recalibration_batches=0 leaves one empty batch (an empty index split): keep the running averages
    # (a forward on nothing would reset them to mean 0, variance 1)
    if not norms or not any(len(idx) for idx in batches):
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for idx in batches:
        with precision.compute():
            model(precision.inputs(x[idx]))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


@dataclass
class Member:
    """One run of a stack: its model, loss, random generator, evaluation callback and objective (what a step
    computes around the loss: ``train.objective``; supervised by default); ``fit_stack`` fills ``history`` and,
    if its loss stops being finite, ``failed`` (the reason)."""

    model: torch.nn.Module
    loss_fn: torch.nn.Module
    generator: torch.Generator
    on_eval: Callable[[int], dict] | None = None
    history: list[dict] = field(default_factory=list)
    failed: str | None = None
    calibration: list[torch.Tensor] = field(default_factory=list)  # training batches for precise BN
    objective: Objective = field(default_factory=Objective)
    on_record: Callable[[dict], None] | None = None  # each epoch's record, once it is in history (live loggers)


def fit(model, loss_fn, x: torch.Tensor, y: torch.Tensor, *, trainer_cfg, optim_cfg, augment: bool,
        generator: torch.Generator, sampler: str = "uniform",
        on_eval: Callable[[int], dict] | None = None,
        batch_transform: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        ) -> list[dict]:
    """Train one model in place (a stack of one); returns its per-epoch history, or raises
    :class:`TrainingFailed`."""
    member = Member(model, loss_fn, generator, on_eval)
    fit_stack([member], x, y, trainer_cfg=trainer_cfg, optim_cfg=optim_cfg, augment=augment, sampler=sampler,
              batch_transform=batch_transform)
    if member.failed:
        raise TrainingFailed(member.failed, member.history)
    return member.history


def debug_limits(trainer_cfg, steps: int, epochs: int, sampler: str, y: torch.Tensor, class_counts: torch.Tensor
                 ) -> tuple[int, int, torch.Tensor | None]:
    """The steps per epoch and epochs the debug modes leave (``trainer.fast_dev_run``: one of each;
    ``overfit_batches``: k; ``limit_train_batches``: that fraction, at least one), and for ``overfit_batches``
    the fixed batch order every member trains on every epoch (drawn once, from a generator of its own, so the
    batches are the same whatever the seed or a resume)."""
    if trainer_cfg.fast_dev_run:
        return 1, 1, None
    if trainer_cfg.overfit_batches:
        steps = min(steps, trainer_cfg.overfit_batches)
        generator = torch.Generator(device=y.device).manual_seed(0)
        return steps, epochs, epoch_indices(sampler, y, class_counts, generator)[:steps * trainer_cfg.batch_size]
    return max(1, int(steps * trainer_cfg.limit_train_batches)), epochs, None


def fit_stack(members: list[Member], x: torch.Tensor, y: torch.Tensor, *, trainer_cfg, optim_cfg, augment: bool,
              sampler: str = "uniform",
              batch_transform: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None
              = None, checkpoint: Callable[[int, list[dict]], None] | None = None,
              resume: list[dict] | None = None) -> str:
    """Train K models on the same device-resident split, each as if alone: its own batch order, augmentation
    draws (from its generator), optimiser state and BatchNorm statistics. Each member's ``on_eval(epoch)``
    runs every ``eval_every`` epochs and after the last one, its dict merged into that epoch's record;
    BatchNorm statistics are recalibrated before it. ``batch_transform(x, y)`` turns each augmented uint8
    batch into the one trained on (e.g. a self-supervised pretext task). A member whose loss becomes NaN/inf
    stops (``failed``); the others go on. Returns the engine's name (``train.stack``).

    ``checkpoint(epoch, states)`` is called every ``trainer.checkpoint_every`` epochs (not after the last) with
    each member's training state (:func:`member_state`), and at the next step boundary when the run is told
    to stop (SIGTERM, SIGUSR2: ``imbalance_lab.preemption``), after which the signal is carried on; ``resume`` — such
    states, all of the same position (epoch and step) — continues from there as if never stopped."""
    device = x.device
    precision = Precision.of(trainer_cfg, device)
    class_counts = torch.bincount(y, minlength=members[0].loss_fn.num_classes)
    n = epoch_size(sampler, class_counts.tolist())
    batch_size = trainer_cfg.batch_size
    check(batch_size <= n, "trainer.batch_size", batch_size,
          f"at most {n}, the images in one epoch of this training split (sampler={sampler})")
    steps = n // batch_size  # the incomplete last batch is dropped; the draw changes every epoch
    epochs = trainer_cfg.epochs
    steps, epochs, fixed_order = debug_limits(trainer_cfg, steps, epochs, sampler, y, class_counts)
    for m, state in zip(members, resume or []):  # weights first: a vmapped engine stacks them when built
        m.model.load_state_dict(state["model"])
        m.loss_fn.load_state_dict(state["loss"])
    engine = make_engine(members, trainer_cfg, optim_cfg, steps, epochs, precision)
    for k, m in enumerate(members):
        m.objective.bind_weights(engine.live_weights(k))
    if resume:
        engine.load_optim_states([state["optim"] for state in resume])
        for m, state in zip(members, resume):
            restore_generator(m.generator, state)
            m.calibration = [idx.to(device) for idx in state["calibration"]]
            m.history, m.failed = list(state["history"]), state["failed"]
            m.objective.load_state_dict(state["objective"])
    else:
        for m in members:
            calibration = torch.randperm(len(y), device=device, generator=m.generator)
            m.calibration = list(calibration[:trainer_cfg.bn_recalibration_batches * batch_size].split(batch_size))
    start = resume[0]["epoch"] if resume else 0
    start_step = resume[0].get("step", 0) if resume else 0  # > 0: stopped inside epoch ``start``
    signals = preemption.current()

    def stop(epoch: int, step: int = 0, orders=None, loss_sums=None, written: bool = False) -> None:
        """Told to stop at this position: write its checkpoint (unless ``written``), carry the signal on."""
        if checkpoint is not None and not written:
            engine.to_members()
            checkpoint(epoch, [member_state(m, engine, k, epoch, step, *((orders[k], loss_sums[k]) if step else ()))
                               for k, m in enumerate(members)])
        where = f"in epoch {epoch + 1} after step {step} of {steps}" if step else f"after epoch {epoch}"
        signals.finish(where + ("; its checkpoint continues it" if checkpoint is not None else ""))

    bar = tqdm(total=epochs * steps, initial=start * steps + start_step, unit="step",
               disable=not trainer_cfg.progress, dynamic_ncols=True)
    for epoch in range(start, epochs):
        active = [m.failed is None for m in members]
        if not any(active):
            break
        bar.set_description(f"epoch {epoch + 1}/{epochs}")
        for m in members:
            m.loss_fn.start_epoch(epoch)
            m.model.train()
        synchronize(device)  # the epoch's time is what the device did from here to its end
        t0 = time.perf_counter()
        first = start_step if epoch == start else 0
        if first:  # continuing inside the epoch: its orders and sums so far (the objective's came with its state)
            orders = [state["order"].to(device) for state in resume]
            loss_sums = [state["loss_sum"].to(device) for state in resume]
        else:
            orders = [fixed_order if fixed_order is not None else epoch_indices(sampler, y, class_counts, m.generator)
                      for m in members]
            for m in members:
                m.objective.start_epoch(m.generator, steps)
            loss_sums = [torch.zeros((), device=device) for _ in members]
        stopped = 0

        def fail(k: int, exc: Exception, where: str, active: list[bool] = active) -> None:
            """Member k raised: it alone stops, failed with the reason; the stack goes on without it."""
            members[k].failed = f"{describe_error(exc)} ({where})"
            active[k] = False
            log.error("member %d of the stack failed: %s", k, members[k].failed, exc_info=exc)

        with no_host_sync(device, trainer_cfg.sync_check):
            for i in range(first, steps):
                batches = []
                for k, (m, order) in enumerate(zip(members, orders)):
                    idx = order[i * batch_size:(i + 1) * batch_size]
                    xb, yb = x[idx], y[idx]
                    if augment:
                        xb = random_crop_flip(xb, generator=m.generator)
                    if batch_transform is not None:
                        xb, yb = batch_transform(xb, yb)
                    try:
                        batches.append((m.objective.inputs(xb, i, m.generator), yb) if active[k] else None)
                    except Exception as exc:  # noqa: BLE001 - this member's failure, recorded
                        fail(k, exc, f"epoch {epoch + 1}, step {i + 1}, its inputs")
                        batches.append(None)
                if not any(active):
                    break
                stand_in = next(b for b in batches if b is not None)  # a vmapped stack needs every slot filled
                batches = [b if b is not None else stand_in for b in batches]
                for k, (m, total, loss) in enumerate(zip(members, loss_sums, engine.step(batches, active))):
                    if isinstance(loss, Exception):
                        fail(k, loss, f"epoch {epoch + 1}, step {i + 1}")
                    elif loss is not None:
                        total += loss
                        try:
                            m.objective.after_step()
                        except Exception as exc:  # noqa: BLE001 - this member's failure, recorded
                            fail(k, exc, f"epoch {epoch + 1}, step {i + 1}, after it")
                bar.update()
                if signals is not None and signals.signum is not None and i + 1 < steps:
                    stopped = i + 1
                    break
        if stopped:  # told to stop: a checkpoint of this step boundary, then the signal goes on
            stop(epoch, stopped, orders, loss_sums)
        synchronize(device)
        seconds = time.perf_counter() - t0
        lr = engine.lr()
        engine.to_members()
        evaluate_now = (epoch + 1) % trainer_cfg.eval_every == 0 or epoch + 1 == epochs
        for m, on, loss_sum in zip(members, active, loss_sums):
            if not on:
                continue
            epoch_loss = loss_sum.item() / steps
            if not math.isfinite(epoch_loss):
                m.failed = f"training loss became {epoch_loss} in epoch {epoch + 1}"
                continue
            # images run through the model per second (FixMatch's steps carry (1 + 2μ) · batch_size)
            record = {"epoch": epoch + 1, "loss": epoch_loss, "lr": lr, "seconds": seconds,
                      "images_per_s": (steps - first) * len(batches[0][0]) / seconds, **m.objective.end_epoch()}
            if evaluate_now:
                try:
                    recalibrate_batchnorm(m.objective.eval_model(m.model), x, m.calibration, precision)
                    if m.on_eval is not None:
                        record.update(m.on_eval(epoch))
                except Exception as exc:
                    m.failed = f"{describe_error(exc)} (evaluation after epoch {epoch + 1})"
                    log.error("a member of the stack failed: %s", m.failed, exc_info=exc)
                    continue
            m.history.append(record)
            if m.on_record is not None:
                m.on_record(record)
        engine.from_members()
        every = trainer_cfg.checkpoint_every
        scheduled = checkpoint is not None and every and (epoch + 1) % every == 0 and epoch + 1 < epochs
        if scheduled:
            checkpoint(epoch + 1, [member_state(m, engine, k, epoch + 1) for k, m in enumerate(members)])
        if signals is not None and signals.signum is not None and epoch + 1 < epochs:
            stop(epoch + 1, written=bool(scheduled))
        last = members[0].history[-1] if members[0].history else {}
        f1s = {k: v for k, v in last.items() if k.endswith("macro_f1")}
        rate = len(members) * last.get("images_per_s", 0.0)  # the stack's, as the members' records count them
        bar.set_postfix(loss=f"{last.get('loss', float('nan')):.4f}", img_s=f"{rate:.0f}",
                        **{k: f"{v:.4f}" for k, v in f1s.items()})
        if not trainer_cfg.progress:  # no bar (e.g. a batch job's log): one line per epoch instead
            log.info("epoch %d/%d: loss %.4f, %.0f images/s%s", epoch + 1, epochs, last.get("loss", math.nan),
                     rate, "".join(f", {k} {v:.4f}" for k, v in f1s.items()))
    bar.close()
    return engine.name


def member_state(m: Member, engine, k: int, epoch: int, step: int = 0, order: torch.Tensor | None = None,
                 loss_sum: torch.Tensor | None = None) -> dict:
    """Everything a member needs to continue from ``step`` steps into epoch ``epoch`` (0-based; step 0: after
    ``epoch`` whole epochs): weights and BatchNorm statistics, loss state (e.g. the debiased loss's q̂),
    optimiser and schedule, its random generator, the BatchNorm calibration batches, its history, its
    objective's state (FixMatch: the EMA weights, and inside an epoch its unlabelled order and counts); inside
    an epoch also the epoch's batch ``order`` and ``loss_sum`` so far. Every tensor is on the CPU, so the state
    loads on any machine; ``device`` is the device type it was trained on."""
    state = {"epoch": epoch, "step": step, "model": m.model.state_dict(), "loss": m.loss_fn.state_dict(),
             "optim": engine.optim_state(k), "generator": m.generator.get_state(), "calibration": m.calibration,
             "history": m.history, "failed": m.failed, "objective": m.objective.state_dict(),
             "device": m.generator.device.type}
    if step:
        state |= {"order": order, "loss_sum": loss_sum}
    return to_cpu(state)


def to_cpu(obj):
    """``obj`` with every tensor in it (in dicts, lists and tuples) on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def restore_generator(generator: torch.Generator, state: dict) -> None:
    """Continue ``generator`` from a member state. A state saved on another device type cannot continue
    here (CUDA's Philox and the CPU's Mersenne twister have different states): the generator is then
    reseeded from its seed and the epoch, so the run goes on deterministically but its draws from this
    epoch on differ from an uninterrupted run's (logged)."""
    saved = state.get("device", generator.device.type)  # states without it were written before devices mixed
    if saved == generator.device.type:
        generator.set_state(state["generator"])
        return
    generator.manual_seed((generator.initial_seed() * 1_000_003 + state["epoch"]) % 2**63)
    log.warning("the checkpoint of epoch %d was written on %s and continues on %s: its random generator is "
                "reseeded, so the batches and augmentations from here on differ from an uninterrupted run's",
                state["epoch"], saved, generator.device.type)
