"""One precision and memory-format policy for training, evaluation and feature extraction: bf16 autocast
and channels_last on CUDA when the trainer config asks for them, plain float32 / contiguous elsewhere."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    device_type: str = "cpu"
    amp: bool = False  # bf16 autocast
    channels_last: bool = False

    @classmethod
    def of(cls, trainer_cfg, device: torch.device) -> Precision:
        cuda = device.type == "cuda"
        return cls(device.type, bool(trainer_cfg.amp and cuda), bool(trainer_cfg.channels_last and cuda))

    def autocast(self):
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.amp)

    def inputs(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float in [0, 1] in the policy's memory format (the model normalises)."""
        x = x_uint8.float().div_(255)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model
