"""Cross-entropy: L = −log p_y, p = softmax(z)."""

import torch.nn.functional as F

from .base import ImbalanceLoss, register


@register("ce")
class CrossEntropy(ImbalanceLoss):
    def forward(self, logits, targets):
        return F.cross_entropy(logits.float(), targets)
