"""The FixMatch objective (Sohn et al., NeurIPS 2020) with DebiasPL's debiased pseudo-labels and adaptive
margin (Wang et al., "Debiased Learning from Naturally Imbalanced Pseudo-Labels", CVPR 2022), as the official
DebiasPL code computes them (github.com/frank-xwang/debiased-pseudo-labeling, ``main_DebiasPL.py``:
``causal_inference``, ``update_qhat`` and ``train``, single-view path without ``--eman``/``--CLDLoss``).

One forward over [labelled weak | unlabelled weak | unlabelled strong] gives logits z_x, z_w, z_s
(B, μB, μB rows; the trainer's FixMatch objective builds that batch). With τ = ``ssl.tau`` if ``ssl.debias``
else 0, q̂ the running marginal (q̂ = 1/C at the start):

    p̃_i  = softmax(z_w,i − τ log q̂)                     pseudo-label ŷ_i = argmax p̃_i, mask_i = [max p̃_i ≥ t]
    q̂   ← m q̂ + (1 − m) · mean_i softmax(z_w,i)          (detached, m = ``ssl.qhat_momentum``, after the mask)
    L_u  = mean_i mask_i · CE(z_s,i + τ log q̂, ŷ_i)       (mean over all μB unlabelled images; q̂ updated)
    L    = L_x(z_x, y) + λ_u L_u

L_x is the configured supervised loss (``loss=ce``: the official code's cross-entropy). With τ = 0 this is
FixMatch exactly; q̂ is tracked then too, as a diagnostic of the model's marginal. q̂ is updated only when the
loss runs with gradients enabled (training). The pseudo-labels of the last step stay in ``last`` (detached)
for the diagnostics, which score them against the unlabelled images' hidden labels; this loss never sees those.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..schema import SSLConfig
from .base import ImbalanceLoss


def debiased_pseudo_labels(z_weak: torch.Tensor, q_hat: torch.Tensor, tau: float, threshold: float):
    """(pseudo-labels, mask): argmax and [max ≥ threshold] of softmax(z − τ log q̂) (``causal_inference``)."""
    probs = (z_weak - tau * q_hat.log()).softmax(dim=1)
    confidence, labels = probs.max(dim=1)
    return labels, confidence >= threshold


class FixMatchLoss(nn.Module):
    """L_x + λ_u L_u over [labelled | unlabelled weak | unlabelled strong] logits; ``targets`` are the B labels
    of the labelled rows. Predictions (``scores``), the head and the epoch schedule are the supervised loss's."""

    def __init__(self, supervised: ImbalanceLoss, cfg: SSLConfig):
        super().__init__()
        self.supervised = supervised
        self.tau = float(cfg.tau) if cfg.debias else 0.0
        self.threshold, self.lambda_u, self.momentum = float(cfg.threshold), float(cfg.lambda_u), cfg.qhat_momentum
        c = supervised.num_classes
        self.register_buffer("q_hat", torch.full((c,), 1.0 / c))
        self.last: dict[str, torch.Tensor] = {}

    @property
    def num_classes(self) -> int:
        return self.supervised.num_classes

    def make_head(self, in_features: int, num_classes: int) -> nn.Module:
        return self.supervised.make_head(in_features, num_classes)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return self.supervised.scores(logits)

    def start_epoch(self, epoch: int) -> None:
        self.supervised.start_epoch(epoch)

    def extra_metrics(self) -> dict:
        return self.supervised.extra_metrics() | {"q_hat_final": self.q_hat.tolist()}

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        b = len(targets)
        z_w, z_s = logits[b:].float().chunk(2)
        loss_x = self.supervised(logits[:b], targets)
        z_w = z_w.detach()
        pseudo, mask = debiased_pseudo_labels(z_w, self.q_hat, self.tau, self.threshold)
        if torch.is_grad_enabled():
            with torch.no_grad():
                self.q_hat.mul_(self.momentum).add_(z_w.softmax(dim=1).mean(0), alpha=1.0 - self.momentum)
        per_image = F.cross_entropy(z_s + self.tau * self.q_hat.log(), pseudo, reduction="none")
        loss_u = (per_image * mask).mean()
        self.last = {"pseudo": pseudo, "mask": mask, "loss_x": loss_x.detach(), "loss_u": loss_u.detach()}
        return loss_x + self.lambda_u * loss_u
