"""Inverse-frequency weighted cross-entropy: L = w_y · (−log p_y), w_c ∝ n_c^(−power), Σ_c w_c = C.

power=1 weights by 1/n_c, power=0.5 by 1/√n_c (the "square-root" re-weighting common in the long-tail
literature, e.g. Mahajan et al. 2018). The batch loss is the plain mean of w_y·CE over the batch (DRW,
if configured, multiplies its own weights on top).
"""

from dataclasses import dataclass

import torch.nn.functional as F

from ..schema import LossConfig, one_of
from .base import ImbalanceLoss, register
from .weights import inverse_frequency_weights

__all__ = ["WeightedCrossEntropy", "inverse_frequency_weights"]


@dataclass
class WeightedCELossConfig(LossConfig):
    name: str = "weighted_ce"
    power: float = 1.0  # w_c ∝ n_c^(-power)

    def __post_init__(self):
        super().__post_init__()
        one_of("loss.power", self.power, (1.0, 0.5))


@register(WeightedCELossConfig)
class WeightedCrossEntropy(ImbalanceLoss):
    def __init__(self, cfg, class_counts):
        super().__init__(cfg, class_counts)
        self.register_buffer("weights", inverse_frequency_weights(class_counts, cfg.power))

    def forward(self, logits, targets):
        per_sample = F.cross_entropy(logits.float(), targets, reduction="none")
        return self.reduce(self.weights[targets] * per_sample, targets)
