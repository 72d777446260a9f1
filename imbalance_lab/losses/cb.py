"""Class-balanced loss (Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019;
github.com/richardaecn/class-balanced-loss):

    w_c = (1 − β) / (1 − β^{n_c}),  normalised to Σ_c w_c = C      (1 / effective number of samples)
    softmax:  L_i = w_y · (−log p_y),                     p = softmax(z)
    sigmoid:  L_i = w_y · Σ_c BCE(z_c, 1[c = y])
    focal:    L_i = w_y · Σ_c (1 − p_t,c)^γ · BCE(z_c, 1[c = y]),   p_t,c = σ(z_c) if c = y else 1 − σ(z_c)

The batch loss is the mean of L_i over the batch (a sum over classes, a mean over samples). β = 0 gives
w_c = 1 exactly, i.e. the unweighted base loss. The focal modulator is computed in log space as in Cui's
code: (1 − p_t)^γ = exp(−γ·t·z − γ·log(1 + e^{−z})) with t = 1[c = y] (log(1 + e^{−z}) = softplus(−z)).

For the sigmoid and focal bases the head is a linear layer whose bias starts at −log((1 − π)/π) with
π = 1/C, i.e. −log(C − 1), so every class starts at σ(z) ≈ 1/C — as Cui et al.'s code initialises it (the
prior-bias idea is Lin et al. 2017's, whose π = 0.01 is for dense detection) — and that bias gets no weight
decay. For C = 10 this is −log 9, for C = 100 −log 99, for two classes 0. Predictions use
the logits (argmax σ(z) = argmax z); the run's probabilities are then softmax(z) — one-vs-rest sigmoids
do not sum to one, so softmax(z) is the calibration-metric stand-in.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..schema import LossConfig, check, one_of
from .base import ImbalanceLoss, register
from .weights import effective_number_weights


def prior_bias_linear(in_features: int, num_classes: int, pi: float | None = None) -> nn.Linear:
    """nn.Linear with bias −log((1 − π)/π) on every class (π = 1/C unless given), flagged ``no_weight_decay``."""
    pi = 1.0 / num_classes if pi is None else pi
    head = nn.Linear(in_features, num_classes)
    nn.init.constant_(head.bias, -math.log((1 - pi) / pi))
    head.bias.no_weight_decay = True
    return head


def sigmoid_focal_terms(logits: torch.Tensor, onehot: torch.Tensor, gamma: float) -> torch.Tensor:
    """(1 − p_t)^γ · BCE(z, t) elementwise, the modulator computed in log space."""
    bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    if gamma == 0:
        return bce
    modulator = torch.exp(-gamma * onehot * logits - gamma * F.softplus(-logits))
    return modulator * bce


CB_BASES = ("softmax", "sigmoid", "focal")


@dataclass
class CBLossConfig(LossConfig):
    name: str = "cb"
    beta: float = 0.9999  # w_c ∝ (1 − β) / (1 − β^{n_c}); 0 = unweighted
    base: str = "softmax"  # softmax | sigmoid | focal
    gamma: float = 1.0  # focal base only

    def __post_init__(self):
        super().__post_init__()
        check(0 <= self.beta < 1, "loss.beta", self.beta, "a number in [0, 1)")
        one_of("loss.base", self.base, CB_BASES)
        check(self.gamma >= 0, "loss.gamma", self.gamma, "a number >= 0")


@register(CBLossConfig)
class ClassBalancedLoss(ImbalanceLoss):
    def __init__(self, cfg, class_counts):
        super().__init__(cfg, class_counts)
        self.register_buffer("weights", effective_number_weights(class_counts, cfg.beta))
        self.base, self.gamma = cfg.base, float(cfg.gamma)

    def make_head(self, in_features, num_classes):
        if self.base == "softmax":
            return super().make_head(in_features, num_classes)
        return prior_bias_linear(in_features, num_classes)

    def forward(self, logits, targets):
        z = logits.float()
        if self.base == "softmax":
            per_sample = F.cross_entropy(z, targets, reduction="none")
        else:
            onehot = torch.zeros_like(z).scatter_(1, targets[:, None], 1.0)
            gamma = self.gamma if self.base == "focal" else 0.0
            per_sample = sigmoid_focal_terms(z, onehot, gamma).sum(1)
        return self.reduce(self.weights[targets] * per_sample, targets)
