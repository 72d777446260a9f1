"""Typed config schemas (``imbalance_lab.configstore`` registers them in Hydra's ConfigStore).

Types are checked by OmegaConf when the config is composed (``data.imbalance=abc`` fails there).
Value ranges are checked in ``__post_init__``, which runs when :func:`to_dataclasses` turns the composed
config into these dataclasses — before any data is loaded. Each loss's own config class lives with the loss
(``imbalance_lab/losses/<name>.py``) and derives from :class:`LossConfig`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config value outside its allowed range; the message is one line: key, value, what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def one_of(key: str, value: Any, choices) -> None:
    check(value in choices, key, value, "one of " + ", ".join(map(str, choices)))


# ----------------------------------------------------------------------------- data
SOURCES = ("mnist", "cifar10", "cifar100", "synthetic", "image_folder")
PROFILES = ("none", "exp", "step", "reduce")
SUBSET_ORDERS = ("seeded", "first")
TEST_POLICIES = ("balanced", "reduced")
# Per-source facts needed to reject a bad profile before any data is loaded.
SOURCE_NUM_CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100}
SOURCE_MAX_TRAIN_PER_CLASS = {"mnist": 6742, "cifar10": 5000, "cifar100": 500}
IMAGE_SIZES = (32, 64, 96, 128)  # data.image_size of an image folder (data/image_folder.py)
IMAGE_FOLDER_PARTS = ("train", "test", "val")


def sub_folders(folder: str) -> list[str]:
    """The names of ``folder``'s sub-folders, sorted, hidden ones (``.name``) left out."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def image_folder_parts(path: str) -> dict[str, str]:
    """An image folder's parts: with a ``train/`` sub-folder, ``{'train': <path>/train}`` and ``test`` / ``val``
    where it has them (``<part>/<class>/<image>``); else ``{'all': <path>}`` (``<class>/<image>``, split by
    ``data.test_fraction``). Class names are the class folders' names, in sorted order, as torchvision's
    ``ImageFolder`` has them."""
    if "train" not in sub_folders(path):
        return {"all": path}
    return {part: os.path.join(path, part) for part in IMAGE_FOLDER_PARTS if os.path.isdir(os.path.join(path, part))}


@dataclass
class SyntheticConfig:
    """Generated data for fast tests: class-dependent patterns plus noise."""

    num_classes: int = 10
    train_per_class: int = 500
    test_per_class: int = 100
    image_size: int = 32
    channels: int = 3
    seed: int = 0

    def __post_init__(self):
        check(self.num_classes >= 2, "data.synthetic.num_classes", self.num_classes, "an integer >= 2")
        check(self.image_size >= 4, "data.synthetic.image_size", self.image_size,
              "an integer >= 4 (the CNNs halve the image twice)")
        for key in ("train_per_class", "test_per_class", "channels"):
            value = getattr(self, key)
            check(value >= 1, f"data.synthetic.{key}", value, "an integer >= 1")


