"""Mixup and Remix inside the training step (``trainer.mixup``), on the device, for a single run and every member of
a stack alike (loop and vmap engines): the member's :class:`MixupObjective` mixes the augmented batch its loop drew,
its :class:`MixedLabelLoss` scores the mixed batch against both labels.

Mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018; github.com/facebookresearch/
mixup-cifar10, ``train.py``: ``mixup_data``, ``mixup_criterion``), one λ per batch:

    λ ~ Beta(α, α)  (α = 0: λ = 1),   j = a random permutation of the batch
    x̃_i = λ x_i + (1 − λ) x_j,       L = λ · L(z̃, y) + (1 − λ) · L(z̃, y_j)

Remix (Chou et al., "Remix: Rebalanced Mixup", ECCV 2020 workshops, arXiv 2007.03943; its Eq. 10 as BagofTricks-LT
cites it) mixes the images with λ but weighs the labels per pair with n_c, the training images of class c
(κ = ``trainer.mixup_kappa``, τ = ``trainer.mixup_tau``; the paper's κ = 3, τ = 0.5):

    λ_y,i = 0   if n_{y_i} / n_{y_j} ≥ κ and λ < τ        (a majority image mostly hidden: the rarer label)
            1   if n_{y_i} / n_{y_j} ≤ 1/κ and 1 − λ < τ  (the same, the other way round)
            λ   otherwise
    L = mean_i [λ_y,i · l(z̃_i, y_i) + (1 − λ_y,i) · l(z̃_i, y_j)]

as both reimplementations we read compute it (we found no code of the paper's authors): github.com/zhangyongshun/
BagofTricks-LT ``lib/core/combiner.py`` ``remix`` (κ 3.0, τ 0.5 in ``lib/config/default.py``) and
github.com/ntucllab/imbalanced-DL ``imbalanceddl/strategy/_remix_drw.py`` ``remix_data``; where both rules apply
(κ = 1, equal counts, τ > 0.5) the first wins, as the latter's if/elif.

The mixed loss is one call of the configured loss over the batch's logits twice, labelled y then y_j, with label
weights w and 1 − w (``ImbalanceLoss.mixed``): per half the loss's own reduction of w · l, summed. For a mean that is
λ · mean l(z̃, y) + (1 − λ) · mean l(z̃, y_j), the authors' ``mixup_criterion``; with DRW's weighted mean it is
λ · Σ w_y l / Σ w_y + (1 − λ) · (the same for y_j), what ``mixup_criterion`` gives a weighted
``F.cross_entropy``. It suits every loss whose batch loss reduces per-sample functions l(z_i, y_i) of one label
(``ImbalanceLoss.mixup_refusal`` is None): ce, weighted_ce, focal, cb, logit_adjusted, ldam (and ldam_drw). The
others say why not, and ``configstore.validate`` refuses them.

Deliberate differences from the authors' code: λ is drawn on the device from the run's generator (their
``np.random.beta``; the same distribution: λ = G₁/(G₁ + G₂) with G ~ Gamma(α), drawn in log space as G(α) =
G(α + 1) · U^(1/α) so that a small α cannot underflow to 0/0), the permutation with ``torch.randperm`` from the
same generator; images are mixed before the input normalisation, which, being affine, gives the same input.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..losses import ImbalanceLoss
from .objective import Objective


def beta_sample(alpha: float, generator: torch.Generator, device: torch.device, shape: tuple = ()) -> torch.Tensor:
    """λ ~ Beta(α, α), float32 on ``device``, from ``generator`` (no host sync); α = 0: λ = 1."""
    if alpha == 0:
        return torch.ones(shape, device=device)
    shape = (2, *shape)
    g = torch._standard_gamma(torch.full(shape, alpha + 1.0, dtype=torch.float64, device=device), generator=generator)
    u = 1.0 - torch.rand(shape, dtype=torch.float64, device=device, generator=generator)  # in (0, 1]
    log_g = g.log() + u.log() / alpha  # log of a Gamma(α) draw
    return torch.sigmoid(log_g[0] - log_g[1]).float()  # G₁ / (G₁ + G₂)


def mixup_label_weights(lam: torch.Tensor, n_a: torch.Tensor, n_b: torch.Tensor, kappa: float, tau: float
                        ) -> torch.Tensor:
    """Mixup: every pair's first label weighs λ."""
    return lam.expand(n_a.shape)


def remix_label_weights(lam: torch.Tensor, n_a: torch.Tensor, n_b: torch.Tensor, kappa: float, tau: float
                        ) -> torch.Tensor:
    """Remix's λ_y per pair (module docstring); ``n_a``, ``n_b``: the class counts of the pairs' labels."""
    lam_y = lam.expand(n_a.shape)
    to_b = (n_a >= kappa * n_b) & (lam < tau)
    to_a = (kappa * n_a <= n_b) & (1 - lam < tau) & ~to_b
    return torch.where(to_b, 0.0, torch.where(to_a, 1.0, lam_y))


# trainer.mixup -> the weight of each pair's first label
MIXUPS: dict[str, Callable[..., torch.Tensor]] = {"mixup": mixup_label_weights, "remix": remix_label_weights}


class MixedLabelLoss(nn.Module):
    """The configured loss on a mixed batch: its labels paired as :meth:`MixupObjective.inputs` mixed the images
    (``pending``: the permutation and λ, for the next call only). Predictions, state and schedule are the wrapped
    loss's; outside a mixed step it is the wrapped loss."""

    def __init__(self, loss: ImbalanceLoss, kind: str, kappa: float, tau: float):
        super().__init__()
        self.loss, self.rule = loss, MIXUPS[kind]
        self.kappa, self.tau = float(kappa), float(tau)
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def num_classes(self) -> int:
        return self.loss.num_classes

    def make_head(self, in_features: int, num_classes: int) -> nn.Module:
        return self.loss.make_head(in_features, num_classes)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return self.loss.scores(logits)

    def start_epoch(self, epoch: int) -> None:
        self.loss.start_epoch(epoch)

    def extra_metrics(self) -> dict:
        return self.loss.extra_metrics()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.pending is None:
            return self.loss(logits, targets)
        perm, lam = self.pending
        self.pending = None
        paired = targets[perm]
        counts = self.loss.class_counts
        weight = self.rule(lam, counts[targets], counts[paired], self.kappa, self.tau)
        return self.loss.mixed(logits, targets, paired, weight)


class MixupObjective(Objective):
    """Each step: λ and a permutation of the batch from the member's generator, the images mixed as float pixel
    values (the model's input scaling and normalisation follow, as for uint8 batches), the pairing handed to the
    member's :class:`MixedLabelLoss`."""

    def __init__(self, loss: MixedLabelLoss, alpha: float):
        self.loss, self.alpha = loss, float(alpha)

    def inputs(self, xb, step, generator):
        lam = beta_sample(self.alpha, generator, xb.device)
        perm = torch.randperm(len(xb), device=xb.device, generator=generator)
        self.loss.pending = (perm, lam)
        x = xb.float()
        return lam * x + (1 - lam) * x[perm]


def with_mixup(loss: ImbalanceLoss, trainer_cfg) -> tuple[MixedLabelLoss, MixupObjective]:
    """The loss and objective of a member trained with ``trainer.mixup``."""
    mixed = MixedLabelLoss(loss, trainer_cfg.mixup, trainer_cfg.mixup_kappa, trainer_cfg.mixup_tau)
    return mixed, MixupObjective(mixed, trainer_cfg.mixup_alpha)
