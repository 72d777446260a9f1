"""Cross-entropy: L = −log p_y, p = softmax(z). With DRW off this is exactly ``F.cross_entropy``."""

from dataclasses import dataclass

import torch.nn.functional as F

from ..schema import LossConfig
from .base import ImbalanceLoss, register


@dataclass
class CELossConfig(LossConfig):
    name: str = "ce"


@register(CELossConfig)
class CrossEntropy(ImbalanceLoss):
    def forward(self, logits, targets):
        return self.reduce(F.cross_entropy(logits.float(), targets, reduction="none"), targets)