@dataclass
class DataConfig:
    """One generic builder: source x classes kept x imbalance profile x test policy."""

    name: str = MISSING
    source: str = MISSING
    root: str | None = None  # offline mirror folder; falls back to $IMBALANCE_LAB_DATA
    download_dir: str | None = None  # where torchvision downloads go; default ~/.cache/imbalance_lab
    classes: list[int] | None = None  # source labels kept (relabelled 0..K-1 in this order); None = all
    profile: str = "none"
    imbalance: float = 1.0  # r >= 1: ratio of the largest to the smallest class
    reduced_classes: list[int] = field(default_factory=list)  # profile=reduce: source labels that are reduced
    n_max: int | None = None  # reference per-class train count; None = largest per-class count available
    test_policy: str = "balanced"
    test_n_max: int | None = None  # test_policy=reduced: reference per-class test count
    subset_seed: int = 0
    # which images a reduced class keeps: seeded = the first n of a permutation per class (data.subset_seed);
    # first = the first n in the source's own order (the affinity-loss reimplementation's datasets.py)
    subset_order: str = "seeded"
    val_fraction: float = 0.0
    augment: bool = True  # random crop (pad 4) + horizontal flip, batched on the device
    # inputs (x / 255 − mean) / std per channel, from the training images; false: x / 255 only
    standardize: bool = True
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    # source image_folder (configs/data/image_folder.yaml, data/image_folder.py): your own images
    path: str | None = None  # <path>/<class>/<image>, or <path>/train|test[|val]/<class>/<image>
    image_size: int = 32  # every image resized (shorter side) and centre-cropped to image_size x image_size
    test_fraction: float | None = None  # a folder without test/: per class, held out for test; null = 0.2
    skip_unreadable: bool = False  # false: an image that cannot be decoded stops the run, naming it

    def __post_init__(self):
        one_of("data.source", self.source, SOURCES)
        self._check_image_folder()
        one_of("data.profile", self.profile, PROFILES)
        one_of("data.subset_order", self.subset_order, SUBSET_ORDERS)
        one_of("data.test_policy", self.test_policy, TEST_POLICIES)
        check(self.imbalance >= 1, "data.imbalance", self.imbalance, "a number >= 1")
        check(0 <= self.val_fraction < 1, "data.val_fraction", self.val_fraction, "a number in [0, 1)")
        if self.classes is not None:
            check(len(self.classes) >= 2 and len(set(self.classes)) == len(self.classes),
                  "data.classes", self.classes, "at least two distinct class labels, or null for all")
        if self.profile == "reduce":
            check(len(self.reduced_classes) > 0, "data.reduced_classes", self.reduced_classes,
                  "a non-empty list of class labels when data.profile=reduce")
            kept = self.classes
            if kept is not None:
                check(set(self.reduced_classes) <= set(kept), "data.reduced_classes", self.reduced_classes,
                      f"labels among data.classes={kept}")
        for key in ("n_max", "test_n_max"):
            value = getattr(self, key)
            check(value is None or value >= 1, f"data.{key}", value, "null or an integer >= 1")
        # an image folder's class sizes are known once it is read: the profile is checked then (data/profiles.py)
        if self.profile != "none" and (self.source != "image_folder" or self.n_max):
            # The smallest class keeps floor(n_ref / r) images (train), floor(test_n_max / r) (reduced test).
            n_ref = self.n_max or self.max_train_per_class
            limit = min(n_ref, self.test_n_max) if self.test_policy == "reduced" and self.test_n_max else n_ref
            check(self.imbalance <= limit, "data.imbalance", self.imbalance,
                  f"at most {limit} for {self.name} (a larger ratio leaves the smallest class with no image)")

    def _check_image_folder(self) -> None:
        if self.source != "image_folder":
            for key, default, shown in (("path", None, "null"), ("image_size", 32, "32"),
                                        ("test_fraction", None, "null"), ("skip_unreadable", False, "false")):
                check(getattr(self, key) == default, f"data.{key}", getattr(self, key),
                      f"{shown} unless data.source=image_folder (data=image_folder: your own images)")
            return
        check(self.path is not None and str(self.path).strip() != "", "data.path", self.path,
              "the folder of your images, e.g. data.path=/data/my_images (layout: <path>/<class>/<image>, or "
              "<path>/train/<class>/<image> with test/ and optionally val/ beside it)")
        where = os.path.abspath(os.path.expanduser(self.path))
        problem = "is not a folder" if os.path.exists(where) else "does not exist"
        check(os.path.isdir(where), "data.path", self.path, f"an existing folder of class folders ({where} {problem})")
        one_of("data.image_size", self.image_size, IMAGE_SIZES)
        check(self.test_fraction is None or 0 < self.test_fraction < 1, "data.test_fraction", self.test_fraction,
              "null (0.2) or a number in (0, 1)")

    @property
    def max_train_per_class(self) -> int:
        if self.source == "synthetic":
            return self.synthetic.train_per_class
        check(self.source != "image_folder", "data.source", self.source,
              "a dataset whose class sizes are known before it is read (mnist, cifar10, cifar100, synthetic) for "
              "method=fixmatch; an image folder's are known only once it is read")
        return SOURCE_MAX_TRAIN_PER_CLASS[self.source]

    @property
    def num_classes(self) -> int:
        if self.classes is not None:
            return len(self.classes)
        if self.source == "image_folder":  # its class folders (checked when the folder is read)
            parts = image_folder_parts(os.path.abspath(os.path.expanduser(self.path)))
            return len(sub_folders(parts.get("train", parts.get("all"))))
        return self.synthetic.num_classes if self.source == "synthetic" else SOURCE_NUM_CLASSES[self.source]


