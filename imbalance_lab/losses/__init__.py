"""Losses, one module each; ``build_loss`` makes one from its config and the training class counts."""

from . import affinity, cb, ce, debiased, focal, ldam, logit_adjusted, weighted_ce  # noqa: F401
from .base import LOSSES, ImbalanceLoss, build_loss, register

__all__ = ["LOSSES", "ImbalanceLoss", "build_loss", "register"]
