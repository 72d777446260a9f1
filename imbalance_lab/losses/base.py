"""The loss interface and registry.

A loss is a module here: a config dataclass (a :class:`~imbalance_lab.schema.LossConfig` whose ``name``
default is the loss's name) and an :class:`ImbalanceLoss` subclass registered with it (``@register``).
It is built once per run from its config and ``class_counts`` (training images per class, from the
whole training split, never from a batch). Besides ``forward(logits, targets) -> mean loss`` it may
override ``make_head`` (the model's last layer, e.g. affinity centres or a cosine head), ``scores`` (how
logits become predictions, e.g. post-hoc logit adjustment), ``start_epoch`` (schedules) and
``extra_metrics`` (loss state kept in the run's metrics file).

Every loss computes per-sample losses l_i and reduces them with :meth:`ImbalanceLoss.reduce`, which
implements deferred re-weighting (DRW; Cao et al., "Learning Imbalanced Datasets with Label-Distribution-
Aware Margin Loss", NeurIPS 2019) for all of them:

    before epoch ``drw_epoch`` (1-based):  L = mean_i l_i
    from epoch ``drw_epoch`` on:           L = Σ_i w_{y_i} l_i / Σ_i w_{y_i},  w_c = (1 − β) / (1 − β^{n_c})

with β = ``drw_beta`` (Cui et al. 2019 effective-number weights). That weighted mean is what Cao et al.'s
code computes (``F.cross_entropy(weight=per_cls_weights)``, github.com/kaidic/LDAM-DRW).
``drw_reduction: mean`` takes mean_i w_{y_i} l_i instead (with Σ_c w_c = C, like ``weighted_ce`` and ``cb``
reduce their own weights): on CIFAR-10-LT r=100 its DRW-phase gradient is about 0.17x Cao's, another recipe.

Mixed labels (``trainer.mixup``, ``train/mixup.py``): :meth:`ImbalanceLoss.mixed` scores logits z against two
labels per sample with label weights v_i and 1 − v_i, as one call of the loss on [z; z] labelled [y_a; y_b]; the
reduction then applies per half to v · l and adds the halves (mean: mean_i v_i l_i(y_a) + mean_i (1 − v_i) l_i(y_b);
DRW: Σ_i w_{y_a,i} v_i l_i / Σ_i w_{y_a,i} + the same for y_b). With v = 1 it is the plain loss exactly. A loss whose
batch loss is not such a reduction of per-sample losses of one label each says why in ``mixup_refusal``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from .weights import effective_number_weights

LOSSES: dict[str, type[ImbalanceLoss]] = {}


def register(config: type):
    """Register a loss class together with its config dataclass, under the config's default ``name``
    (what ``loss=<name>`` and ``configs/loss/<name>.yaml`` select)."""

    def add(cls):
        name = config.name
        if name in LOSSES:
            raise ValueError(f"two losses registered as {name!r}: {LOSSES[name].__name__} and {cls.__name__}")
        cls.Config = config
        LOSSES[name] = cls
        return cls

    return add


class ImbalanceLoss(nn.Module):
    Config: type  # its config dataclass, set by @register
    # why this loss cannot score mixed labels (trainer.mixup), or None: its batch loss is ``reduce`` of per-sample
    # losses l(z_i, y_i), which ``mixed`` extends to two labels
    mixup_refusal: ClassVar[str | None] = None

    def __init__(self, cfg, class_counts: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("class_counts", class_counts.float())
        self.drw_epoch = getattr(cfg, "drw_epoch", None)
        self.drw_reduction = getattr(cfg, "drw_reduction", "weighted_mean")
        self.drw_active = False
        beta = getattr(cfg, "drw_beta", 0.9999)
        self.register_buffer("drw_weights", effective_number_weights(class_counts, beta))
        self.label_weights: torch.Tensor | None = None  # [v; 1 − v] during a ``mixed`` call

    @property
    def num_classes(self) -> int:
        return self.class_counts.numel()

    def make_head(self, in_features: int, num_classes: int) -> nn.Module:
        """The model's last layer this loss expects; a loss that needs the head's parameters keeps it."""
        return nn.Linear(in_features, num_classes)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Class scores used for prediction: argmax gives the predicted class, softmax the probabilities."""
        return logits

    def start_epoch(self, epoch: int) -> None:
        """Called before each training epoch (0-based), and again for that epoch when a run resumes inside it
        (so it must be idempotent). Subclasses that override it call super()."""
        self.drw_active = self.drw_epoch is not None and epoch + 1 >= self.drw_epoch

    def mixed(self, logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, weight_a: torch.Tensor
              ) -> torch.Tensor:
        """The loss of ``logits`` against ``y_a`` with per-sample label weight ``weight_a`` plus against ``y_b``
        with ``1 − weight_a`` (module docstring)."""
        self.label_weights = torch.cat([weight_a, 1 - weight_a])
        try:
            return self(torch.cat([logits, logits]), torch.cat([y_a, y_b]))
        finally:
            self.label_weights = None

    def reduce(self, per_sample: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Batch loss from per-sample losses: the mean, weighted by the DRW class weights once DRW is on; in a
        ``mixed`` call, that of each half's label-weighted losses, summed."""
        if self.label_weights is not None:
            (l_a, l_b), (v_a, v_b), (y_a, y_b) = per_sample.chunk(2), self.label_weights.chunk(2), targets.chunk(2)
            return self._reduce(v_a * l_a, y_a) + self._reduce(v_b * l_b, y_b)
        return self._reduce(per_sample, targets)

    def _reduce(self, per_sample: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not self.drw_active:
            return per_sample.mean()
        w = self.drw_weights[targets]
        return (w * per_sample).sum() / w.sum() if self.drw_reduction == "weighted_mean" else (w * per_sample).mean()

    def extra_metrics(self) -> dict:
        """Loss state worth keeping in the run's metrics file (e.g. a running class-prior estimate)."""
        return {}


def build_loss(cfg, class_counts) -> ImbalanceLoss:
    counts = torch.as_tensor(list(class_counts), dtype=torch.float32)
    return LOSSES[cfg.name](cfg, counts)