# ----------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    name: str = MISSING
    embedding_dim: int | None = None  # e.g. 2: a projection before the head, for feature scatter plots
    # a state dict file of yours to start from (models/pretrained.py): a run's model.pt, or the backbone's own
    # (torchvision's names for resnet18); tensors whose shape differs (the final fc) are skipped. Never downloaded
    pretrained: str | None = None
    # every BatchNorm layer's momentum (PyTorch's meaning, the weight of each new batch in the running
    # statistics: Keras' momentum 0.99 is 0.01 here) and eps; null: the architecture's own (PyTorch's 0.1 and
    # 1e-5; wrn28_2: 0.001 and 0.001)
    bn_momentum: float | None = None
    bn_eps: float | None = None

    def __post_init__(self):
        check(self.embedding_dim is None or self.embedding_dim >= 1, "model.embedding_dim",
              self.embedding_dim, "null or an integer >= 1")
        check(self.bn_momentum is None or 0 < self.bn_momentum <= 1, "model.bn_momentum", self.bn_momentum,
              "null or a number in (0, 1]")
        check(self.bn_eps is None or self.bn_eps > 0, "model.bn_eps", self.bn_eps, "null or a number > 0")
        if self.pretrained is not None:
            where = os.path.abspath(os.path.expanduser(self.pretrained))
            problem = "is not a file" if os.path.exists(where) else "does not exist"
            check(os.path.isfile(where), "model.pretrained", self.pretrained,
                  f"null or a state dict file saved with torch.save (nothing is downloaded; {where} {problem})")


# ----------------------------------------------------------------------------- losses
DRW_REDUCTIONS = ("weighted_mean", "mean")


@dataclass
class LossConfig:
    """The base of every loss's config class (each loss module defines its own and registers it with the
    loss; ``imbalance_lab.configstore`` stores them as ``schema/loss/<name>``). Fields every loss has: deferred re-weighting (DRW, Cao et al. 2019) of its per-sample losses."""

    # the settings that shape the model's head (e.g. the affinity head's centres per class and sigma): runs
    # that differ in them cannot share one vmapped model, so they are not put in one stack
    head_fields: ClassVar[tuple[str, ...]] = ()

    name: str = MISSING
    drw_epoch: int | None = None  # 1-based epoch from which class-balanced weights apply; None = never
    drw_beta: float = 0.9999  # β of the DRW weights w_c ∝ (1 − β) / (1 − β^{n_c})
    # how the DRW-weighted batch loss is reduced: weighted_mean = Σ w_y l / Σ w_y (Cao et al.'s code,
    # F.cross_entropy(weight=w)); mean = mean of w_y l (the gradient then shrinks with the batch's weights)
    drw_reduction: str = "weighted_mean"

    def __post_init__(self):
        check(self.drw_epoch is None or self.drw_epoch >= 1, "loss.drw_epoch", self.drw_epoch,
              "null or an integer >= 1 (1-based epoch)")
        check(0 <= self.drw_beta < 1, "loss.drw_beta", self.drw_beta, "a number in [0, 1)")
        one_of("loss.drw_reduction", self.drw_reduction, DRW_REDUCTIONS)


# ----------------------------------------------------------------------------- optimiser
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "multistep", "cosine", "fixmatch_cosine")  # see train/optim.py


@dataclass
class OptimConfig:
    name: str = MISSING
    lr: float = 1e-3
    eps: float = 1e-8  # adam only: ε of the update's denominator (PyTorch's default; Keras' is 1e-7)
    weight_decay: float = 0.0
    # false: no weight decay on normalisation-layer parameters and biases, as FixMatch (decays conv/dense
    # kernels only) and USB (bn_wd_skip) train
    decay_norm_and_bias: bool = True
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    # cosine: (1 + cos(πk/K))/2; fixmatch_cosine: cos(7πk/16K) (k: step after warm-up, K: steps after warm-up)
    schedule: str = "constant"
    milestones: list[int] = field(default_factory=list)  # multistep: epochs where lr *= gamma
    gamma: float = 0.1
    warmup_epochs: int = 0  # linear warm-up from lr/warmup_epochs, per step

    def __post_init__(self):
        one_of("optim.name", self.name, OPTIMIZERS)
        one_of("optim.schedule", self.schedule, SCHEDULES)
        check(self.lr > 0, "optim.lr", self.lr, "a number > 0")
        check(self.eps > 0, "optim.eps", self.eps, "a number > 0")
        check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a number >= 0")
        check(0 <= self.momentum < 1, "optim.momentum", self.momentum, "a number in [0, 1)")
        check(self.gamma > 0, "optim.gamma", self.gamma, "a number > 0")
        check(self.warmup_epochs >= 0, "optim.warmup_epochs", self.warmup_epochs, "an integer >= 0")
        check(all(m > 0 for m in self.milestones), "optim.milestones", self.milestones, "positive epochs")


