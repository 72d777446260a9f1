"""``model.pretrained``: start a model from a state dict file the user has (nothing is downloaded).

The file is what ``torch.save(model.state_dict(), path)`` writes, read with ``weights_only=True``: a run's
``model.pt`` (the Classifier's names: ``backbone.*``, ``head.*``), or the backbone's own (torchvision's names for
resnet18: ``conv1.weight``, ``layer1.0.bn1.weight``, …, ``fc.*``, whose ``fc`` is the head's). A ``state_dict``
entry of a training checkpoint and DataParallel's ``module.`` prefix are unwrapped. Tensors whose shape differs
from the model's are skipped and logged — the final ``fc`` / head for another number of classes, the stem for
another image size or channel count — and so are the input normalisation's ``mean`` / ``std``, which come from
this run's training images. A key the model does not have means another architecture: refused.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from imbalance_lab.schema import ConfigError

log = logging.getLogger(__name__)

DATA_STATISTICS = ("mean", "std")  # buffers of the Classifier set from the training split, never loaded


def load_pretrained(model: nn.Module, path: str) -> dict[str, list[str]]:
    """Copy the file's tensors into ``model`` (a Classifier); returns the names loaded, skipped (shape) and left
    at their initialisation. Raises :class:`ConfigError` (``model.pretrained``) for a file it cannot use."""
    where = os.path.abspath(os.path.expanduser(path))
    try:
        state = torch.load(where, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling fails in many ways; each means the same to the user
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise ConfigError("model.pretrained", path, f"a state dict saved with torch.save ({where}: {reason})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError("model.pretrained", path, f"a state dict: names -> tensors ({where} holds a "
                                                    f"{type(state).__name__} that is not one)")
    own = model.state_dict()
    loaded, skipped, unknown, values = [], [], [], {}
    for key, tensor in state.items():
        key = key.removeprefix("module.")
        target = _target(key, own)
        if target is None:
            unknown.append(key)
        elif target in DATA_STATISTICS:
            continue
        elif tuple(own[target].shape) != tuple(tensor.shape):
            skipped.append(f"{key} {tuple(tensor.shape)} (the model's: {tuple(own[target].shape)})")
        else:
            values[target] = tensor
            loaded.append(target)
    if unknown or not loaded:
        shown = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise ConfigError("model.pretrained", path,
                          f"a state dict of this model ({where}: " + (f"names it does not have: {shown}" if unknown
                                                                       else "no tensor of it") + ")")
    model.load_state_dict(values, strict=False)
    left = [k for k in own if k not in values and k not in DATA_STATISTICS]
    log.info("model.pretrained: %d tensors loaded from %s", len(loaded), where)
    if skipped:
        log.warning("model.pretrained: skipped (shape differs): %s", "; ".join(skipped))
    if left:
        log.info("model.pretrained: left at their initialisation: %s", ", ".join(left))
    return {"loaded": loaded, "skipped": skipped, "initialised": left}


def _target(key: str, own: dict) -> str | None:
    """The model's name for the file's ``key``: its own, its backbone's, or the head for a backbone's ``fc``."""
    for name in (key, f"backbone.{key}", f"head.{key.removeprefix('fc.')}" if key.startswith("fc.") else None):
        if name in own:
            return name
    return None
