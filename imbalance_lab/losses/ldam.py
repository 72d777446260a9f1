"""LDAM loss (Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss",
NeurIPS 2019), on a cosine-normalised head:

    Δ_c = C' / n_c^{1/4},  C' chosen so that max_c Δ_c = ``max_margin``
    L = −log softmax(s · (cos θ − Δ_y · onehot(y)))_y,    cos θ_j = ⟨f/‖f‖, w_j/‖w_j‖⟩

Predictions use the cosines. LDAM-DRW (the paper's best) is this loss with ``drw_epoch`` set: from that
epoch the per-sample losses are weighted by the class-balanced weights (β = ``drw_beta``, see base.py).
"""

import torch
import torch.nn.functional as F

from ..models.heads import NormedLinear
from .base import ImbalanceLoss, register


def ldam_margins(counts: torch.Tensor, max_margin: float) -> torch.Tensor:
    m = counts.double().pow(-0.25)
    return (m * (max_margin / m.max())).float()


@register("ldam")
class LDAMLoss(ImbalanceLoss):
    def __init__(self, cfg, class_counts):
        super().__init__(cfg, class_counts)
        self.register_buffer("margins", ldam_margins(class_counts, cfg.max_margin))
        self.s = float(cfg.s)

    def make_head(self, in_features, num_classes):
        return NormedLinear(in_features, num_classes)

    def forward(self, logits, targets):
        cos = logits.float()
        onehot = F.one_hot(targets, cos.shape[1]).to(cos.dtype)
        z = self.s * (cos - self.margins[targets, None] * onehot)
        return self.reduce(F.cross_entropy(z, targets, reduction="none"), targets)