# ----------------------------------------------------------------------------- trainer
DEVICES = ("auto", "cpu", "cuda")
STACKINGS = ("auto", "loop", "vmap")  # see train/stack.py


@dataclass
class TrainerConfig:
    epochs: int = 15
    batch_size: int = 128
    eval_every: int = 5  # evaluate every k epochs, and always after the last
    device: str = "auto"
    # bf16 convolutions and linear layers, float32 normalisation and losses (train/precision.py), the same
    # arithmetic on every device; null = on for CUDA, off on CPU
    amp: bool | None = None
    channels_last: bool | None = None  # NHWC inputs and weights; null = on for CUDA, off on CPU
    compile: bool = False  # torch.compile the forward pass (each member's, or the vmapped stack's)
    # raise at any host sync inside the step loop (CUDA: torch.cuda.set_sync_debug_mode; CPU: the operators
    # that sync on CUDA; train/sync.py): a debugging aid for the loop's speed
    sync_check: bool = False
    progress: bool = True  # tqdm bar
    bn_recalibration_batches: int = 20  # before each evaluation, BatchNorm statistics from k training batches
    # runs trained together: auto = one vmapped model on CUDA, member after member on CPU; loop; vmap
    stacking: str = "auto"
    # CPU threads (None: PyTorch's default, one per core); results on CPU depend on it, and metrics.json
    # records the count used (device.threads)
    threads: int | None = None
    # every k epochs a run writes checkpoint.pt (atomically, the previous one kept); a run started again in
    # the same folder continues from it. 0: never
    checkpoint_every: int = 10
    # Debug modes (configs/debug/; a run with any of them on is marked as a debug run and listed apart by the
    # report): one epoch of one training step, evaluated on one batch (does this combination run at all?) ...
    fast_dev_run: bool = False
    # ... k fixed training batches every epoch, the same ones (can the model fit them? its loss must fall) ...
    overfit_batches: int = 0
    # ... a fraction of each epoch's training steps (at least one)
    limit_train_batches: float = 1.0
    # mixing inside the training step (train/mixup.py): mixup | remix; null = off. λ ~ Beta(α, α) per batch (α = 0:
    # λ = 1); Remix's label weight favours the rarer class of a pair: κ (class-count ratio), τ (λ threshold)
    mixup: str | None = None
    mixup_alpha: float = 1.0
    mixup_kappa: float = 3.0
    mixup_tau: float = 0.5

    def __post_init__(self):
        check(self.epochs >= 1, "trainer.epochs", self.epochs, "an integer >= 1")
        check(self.mixup_alpha >= 0, "trainer.mixup_alpha", self.mixup_alpha, "a number >= 0 (0: λ = 1)")
        check(self.mixup_kappa >= 1, "trainer.mixup_kappa", self.mixup_kappa, "a number >= 1")
        check(0 <= self.mixup_tau <= 1, "trainer.mixup_tau", self.mixup_tau, "a number in [0, 1]")
        check(self.overfit_batches >= 0, "trainer.overfit_batches", self.overfit_batches,
              "an integer >= 0 (0 = off)")
        check(0 < self.limit_train_batches <= 1, "trainer.limit_train_batches", self.limit_train_batches,
              "a fraction in (0, 1] of each epoch's training steps")
        check(self.batch_size >= 2, "trainer.batch_size", self.batch_size, "an integer >= 2")
        check(self.eval_every >= 1, "trainer.eval_every", self.eval_every, "an integer >= 1")
        check(self.bn_recalibration_batches >= 0, "trainer.bn_recalibration_batches",
              self.bn_recalibration_batches, "an integer >= 0 (0 = keep the running averages)")
        one_of("trainer.device", self.device, DEVICES)
        one_of("trainer.stacking", self.stacking, STACKINGS)
        check(self.threads is None or self.threads >= 1, "trainer.threads", self.threads, "null or an integer >= 1")
        check(self.checkpoint_every >= 0, "trainer.checkpoint_every", self.checkpoint_every,
              "an integer >= 0 (0 = no checkpoints)")
        if self.device == "cuda":
            import torch

            check(torch.cuda.is_available(), "trainer.device", self.device,
                  "cuda needs a visible CUDA GPU (none found); use auto or cpu")


