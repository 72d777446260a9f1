"""Losses, one module each; ``build_loss`` makes one from its config and the training class counts."""

from .base import LOSSES, ImbalanceLoss, build_loss, register
from . import ce, focal, weighted_ce  # noqa: F401,E402  (importing registers them)

__all__ = ["LOSSES", "ImbalanceLoss", "build_loss", "register"]
