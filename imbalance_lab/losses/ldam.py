"""LDAM loss (Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss",
NeurIPS 2019), on a cosine-normalised head:

    Δ_c = C' / n_c^{1/4},  C' chosen so that max_c Δ_c = ``max_margin``
    L = −log softmax(s · (cos θ − Δ_y · onehot(y)))_y,    cos θ_j = ⟨f/‖f‖, w_j/‖w_j‖⟩

Predictions use the cosines. LDAM-DRW (the paper's best) is this loss with ``drw_epoch`` set: from that
epoch the per-sample losses are weighted by the class-balanced weights (β = ``drw_beta``, see base.py).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..schema import LossConfig, check
from .base import ImbalanceLoss, register


def ldam_margins(counts: torch.Tensor, max_margin: float) -> torch.Tensor:
    m = counts.double().pow(-0.25)
    return (m * (max_margin / m.max())).float()


class NormedLinear(nn.Module):
    """The head this loss asks for, in float32 under any precision (the cosines are scaled by s ≈ 30, where bf16
    rounding, ~4e-3, would show): ``@`` on float tensors, which the bf16 policy (``train/precision.py``) leaves
    alone, and autocast off for callers that use it. Cosine classifier: cos θ_{ij} = ⟨f_i/‖f_i‖, w_j/‖w_j‖⟩,
    shape (N, C).

    ``weight`` has shape (D, C) and its columns are the class vectors (as in Cao's code).
    """

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, num_classes))
        nn.init.kaiming_uniform_(self.weight.T, a=math.sqrt(5))  # nn.Linear's default, per class column

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        with torch.autocast(f.device.type, enabled=False):
            return F.normalize(f.float(), dim=1) @ F.normalize(self.weight.float(), dim=0)

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[0]}, num_classes={self.weight.shape[1]}"


@dataclass
class LDAMLossConfig(LossConfig):
    name: str = "ldam"
    max_margin: float = 0.5  # largest margin Δ_c (the rarest class)
    s: float = 30.0  # scale of the cosine logits

    def __post_init__(self):
        super().__post_init__()
        check(self.max_margin > 0, "loss.max_margin", self.max_margin, "a number > 0")
        check(self.s > 0, "loss.s", self.s, "a number > 0")


@register(LDAMLossConfig)
class LDAMLoss(ImbalanceLoss):
    def __init__(self, cfg, class_counts):
        super().__init__(cfg, class_counts)
        self.register_buffer("margins", ldam_margins(class_counts, cfg.max_margin))
        self.s = float(cfg.s)

    def make_head(self, in_features, num_classes):
        return NormedLinear(in_features, num_classes)

    def forward(self, logits, targets):
        cos = logits.float()
        onehot = torch.zeros_like(cos).scatter_(1, targets[:, None], 1.0)
        z = self.s * (cos - self.margins[targets, None] * onehot)
        return self.reduce(F.cross_entropy(z, targets, reduction="none"), targets)