# Anomaly scores of method=majority_only (imbalance_lab/baselines/majority_only.py); the first is the default.
MAJORITY_ONLY_SCORES = ("rotation_nll", "feature_mahalanobis")


@dataclass
class MajorityOnlyConfig:
    """``method=majority_only``: anomaly detection trained on the majority class alone."""

    threshold_quantile: float = 0.95  # of held-out majority training scores: ~5% false alarms on the majority
    calibration_fraction: float = 0.1  # majority training images held out to set the threshold
    score: str = "rotation_nll"  # or feature_mahalanobis; fixed in advance (no anomalies to choose it on)

    def __post_init__(self):
        one_of("majority_only.score", self.score, MAJORITY_ONLY_SCORES)
        check(0 < self.threshold_quantile < 1, "majority_only.threshold_quantile", self.threshold_quantile,
              "a number in (0, 1)")
        check(0 <= self.calibration_fraction < 1, "majority_only.calibration_fraction",
              self.calibration_fraction, "a number in [0, 1)")


UNLABELLED_PROFILES = ("exp", "exp_reversed", "step")


@dataclass
class SSLConfig:
    """``method=fixmatch``: FixMatch (Sohn et al., NeurIPS 2020) on a labelled split (``data``) plus an
    unlabelled split drawn from the rest of the same training set, optionally with DebiasPL's debiased
    pseudo-labels and adaptive margin (Wang et al., CVPR 2022; see ``losses/fixmatch.py``). Defaults: FixMatch's
    CIFAR recipe (μ=7, threshold 0.95, λ_u=1, EMA 0.999) and the official DebiasPL code's ``--tau 1.0`` and
    ``--qhat_m 0.999`` (main_DebiasPL.py); the unlabelled split of the imbalanced-SSL protocol (DARP, Kim et
    al. 2020): head class M1=3000, γ_u=100 (γ_u=1: balanced, the 'distribution differs' case)."""

    mu: int = 7  # unlabelled images per labelled image in a step
    threshold: float = 0.95  # a pseudo-label is used when its (debiased) probability is >= this
    lambda_u: float = 1.0  # weight of the unlabelled loss
    debias: bool = False  # DebiasPL: pseudo-labels from softmax(z − τ log q̂), loss on z_s + τ log q̂
    tau: float = 1.0  # τ, the debiasing strength (official code: --tau, default 1.0; its scripts pass 0.4)
    qhat_momentum: float = 0.999  # momentum of q̂, the running mean of the unlabelled weak-view softmax
    ema: float = 0.999  # decay of the weight average that is evaluated
    # exp: M_i = floor(M1 · γ_u^(−i/(C−1))); exp_reversed: the same counts, last class largest (USB's γ_u < 0,
    # a 'distribution differs' case); step: half M1, half floor(M1/γ_u)
    unlabelled_profile: str = "exp"
    unlabelled_imbalance: float = 100.0  # γ_u >= 1 (1 = balanced)
    unlabelled_n_max: int = 3000  # M1, unlabelled images of the largest class

    def __post_init__(self):
        check(self.mu >= 1, "ssl.mu", self.mu, "an integer >= 1")
        check(0 < self.threshold <= 1, "ssl.threshold", self.threshold, "a number in (0, 1]")
        check(self.lambda_u >= 0, "ssl.lambda_u", self.lambda_u, "a number >= 0")
        check(self.tau >= 0, "ssl.tau", self.tau, "a number >= 0")
        check(0 <= self.qhat_momentum < 1, "ssl.qhat_momentum", self.qhat_momentum, "a number in [0, 1)")
        check(0 <= self.ema < 1, "ssl.ema", self.ema, "a number in [0, 1)")
        one_of("ssl.unlabelled_profile", self.unlabelled_profile, UNLABELLED_PROFILES)
        check(self.unlabelled_imbalance >= 1, "ssl.unlabelled_imbalance", self.unlabelled_imbalance, "a number >= 1")
        check(self.unlabelled_n_max >= 1, "ssl.unlabelled_n_max", self.unlabelled_n_max, "an integer >= 1")
        check(self.unlabelled_imbalance <= self.unlabelled_n_max, "ssl.unlabelled_imbalance",
              self.unlabelled_imbalance, f"at most ssl.unlabelled_n_max={self.unlabelled_n_max} (a larger ratio "
              "leaves the smallest class with no unlabelled image)")


