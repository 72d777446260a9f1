"""One precision and memory-format policy for training, evaluation and feature extraction, the same
arithmetic on every device and in both stack engines.

``trainer.amp`` (bf16 compute) and ``trainer.channels_last`` mean the same on a CPU and a GPU; left null they
are on for CUDA and off elsewhere. Mixed precision is not ``torch.autocast``: autocast's casts depend on the
device and on the dispatch path (CUDA autocast casts convolutions inside ``vmap``, CPU autocast does not, and
functorch's batch-norm rule then mixed bf16 weights with float32 running statistics and crashed), so a CPU
test could not run the arithmetic a GPU runs. The policy is instead a ``TorchFunctionMode`` that casts
explicitly, wherever the call comes from (a module, ``functional_call`` under ``vmap``, ``torch.compile``):

- convolutions and ``F.linear``: input, weight and bias cast to bf16 (the float32 parameters stay the
  master weights; their gradients come back in float32 through the cast), output bf16;
- batch / layer / group norm: computed in float32 (input cast up, float32 affine weights and running
  statistics), output cast back to the input's dtype;
- everything else runs in the dtype it is given. Model outputs are cast to float32 before any loss
  (:meth:`Precision.logits`); heads that need float32 (the cosine and affinity heads) compute with ``@`` on
  float tensors, which the policy leaves alone.

channels_last: the model's 4-D weights and the input batch are laid out channels-last (NHWC); a vmapped
stack lays its stacked batch (K, N, C, H, W) out as (N, H, W, K, C), which is what functorch's grouped
convolution over the K members reads as channels-last. Layouts of later activations inside ``vmap`` are
then up to functorch's batching rules.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

LOW_PRECISION = torch.bfloat16
CAST_DOWN = {F.conv1d, F.conv2d, F.conv3d, F.linear}  # (input, weight, bias, ...) computed in bf16
FLOAT32 = {F.batch_norm, F.layer_norm, F.group_norm}  # computed in float32, output in the input's dtype


def _down(t):
    return t.to(LOW_PRECISION) if isinstance(t, torch.Tensor) and t.is_floating_point() else t


class BF16Compute(TorchFunctionMode):
    """Convolutions and linear layers in bf16, normalisation layers in float32 (module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in CAST_DOWN:
            args = tuple(_down(a) if i < 3 else a for i, a in enumerate(args))
            if "bias" in kwargs:
                kwargs = kwargs | {"bias": _down(kwargs["bias"])}
            return func(*args, **kwargs)
        if func in FLOAT32:
            x = args[0]
            return func(x.float(), *args[1:], **kwargs).to(x.dtype)
        return func(*args, **kwargs)


@dataclass(frozen=True)
class Precision:
    amp: bool = False  # bf16 convolutions and linear layers (BF16Compute)
    channels_last: bool = False

    @classmethod
    def of(cls, trainer_cfg, device: torch.device) -> Precision:
        """``trainer.amp`` / ``trainer.channels_last``; null = on for CUDA, off elsewhere."""
        default = device.type == "cuda"
        amp, channels_last = trainer_cfg.amp, trainer_cfg.channels_last
        return cls(default if amp is None else bool(amp), default if channels_last is None else bool(channels_last))

    def compute(self):
        """The context every forward pass runs in."""
        return BF16Compute() if self.amp else nullcontext()

    def inputs(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float in [0, 1] in the policy's memory format (the model normalises)."""
        x = x_uint8.float().div_(255)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def stacked_inputs(self, xs_uint8: torch.Tensor) -> torch.Tensor:
        """A vmapped stack's batch (K, N, C, H, W) uint8 -> float in [0, 1]; channels-last as (N, H, W, K, C)."""
        x = xs_uint8.float().div_(255)
        if self.channels_last and x.dim() == 5:
            x = x.permute(1, 3, 4, 0, 2).contiguous().permute(3, 0, 4, 1, 2)
        return x

    @staticmethod
    def logits(out: torch.Tensor) -> torch.Tensor:
        """Model outputs as every loss takes them: float32."""
        return out.float()

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def describe(self) -> dict:
        return {"amp": self.amp, "compute_dtype": "bfloat16" if self.amp else "float32",
                "channels_last": self.channels_last}
