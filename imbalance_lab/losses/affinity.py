"""Affinity loss (Hayat et al., "Gaussian Affinity for Max-margin Class Imbalanced Learning", ICCV 2019,
arXiv 1901.07711; Keras reimplementation github.com/koshian2/affinity-loss). The head (:class:`AffinityHead`, below) holds C·m
learnable centres w_{j,t} and outputs Gaussian affinities instead of logits:

    d_j   = max_{t=1..m} exp(−‖f − w_{j,t}‖² / σ)
    L_mm  = Σ_{j≠y} max(0, λ + d_j − d_y)                       (max-margin term, per sample)
    R     = Var_{k<l} ‖w_k − w_l‖²   over all C·m centres        (population variance of the pairwise
                                                                  squared distances: uniform spread)
    L     = mean_i L_mm,i + reg_weight · R

Prediction is argmax_j d_j. ``scores`` returns log d_j (= −min_t ‖f − w_{j,t}‖² / σ), so the run's
probabilities softmax(scores) are d_j / Σ_k d_k — the affinities normalised to sum to one (a soft nearest-
centre rule) — and the argmax is that of d. d is floored at the smallest normal float before the log.

Short runs: with σ = 10 on 128-D BatchNorm'd features every affinity starts near e^{-13}, and a reduced class's
pull towards its centre (∝ d_y, from ~1 % of a batch) only takes over once the majority's hinge terms are
inactive. At r = 100 (MNIST, 60 images per even digit, seed 0) ours and a line-by-line Keras 3 port of the
reimplementation (``scripts/reference/koshian2_affinity_keras.py``, on the same split) both miss every even
digit until epoch ≈ 18 (macro F1 ≈ 0.49), then climb (≈ 0.73 at epoch 30); at r = 10 macro F1 is ≈ 0.48 after
3 epochs and 0.92 after 15 (CE: 0.95 after 3). The published numbers come from the 100-epoch recipe
(``experiment=affinity_mnist`` / ``affinity_cifar10``), which is what must be run to compare; at 100 epochs
(r = 100) ours and the port agree within one test image on the same split.

The loss keeps a reference to the head it built (the same module as ``model.head``) to compute R; the
trainer counts the shared centres once.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..schema import LossConfig, check, one_of
from .base import ImbalanceLoss, register


class AffinityHead(nn.Module):
    """The head this loss asks for, in float32 under any precision (exponentials of squared distances): ``@``
    on float tensors, which the bf16 policy (``train/precision.py``) leaves alone, and autocast off for callers
    that use it. Gaussian affinities to learnable class centres:

        d_j(f) = max_{t=1..m} exp(−‖f − w_{j,t}‖² / σ),   output shape (N, C), values in (0, 1]

    ``centres`` has shape (C·m, D); rows j·m … j·m+m−1 belong to class j. ``init="keras"`` (default)
    draws them as the Keras reimplementation (github.com/koshian2/affinity-loss) does: its weight of shape
    (C, m, D) with ``he_normal``, whose fan-in is then C·m — a normal truncated at two standard deviations,
    scaled so the values' std is √(2/(C·m)) (≈ 0.45 for C = 10, m = 1). ``init="features"`` uses fan-in D
    instead (std √(2/D), 0.125 for D = 128: centres near the origin, far from 128-D BatchNorm'd features).
    """

    def __init__(self, in_features: int, num_classes: int, m: int = 1, sigma: float = 10.0, init: str = "keras"):
        super().__init__()
        self.num_classes, self.m, self.sigma = num_classes, m, float(sigma)
        self.centres = nn.Parameter(torch.empty(num_classes * m, in_features))
        fan_in = num_classes * m if init == "keras" else in_features
        std = math.sqrt(2.0 / fan_in) / 0.87962566103423978  # Keras' correction for the truncation
        nn.init.trunc_normal_(self.centres, std=std, a=-2 * std, b=2 * std)

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


@dataclass
class AffinityLossConfig(LossConfig):
    head_fields = ("m", "sigma")

    name: str = "affinity"
    m: int = 1  # centres per class
    sigma: float = 10.0  # Gaussian spread: d = exp(−‖f − w‖² / σ)
    lam: float = 0.75  # margin λ
    reg_weight: float = 1.0  # weight of the centre-spread regulariser R
    centre_init: str = "keras"  # keras: He-normal over fan-in C·m as the Keras reimplementation; features: over D

    def __post_init__(self):
        super().__post_init__()
        check(self.m >= 1, "loss.m", self.m, "an integer >= 1")
        check(self.sigma > 0, "loss.sigma", self.sigma, "a number > 0")
        check(self.lam >= 0, "loss.lam", self.lam, "a number >= 0")
        check(self.reg_weight >= 0, "loss.reg_weight", self.reg_weight, "a number >= 0")
        one_of("loss.centre_init", self.centre_init, ("keras", "features"))


@register(AffinityLossConfig)
class AffinityLoss(ImbalanceLoss):
    mixup_refusal = ("its batch loss adds the centre regulariser R to the per-sample margins, and a margin between "
                     "the affinities to two classes' centres has no mixed-label form in its paper or code")

    def __init__(self, cfg, class_counts):
        super().__init__(cfg, class_counts)
        self.m, self.sigma = int(cfg.m), float(cfg.sigma)
        self.lam, self.reg_weight = float(cfg.lam), float(cfg.reg_weight)
        self.head: AffinityHead | None = None

    def make_head(self, in_features, num_classes):
        self.head = AffinityHead(in_features, num_classes, m=self.m, sigma=self.sigma, init=self.cfg.centre_init)
        return self.head

    def margin_terms(self, d: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Σ_{j≠y} max(0, λ + d_j − d_y) per sample."""
        d_y = d.gather(1, targets[:, None])
        hinge = (self.lam + d - d_y).clamp_min(0.0)
        return hinge.scatter(1, targets[:, None], 0.0).sum(1)

    def forward(self, logits, targets):
        if self.head is None:
            raise RuntimeError("the affinity loss needs its head: build the model with make_head=loss.make_head")
        d = logits.float()
        return self.reduce(self.margin_terms(d, targets), targets) + self.reg_weight * self.head.centre_spread()

    def scores(self, logits):
        d = logits.float()
        return d.clamp_min(torch.finfo(d.dtype).tiny).log()
