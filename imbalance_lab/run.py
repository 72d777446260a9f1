"""Runs, start to finish: config -> split -> model + loss -> fit -> evaluate -> run folder. Several runs
that share the data split train together as one stack (``run_stack``); a single run is a stack of one.
``method=fixmatch`` runs through the same stack, with an unlabelled split and the FixMatch objective."""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import checkpoint
from .baselines import decoupled_outcome, majority_only_outcome
from .data import ImbalancedSplit, build_split
from .data.unlabelled import build_unlabelled
from .evaluation import Evaluator, Outcome, eval_sets
from .loggers import RunInfo, RunLoggers
from .losses import build_loss
from .losses.fixmatch import FixMatchLoss
from .models import build_model
from .preemption import signals_deferred
from .record import RunRecord
from .runfolder import describe_error
from .schema import Config
from .train import Member, Precision, TrainingFailed, fit_stack, resolve_device
from .train.mixup import with_mixup
from .train.objective import Objective
from .train.semi import FixMatchObjective

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One run to do: its validated config, its folder, the resolved config to record, the loss option
    chosen (``affinity_m5``; None: ``loss.name``) and whether it is part of a sweep (and which)."""

    cfg: Config
    out_dir: Path
    resolved_config: dict
    loss_option: str | None = None
    multirun: bool = False
    sweep_dir: Path | None = None  # a sweep's run: its sweep folder (loggers group the sweep's runs by it)


def seed_everything(seed: int, device: torch.device) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator(device=device).manual_seed(seed)


@contextmanager
def determinism(device: torch.device):
    """Deterministic algorithms for a CPU run (same config and seed, same numbers), restored afterwards: the
    setting is process-wide, and a CUDA run later in the same process (a sweep in one process) would
    otherwise inherit it and fail in kernels that have no deterministic CUDA version. A CUDA run keeps the
    process's setting."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def method_name(cfg: Config, loss_option: str | None = None) -> str:
    """What a run is called in plots and reports: the loss option chosen (``affinity_m5``, ``ldam_drw``;
    ``loss.name`` when unknown), the semi-supervised method (``fixmatch``; ``debiaspl`` with ``ssl.debias``),
    the non-supervised method (``majority_only``) or a decoupled stage 2's mode (``crt``, ``tau_norm``, ``lws``)."""
    if cfg.method == "fixmatch":
        return "debiaspl" if cfg.ssl.debias else "fixmatch"
    if cfg.method == "decoupled":  # its stage 2: crt, tau_norm, lws
        return cfg.decoupled.mode
    if cfg.method != "supervised":
        return cfg.method
    return loss_option or cfg.loss.name


# Methods that replace the supervised stack with their own training, one run at a time.
SOLO_METHODS = {"majority_only": majority_only_outcome, "decoupled": decoupled_outcome}
STACK_METHODS = ("supervised", "fixmatch")  # trained by fit_stack
# The ssl settings that decide a stack's shared data (the unlabelled split) and batch shape; the others are
# each run's own hyperparameters, like the loss's.
SSL_STACK_FIELDS = ("mu", "unlabelled_profile", "unlabelled_imbalance", "unlabelled_n_max")


def stack_key(cfg: Config) -> str | None:
    """Runs with the same key can train as one stack: everything but the seed and the loss's own
    hyperparameters is the same (data, model, optimiser, trainer, sampler, loss kind and the loss settings
    that shape the head, unlabelled split). None: never stacked."""
    if cfg.method in SOLO_METHODS:
        return None
    fields = dataclasses.asdict(cfg)
    for own in ("seed", "tags", "logger"):  # each run's own, and not what it computes
        fields.pop(own)
    fields["loss"] = [cfg.loss.name, *(getattr(cfg.loss, f) for f in cfg.loss.head_fields)]
    fields["ssl"] = {k: fields["ssl"][k] for k in SSL_STACK_FIELDS}
    return repr(sorted(fields.items()))


