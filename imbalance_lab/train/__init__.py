"""Device-resident training: data on the device as uint8, batched augmentation, a short loop that trains
one model or a stack of them."""

from .precision import Precision
from .trainer import Member, TrainingFailed, evaluate, fit, fit_stack, resolve_device

__all__ = ["Member", "Precision", "TrainingFailed", "evaluate", "fit", "fit_stack", "resolve_device"]
