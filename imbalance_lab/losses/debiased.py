"""Adaptive-margin (debiased) loss, supervised form of DebiasPL (Wang et al., "Debiased Learning from
Naturally Imbalanced Pseudo-Labels", CVPR 2022; github.com/frank-xwang/debiased-pseudo-labeling):

    q̂ ← μ q̂ + (1 − μ) · mean_i softmax(z_i)      (running estimate of the predicted class marginal,
                                                     q̂ = 1/C at the start; z detached)
    L  = −log softmax(z + λ log q̂)_y               (q̂ after this batch's update)

Classes the model over-predicts (large q̂_c) get a larger logit here, hence a larger margin to beat.
q̂ is updated only when the loss is called with gradients enabled (training), never under
``torch.no_grad``. Predictions use the plain logits z by default: the paper's debiased prediction
z − λ log q̂ is for pseudo-labels; ``debias_scores: true`` uses it for test predictions too.

λ defaults to 0.5: the official DebiasPL code (github.com/frank-xwang/debiased-pseudo-labeling) defaults to
1.0 and its released training scripts pass 0.4; 0.5 sits in that range and was not tuned here. Set
``loss.lam=0.4`` or ``1.0`` to match the source.

``extra_metrics`` reports ``q_hat_history`` (q̂ at the start of every epoch: entry 0 is the uniform
initial value, entry k the value after k epochs) and ``q_hat_final`` (after the last step).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..schema import LossConfig, check
from .base import ImbalanceLoss, register


@dataclass
class DebiasedLossConfig(LossConfig):
    name: str = "debiased"
    lam: float = 0.5  # λ: CE(z + λ log q̂, y)
    momentum: float = 0.999  # μ of the running mean q̂ of softmax(z)
    debias_scores: bool = False  # true: predict argmax(z − λ log q̂) instead of argmax z

    def __post_init__(self):
        super().__post_init__()
        check(self.lam >= 0, "loss.lam", self.lam, "a number >= 0")
        check(0 <= self.momentum < 1, "loss.momentum", self.momentum, "a number in [0, 1)")


@register(DebiasedLossConfig)
class DebiasedLoss(ImbalanceLoss):
    mixup_refusal = ("each batch also updates q̂, its estimate of the predicted class marginal, which mixed images "
                     "would bias (DebiasPL defines it on the training images)")

    def __init__(self, cfg, class_counts):
        super().__init__(cfg, class_counts)
        self.lam, self.momentum = float(cfg.lam), float(cfg.momentum)
        self.debias_scores = bool(cfg.debias_scores)
        c = len(class_counts)
        self.register_buffer("q_hat", torch.full((c,), 1.0 / c))
        self.q_hat_history: list[list[float]] = []

    @torch.no_grad()
    def update(self, logits: torch.Tensor) -> None:
        batch_marginal = logits.detach().float().softmax(dim=1).mean(0)
        self.q_hat.mul_(self.momentum).add_(batch_marginal, alpha=1.0 - self.momentum)

    def forward(self, logits, targets):
        z = logits.float()
        if torch.is_grad_enabled():
            self.update(z)
        adjusted = z + self.lam * self.q_hat.log()
        return self.reduce(F.cross_entropy(adjusted, targets, reduction="none"), targets)

    def scores(self, logits):
        return logits - self.lam * self.q_hat.log() if self.debias_scores else logits

    def start_epoch(self, epoch):
        super().start_epoch(epoch)
        if len(self.q_hat_history) <= epoch:  # not again when a run resumes inside the epoch
            self.q_hat_history.append(self.q_hat.tolist())

    def get_extra_state(self):  # kept in state_dict(), so a checkpoint carries the history too
        return {"q_hat_history": self.q_hat_history}

    def set_extra_state(self, state):
        self.q_hat_history = [list(q) for q in state["q_hat_history"]]

    def extra_metrics(self):
        return {"q_hat_history": list(self.q_hat_history), "q_hat_final": self.q_hat.tolist()}
