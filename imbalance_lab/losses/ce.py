"""Cross-entropy: L = −log p_y, p = softmax(z). With DRW off this is exactly ``F.cross_entropy``."""

import torch.nn.functional as F

from .base import ImbalanceLoss, register


@register("ce")
class CrossEntropy(ImbalanceLoss):
    def forward(self, logits, targets):
        return self.reduce(F.cross_entropy(logits.float(), targets, reduction="none"), targets)