# ----------------------------------------------------------------------------- loggers
# Live views of a run (imbalance_lab/loggers.py, one class per field below); the run folder's files stay the
# source of truth. None: that logger is off. configs/logger/<name>.yaml switches one on (logger=[a,b]: several).
WANDB_MODES = ("offline", "online", "disabled")


@dataclass
class TensorBoardLoggerConfig:
    # event files of a run: null = <run folder>/tensorboard (tensorboard --logdir <sweep folder> shows every run
    # of a sweep); a folder = <folder>/<sweep or run folder name>/<run>
    save_dir: str | None = None


@dataclass
class CSVLoggerConfig:
    filename: str = "epochs.csv"  # in the run folder: one row per epoch, rewritten atomically after each

    def __post_init__(self):
        check(bool(self.filename) and "/" not in self.filename, "logger.csv.filename", self.filename,
              "a file name (no folder) in the run folder")


@dataclass
class MLflowLoggerConfig:
    # null = a file store in the sweep folder (a single run: its run folder), <folder>/mlruns
    tracking_uri: str | None = None
    experiment_name: str | None = None  # null = the sweep folder's name (one experiment per sweep)


@dataclass
class WandbLoggerConfig:
    project: str = "imbalance_lab"
    mode: str = "offline"  # offline: files only (wandb sync <folder> uploads them later); online needs a login
    entity: str | None = None
    group: str | None = None  # null = the sweep folder's name
    save_dir: str | None = None  # null = the run folder

    def __post_init__(self):
        one_of("logger.wandb.mode", self.mode, WANDB_MODES)


@dataclass
class LoggerConfig:
    tensorboard: TensorBoardLoggerConfig | None = None
    csv: CSVLoggerConfig | None = None
    mlflow: MLflowLoggerConfig | None = None
    wandb: WandbLoggerConfig | None = None


# How the feature layers of a decoupled stage 2 treat BatchNorm: frozen (eval mode, stage 1's statistics) or
# batch_stats (train mode, as the authors' code: each batch's statistics, running averages updated)
BACKBONE_BN = ("frozen", "batch_stats")


@dataclass
class DecoupledConfig:
    """``method=decoupled``: stage 2 of Kang et al. 2020 (classifier re-training / re-scaling on the frozen features
    of a finished stage-1 run; baselines/decoupled.py, whose ``MODES`` are the modes)."""

    stage1: str | None = None  # a finished run's folder, or a sweep folder holding the run of this split and seed
    mode: str = "crt"  # crt | tau_norm | lws
    tau: float | None = None  # tau_norm: w_c / ||w_c||^tau; null = chosen on the validation split from tau_grid
    tau_grid: list[float] = field(default_factory=lambda: [i / 10 for i in range(21)])  # tau_norm.py: 0, 0.1, .., 2
    tau_norm_bias: bool = True  # keep stage 1's bias b_c (false: dropped, as the authors' tau_norm.py)
    backbone_bn: str = "frozen"  # frozen | batch_stats (the authors' code)

    def __post_init__(self):
        check(self.tau is None or self.tau >= 0, "decoupled.tau", self.tau, "null or a number >= 0")
        check(len(self.tau_grid) > 0 and all(t >= 0 for t in self.tau_grid), "decoupled.tau_grid", self.tau_grid,
              "a non-empty list of numbers >= 0")
        one_of("decoupled.backbone_bn", self.backbone_bn, BACKBONE_BN)


