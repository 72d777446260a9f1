"""Device-resident training: data on the device as uint8, batched augmentation, a short loop."""

from .precision import Precision
from .trainer import TrainingFailed, evaluate, fit, resolve_device

__all__ = ["Precision", "TrainingFailed", "evaluate", "fit", "resolve_device"]