def stack_member(cfg: Config, split: ImbalancedSplit, sets: dict, device: torch.device,
                 generator: torch.Generator, unlabelled: tuple[torch.Tensor, torch.Tensor] | None = None) -> Member:
    """Model + loss from the config (initialised from the global seed), with its evaluator on ``sets``. With
    ``unlabelled`` (images and hidden labels on the device; ``method=fixmatch``) the loss is the FixMatch
    objective around the configured one, and the EMA of the weights is evaluated."""
    loss_fn = build_loss(cfg.loss, split.class_counts["train"]).to(device)
    model = build_model(cfg.model.name, split.in_channels, split.num_classes, split.mean, split.std,
                        cfg.model.embedding_dim, make_head=loss_fn.make_head, image_size=split.image_size,
                        pretrained=cfg.model.pretrained, standardize=cfg.data.standardize,
                        bn_momentum=cfg.model.bn_momentum, bn_eps=cfg.model.bn_eps).to(device)
    precision = Precision.of(cfg.trainer, device)
    model = precision.prepare(model)  # the engine does it too; here before FixMatch copies it as its EMA
    objective = Objective()
    if unlabelled is not None:
        loss_fn = FixMatchLoss(loss_fn, cfg.ssl).to(device)
        objective = FixMatchObjective(model, loss_fn, *unlabelled, cfg.ssl.mu, cfg.trainer.batch_size, cfg.ssl.ema)
    elif cfg.trainer.mixup is not None:  # mixup / remix inside the training step (train/mixup.py)
        loss_fn, objective = with_mixup(loss_fn, cfg.trainer)
    evaluator = Evaluator(split, sets, objective.eval_model(model), loss_fn, precision,
                          with_features=cfg.model.embedding_dim == 2)
    return Member(model, loss_fn, generator, on_eval=evaluator, objective=objective)


def solo_outcome(cfg: Config, split: ImbalancedSplit, device: torch.device, generator: torch.Generator):
    """(outcome, status, reason) of a method that trains on its own (``SOLO_METHODS``)."""
    try:
        return SOLO_METHODS[cfg.method](cfg, split, device, generator), "done", None
    except TrainingFailed as exc:
        return Outcome(history=exc.history), "failed", str(exc)


def train_members(jobs: list[Job], members: list[Member], records: list[RunRecord], split: ImbalancedSplit,
                  device: torch.device) -> tuple[str, list[tuple]]:
    """Train the stack (from its runs' checkpoints, if they have them; writing new ones as it goes); the
    engine's name and each run's (outcome, status, reason)."""
    hashes = [checkpoint.config_hash(job.resolved_config) for job in jobs]
    resume = checkpoint.latest([job.out_dir for job in jobs], hashes)
    if resume:
        epoch, step = checkpoint.position(resume[0])
        log.info("resuming from the checkpoints of epoch %d%s", epoch, f", step {step}" if step else "")
        for m, state, record in zip(members, resume, records):
            m.on_eval.best_val, record.resumed_from = state["best_val"], state["epoch"]
            record.resumed_from_step = state.get("step") or None
            if state.get("device", device.type) != device.type:
                record.resumed_from_device = state["device"]
        if device.type == "cpu" and resume[0].get("threads") not in (None, torch.get_num_threads()):
            log.warning("the checkpoint was written with %s CPU threads and the run continues with %s: on a CPU its "
                        "numbers then differ in their last bits from an uninterrupted run's", resume[0]["threads"],
                        torch.get_num_threads())

    def save(epoch: int, states: list[dict]) -> None:
        for job, m, state, digest in zip(jobs, members, states, hashes):
            checkpoint.save(job.out_dir, state | {"best_val": m.on_eval.best_val, "config_hash": digest,
                                                  "threads": torch.get_num_threads()})

    cfg = jobs[0].cfg
    x, y = torch.from_numpy(split.train_x).to(device), torch.from_numpy(split.train_y).to(device)
    engine = fit_stack(members, x, y, trainer_cfg=cfg.trainer, optim_cfg=cfg.optim, augment=cfg.data.augment,
                       sampler=cfg.sampler, checkpoint=save, resume=resume)
    return engine, [(Outcome(history=m.history), "failed", m.failed) if m.failed else
                    (m.on_eval.outcome(m.history, m.loss_fn.extra_metrics() | m.objective.extra_metrics()), "done",
                     None) for m in members]


