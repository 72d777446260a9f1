"""Losses, one module each (config dataclass + loss class, registered together); ``build_loss`` makes one from
its config and the training class counts. Every module in this package is imported here, so a new loss is
found by dropping its module in."""

import importlib
import pkgutil

from .base import LOSSES, ImbalanceLoss, build_loss, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["LOSSES", "ImbalanceLoss", "build_loss", "register"]
