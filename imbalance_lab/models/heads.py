"""Heads that a loss asks for instead of the default ``nn.Linear`` (see ``ImbalanceLoss.make_head``).

Both compute in float32 with autocast off: the affinity head takes exponentials of squared distances and
the cosine head's outputs are multiplied by a scale s ≈ 30 in the LDAM loss, where bf16 rounding of the
cosines (~4e-3) would be visible.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class AffinityHead(nn.Module):
    """Gaussian affinities to learnable class centres (Hayat et al. 2019, arXiv 1901.07711):

        d_j(f) = max_{t=1..m} exp(−‖f − w_{j,t}‖² / σ),   output shape (N, C), values in (0, 1]

    ``centres`` has shape (C·m, D); rows j·m … j·m+m−1 belong to class j. Initialised He-normal
    (std √(2/D)), like the public reimplementations of the affinity layer.
    """

    def __init__(self, in_features: int, num_classes: int, m: int = 1, sigma: float = 10.0):
        super().__init__()
        self.num_classes, self.m, self.sigma = num_classes, m, float(sigma)
        self.centres = nn.Parameter(torch.randn(num_classes * m, in_features) * math.sqrt(2.0 / in_features))

    def squared_distances(self, f: torch.Tensor) -> torch.Tensor:
        """‖f_i − w_k‖² for every sample i and centre k: shape (N, C·m)."""
        w = self.centres.float()
        d2 = (f * f).sum(1, keepdim=True) + (w * w).sum(1)[None, :] - 2.0 * f @ w.T
        return d2.clamp_min(0.0)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        with torch.autocast(f.device.type, enabled=False):
            d2 = self.squared_distances(f.float())
            d = torch.exp(-d2 / self.sigma)
            return d.view(len(f), self.num_classes, self.m).amax(dim=2)

    def centre_spread(self) -> torch.Tensor:
        """The regulariser R: population variance of ‖w_k − w_l‖² over all pairs k < l of the C·m centres."""
        w = self.centres.float()
        sq = (w * w).sum(1)
        d2 = (sq[:, None] + sq[None, :] - 2.0 * w @ w.T).clamp_min(0.0)
        i, j = torch.triu_indices(len(w), len(w), offset=1, device=w.device)
        return d2[i, j].var(unbiased=False)

    def extra_repr(self) -> str:
        return f"in_features={self.centres.shape[1]}, num_classes={self.num_classes}, m={self.m}, sigma={self.sigma}"


class NormedLinear(nn.Module):
    """Cosine classifier (Cao et al. 2019, LDAM): cos θ_{ij} = ⟨f_i/‖f_i‖, w_j/‖w_j‖⟩, shape (N, C).

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