METHODS = ("supervised", "majority_only", "fixmatch", "decoupled")
SAMPLERS = ("uniform", "oversample", "undersample", "sqrt")  # see train/samplers.py


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    loss: Any = MISSING  # one of the LossConfig subclasses, chosen by the loss group
    optim: OptimConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sampler: str = "uniform"  # uniform | oversample | undersample | sqrt (see train/samplers.py)
    method: str = "supervised"  # or majority_only: train on the majority class alone, detect the minority
    majority_only: MajorityOnlyConfig = field(default_factory=MajorityOnlyConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)  # method=fixmatch
    decoupled: DecoupledConfig = field(default_factory=DecoupledConfig)  # method=decoupled
    seed: int = 0
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    tags: list[str] = field(default_factory=list)  # recorded in metrics.json, shown by the report, given to loggers

    def __post_init__(self):
        check(0 <= self.seed < 2**32, "seed", self.seed, "an integer in [0, 2^32) (numpy's seed range)")
        check(all(str(t).strip() for t in self.tags), "tags", self.tags, "a list of non-empty strings")
        one_of("sampler", self.sampler, SAMPLERS)
        one_of("method", self.method, METHODS)
        if self.method == "majority_only":
            check(self.data.num_classes == 2, "method", self.method,
                  f"two-class data (e.g. data=cifar2); data={self.data.name} has {self.data.num_classes} classes")
        if self.method == "fixmatch":
            # The unlabelled images of a class come after its labelled ones in the same class permutation.
            labelled = self.data.n_max or self.data.max_train_per_class
            check(self.data.profile != "none" and labelled + self.ssl.unlabelled_n_max <= self.data.max_train_per_class,
                  "ssl.unlabelled_n_max", self.ssl.unlabelled_n_max,
                  f"at most {self.data.max_train_per_class} − data.n_max per class, with a data.profile other than "
                  f"none (the labelled and unlabelled splits share the {self.data.max_train_per_class} training "
                  f"images of a class of {self.data.name}; data.n_max={self.data.n_max}, "
                  f"data.profile={self.data.profile})")
        alpha = getattr(self.loss, "alpha", None)
        if alpha is not None:
            check(len(alpha) == self.data.num_classes, "loss.alpha", alpha,
                  f"null or one weight per class ({self.data.num_classes} for data={self.data.name})")


FLOAT32_MAX = 3.4028234663852886e38


def to_dataclasses(cfg: DictConfig) -> Config:
    """Check the composed config and return it as dataclasses: every number finite, every key a field of
    its schema (a key added with ``+`` that no schema has is a typo, not a setting), every value in its
    range (``__post_init__``). Raises :class:`ConfigError`."""
    for key, value in leaves(cfg):
        # training computes in float32: a value beyond its range (optim.lr=1e308) would overflow there
        check(not isinstance(value, float) or (math.isfinite(value) and abs(value) <= FLOAT32_MAX), key, value,
              f"a finite number of at most {FLOAT32_MAX:.4g} in size (training computes in float32)")
    try:
        config = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:  # e.g. a mandatory value left missing
        raise ConfigError(getattr(exc, "full_key", "?"), getattr(exc, "value", None), str(exc).splitlines()[0])
    reject_unknown_keys(cfg, config)
    return config


def leaves(node, prefix: str = ""):
    """(dotted key, value) of every leaf of a DictConfig / ListConfig, interpolations resolved."""
    items = node.items() if isinstance(node, DictConfig) else enumerate(node)
    for key, value in items:
        path = f"{prefix}{key}" if isinstance(node, DictConfig) else f"{prefix[:-1]}[{key}]"
        if isinstance(value, DictConfig | ListConfig):
            yield from leaves(value, f"{path}.")
        else:
            yield path, value


def reject_unknown_keys(node: DictConfig, obj, prefix: str = "") -> None:
    """Every key of the composed ``node`` must be a field of the dataclass ``obj`` made from it."""
    names = [f.name for f in dataclasses.fields(obj)]
    for key in node:
        path = f"{prefix}{key}"
        check(key in names, path, node[key], f"not a setting of {type(obj).__name__} (its keys: {', '.join(names)})")
        value = getattr(obj, key)
        if dataclasses.is_dataclass(value):
            reject_unknown_keys(node[key], value, f"{path}.")
