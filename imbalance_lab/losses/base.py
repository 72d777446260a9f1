"""The loss interface and registry.

A loss is built once per run from its config and ``class_counts`` (training images per class, from the
whole training split, never from a batch). Besides ``forward(logits, targets) -> mean loss`` it may
override ``scores`` (how logits become predictions, e.g. post-hoc logit adjustment) and ``start_epoch``
(schedules such as deferred re-weighting).
"""

from __future__ import annotations

import torch
from torch import nn

LOSSES: dict[str, type["ImbalanceLoss"]] = {}


def register(name: str):
    def add(cls):
        LOSSES[name] = cls
        return cls

    return add


class ImbalanceLoss(nn.Module):
    def __init__(self, cfg, class_counts: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("class_counts", class_counts.float())

    @property
    def num_classes(self) -> int:
        return self.class_counts.numel()

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Class scores used for prediction; argmax gives the predicted class."""
        return logits

    def start_epoch(self, epoch: int) -> None:
        """Called before each training epoch (0-based)."""

    def extra_metrics(self) -> dict:
        """Loss state worth keeping in the run's metrics file (e.g. a running class-prior estimate)."""
        return {}


def build_loss(cfg, class_counts) -> ImbalanceLoss:
    counts = torch.as_tensor(list(class_counts), dtype=torch.float32)
    return LOSSES[cfg.name](cfg, counts)
