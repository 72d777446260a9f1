"""Affinity loss (Hayat et al., "Gaussian Affinity for Max-margin Class Imbalanced Learning", ICCV 2019,
arXiv 1901.07711; article 001). The head (:class:`~imbalance_lab.models.heads.AffinityHead`) holds C·m
learnable centres w_{j,t} and outputs Gaussian affinities instead of logits:

    d_j   = max_{t=1..m} exp(−‖f − w_{j,t}‖² / σ)
    L_mm  = Σ_{j≠y} max(0, λ + d_j − d_y)                       (max-margin term, per sample)
    R     = Var_{k<l} ‖w_k − w_l‖²   over all C·m centres        (population variance of the pairwise
                                                                  squared distances: uniform spread)
    L     = mean_i L_mm,i + reg_weight · R

Prediction is argmax_j d_j. ``scores`` returns log d_j (= −min_t ‖f − w_{j,t}‖² / σ), so the run's
probabilities softmax(scores) are d_j / Σ_k d_k — the affinities normalised to sum to one (a soft nearest-
centre rule) — and the argmax is that of d. d is floored at the smallest normal float before the log.

The loss keeps a reference to the head it built (the same module as ``model.head``) to compute R; the
trainer counts the shared centres once.
"""

import torch

from ..models.heads import AffinityHead
from .base import ImbalanceLoss, register


@register("affinity")
class AffinityLoss(ImbalanceLoss):
    def __init__(self, cfg, class_counts):
        super().__init__(cfg, class_counts)
        self.m, self.sigma = int(cfg.m), float(cfg.sigma)
        self.lam, self.reg_weight = float(cfg.lam), float(cfg.reg_weight)
        self.head: AffinityHead | None = None

    def make_head(self, in_features, num_classes):
        self.head = AffinityHead(in_features, num_classes, m=self.m, sigma=self.sigma)
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
