"""Optimiser, which parameters it decays, and the per-step learning-rate schedule: linear warm-up, then
constant / multistep / cosine / fixmatch_cosine.

With k the step after warm-up and K the number of steps after warm-up:

- ``constant``: factor = 1 (e.g. USB's imbalanced SSL algorithms, whose ``ImbAlgorithmBase.set_optimizer`` sets
  no scheduler for CIFAR);
- ``cosine``: factor = (1 + cos(π k / K)) / 2 (SGDR, Loshchilov & Hutter 2017, one cycle without restart);
- ``fixmatch_cosine``: factor = cos(7π k / (16 K)) (FixMatch, Sohn et al. 2020, §4; USB's
  ``get_cosine_schedule_with_warmup`` with num_cycles = 7/16): it ends at cos(7π/16) ≈ 0.2, not 0.
"""

import math

import torch
from torch import nn

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def build_optimizer(params, cfg) -> torch.optim.Optimizer:
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


def exclude_norm_and_bias_from_decay(*modules: nn.Module) -> None:
    """Flag every normalisation-layer parameter and every bias ``no_weight_decay`` (``optim.decay_norm_and_bias
    = false``), as FixMatch and USB do (USB: ``'bn' in name or 'bias' in name``)."""
    for module in modules:
        for m in module.modules():
            for name, p in m.named_parameters(recurse=False):
                if isinstance(m, NORMS) or name == "bias":
                    p.no_weight_decay = True


def lr_factor(step: int, steps_per_epoch: int, epochs: int, cfg) -> float:
    """Multiplier of the base learning rate at a (0-based) optimisation step."""
    warmup_steps = cfg.warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    epoch = step // steps_per_epoch
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    progress = (step - warmup_steps) / max(1, epochs * steps_per_epoch - warmup_steps)  # k / K
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "fixmatch_cosine":
        return math.cos(7 * math.pi * progress / 16)
    return 1.0


def build_scheduler(optimizer, steps_per_epoch: int, epochs: int, cfg):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps_per_epoch, epochs, cfg))
