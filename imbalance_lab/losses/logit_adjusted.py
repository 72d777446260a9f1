"""Logit-adjusted loss (Menon et al., "Long-Tail Learning via Logit Adjustment", ICLR 2021):

    training:   L = −log softmax(z + τ log π)_y,   π_c = n_c / Σ_k n_k,   predict argmax_c z_c
    post-hoc:   train plain CE, predict argmax_c (z_c − τ log π_c)       (``posthoc: true``)

τ = 0 is plain cross-entropy. τ = 1 is the Balanced Softmax loss (Ren et al., NeurIPS 2020):
softmax(z + log π)_y = π_y e^{z_y} / Σ_c π_c e^{z_c}.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..schema import LossConfig, check
from .base import ImbalanceLoss, register


@dataclass
class LogitAdjustedLossConfig(LossConfig):
    name: str = "logit_adjusted"
    tau: float = 1.0  # τ; 0 = plain CE, 1 = Balanced Softmax
    posthoc: bool = False  # true: train plain CE, predict argmax(z − τ log π)

    def __post_init__(self):
        super().__post_init__()
        check(self.tau >= 0, "loss.tau", self.tau, "a number >= 0")


@register(LogitAdjustedLossConfig)
class LogitAdjustedLoss(ImbalanceLoss):
    def __init__(self, cfg, class_counts):
        super().__init__(cfg, class_counts)
        prior = class_counts.double() / class_counts.double().sum()
        self.register_buffer("adjustment", (float(cfg.tau) * torch.log(prior)).float())  # τ log π
        self.posthoc = bool(cfg.posthoc)

    def forward(self, logits, targets):
        z = logits.float()
        if not self.posthoc:
            z = z + self.adjustment
        return self.reduce(F.cross_entropy(z, targets, reduction="none"), targets)

    def scores(self, logits):
        return logits - self.adjustment if self.posthoc else logits
