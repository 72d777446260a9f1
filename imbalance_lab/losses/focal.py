"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017):

    L = −α_y (1 − p_y)^γ log p_y,   p = softmax(z)

γ = 0 (and α = 1) is exactly cross-entropy. Computed from log p_y (log-softmax) so it stays finite for
confident predictions; (1 − p_y) is taken as −expm1(log p_y), floored at the smallest normal float so
the gradient of x^γ stays finite for γ < 1.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..schema import LossConfig, check
from .base import ImbalanceLoss, register


@dataclass
class FocalLossConfig(LossConfig):
    name: str = "focal"
    gamma: float = 2.0
    alpha: list[float] | None = None  # per-class weights α_c; None = 1 for every class

    def __post_init__(self):
        super().__post_init__()
        check(self.gamma >= 0, "loss.gamma", self.gamma, "a number >= 0")
        if self.alpha is not None:
            check(all(a >= 0 for a in self.alpha), "loss.alpha", self.alpha, "null or non-negative weights")


@register(FocalLossConfig)
class FocalLoss(ImbalanceLoss):
    def __init__(self, cfg, class_counts):
        super().__init__(cfg, class_counts)
        alpha = torch.ones(len(class_counts)) if cfg.alpha is None else torch.as_tensor(cfg.alpha)
        self.register_buffer("alpha", alpha.float())
        self.gamma = float(cfg.gamma)

    def forward(self, logits, targets):
        log_p = F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
        one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)
        return self.reduce(-self.alpha[targets] * one_minus_p.pow(self.gamma) * log_p, targets)