def run_stack(jobs: list[Job]) -> list[dict]:
    """Train the jobs together (one split, one loop; see ``train.fit_stack``) and write each one's run folder
    as if it had run alone; returns their metrics.json contents."""
    first = jobs[0].cfg
    assert len({stack_key(j.cfg) for j in jobs}) == 1 and (len(jobs) == 1 or stack_key(first)), "not one stack"
    device = resolve_device(first.trainer.device)
    with determinism(device), signals_deferred() as signals:
        results = _run_stack(jobs, device)
        signals.finish("after the run finished", completed=True)  # a SIGTERM in its last steps: stop now
        return results


def _run_stack(jobs: list[Job], device: torch.device) -> list[dict]:
    first = jobs[0].cfg
    if first.trainer.threads:
        torch.set_num_threads(first.trainer.threads)
    split = build_split(first.data)
    log.info("data: %s | train %s | test %s | fingerprint %s", split.description,
             split.class_counts["train"], split.class_counts["test"], split.fingerprint)
    if split.note:
        log.warning("dataset note: %s", split.note)
    unlabelled = build_unlabelled(first.data, first.ssl, split) if first.method == "fixmatch" else None
    on_device = None
    if unlabelled is not None:
        log.info("unlabelled: %s | fingerprint %s", unlabelled.class_counts, unlabelled.fingerprint)
        on_device = (torch.from_numpy(unlabelled.x).to(device), torch.from_numpy(unlabelled.hidden_y).to(device))
    records, members, loggers = [], [], []
    sets = eval_sets(split, device, first.trainer.fast_dev_run) if first.method in STACK_METHODS else {}
    for job in jobs:
        generator = seed_everything(job.cfg.seed, device)
        method = method_name(job.cfg, job.loss_option)
        records.append(RunRecord(job.out_dir, job.cfg, method, split, device, job.resolved_config, unlabelled))
        loggers.append(RunLoggers(job.cfg.logger, RunInfo(job.out_dir, job.sweep_dir, records[-1].resolved_config,
                                                          job.cfg.tags, method)))
        if job.cfg.method in STACK_METHODS:
            members.append(stack_member(job.cfg, split, sets, device, generator, on_device))
            members[-1].on_record = loggers[-1].epoch
    started = time.perf_counter()
    if first.method in SOLO_METHODS:
        engine, outcomes = "alone", [solo_outcome(first, split, device, generator)]
    else:
        engine, outcomes = train_members(jobs, members, records, split, device)
    seconds = time.perf_counter() - started
    stack = {"size": len(jobs), "engine": engine, "runs": [str(j.out_dir) for j in jobs]}
    results = [finish(record, members[k] if members else None, outcome, status, reason, seconds, stack)
               for k, ((outcome, status, reason), record) in enumerate(zip(outcomes, records))]
    for run_loggers, metrics in zip(loggers, results):
        run_loggers.finish(metrics)
    return results


def finish(record: RunRecord, member: Member | None, outcome: Outcome, status: str, reason: str | None,
           seconds: float, stack: dict) -> dict:
    """Write one run's results — ``model.pt``, then ``metrics.json`` (its last write: the run is done), then
    drop its checkpoints — so a kill at any point leaves it done or resumable. A write that fails (a full
    disk) fails this run alone, with the root cause as its reason; the stack's other runs are written as
    usual. Returns the metrics."""
    try:
        if reason:
            log.error("run failed: %s (%s)", reason, record.out_dir)
        if member is not None and status == "done":
            checkpoint.save_final(record.out_dir, member.objective.eval_model(member.model))
        metrics = record.finish(outcome, status, reason, train_seconds=seconds, stack=stack)
    except Exception as exc:
        failure = f"writing its results: {describe_error(exc)}"
        log.error("run failed %s (%s)", failure, record.out_dir)  # one line: the cause (a full disk) says it
        log.debug("the traceback of that failure", exc_info=exc)
        try:
            return record.finish(Outcome(history=outcome.history), "failed", failure, train_seconds=seconds,
                                 stack=stack)
        except Exception:
            log.exception("could not record the failure of %s either", record.out_dir)
            return {"status": "failed", "reason": failure}
    checkpoint.drop(record.out_dir)
    return metrics


def run_experiment(cfg: Config, out_dir: Path, resolved_config: dict, loss_option: str | None = None) -> dict:
    """Train and evaluate one run (a stack of one); writes its folder and returns ``metrics.json``'s content
    (status done, or failed with the reason)."""
    return run_stack([Job(cfg, Path(out_dir), resolved_config, loss_option)])[0]
