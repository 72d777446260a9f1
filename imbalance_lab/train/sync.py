"""Host synchronisation: waiting for the device where a time is taken, and never inside the step loop.

A CUDA step loop runs ahead of the host as long as nothing asks for a value (``.item()``, ``bincount``,
``nonzero``, indexing with a boolean mask, ...) or copies host data to the device (``torch.tensor([...],
device=...)``): each such call stalls the queue. ``trainer.sync_check=true``
makes any such call in the step loop an error, on either device:

- CUDA: ``torch.cuda.set_sync_debug_mode("error")`` for the loop (PyTorch's own detector);
- CPU: :class:`HostSyncCheck`, a dispatch mode that raises on the operators that synchronise on CUDA, so
  the same step loop can be checked without a GPU. PyTorch's optimisers read their step counters with
  ``.item()``; those counters live on the host on every device (no device sync), so calls made from
  ``torch.optim`` are exempt.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager, nullcontext

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# operators whose result needs a value from the device: on CUDA they wait for the queue
SYNCING = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten.bincount, aten._unique,
           aten._unique2, aten.unique_dim, aten.unique_consecutive, aten.equal, aten.is_nonzero, aten.histc}
# a tensor made from host data (``torch.tensor([...], device=...)``): on CUDA a synchronous host-to-device copy
# (a 0-dim one, e.g. from ``t[i] = 1.0``, is passed to CUDA kernels as a scalar: no copy)
HOST_DATA = aten.lift_fresh
# indexing ops that sync when an index is a boolean mask (they call nonzero)
MASK_INDEXED = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timings must include it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


OPTIM_DIR = os.path.dirname(torch.optim.__file__)


def _from_optimizer() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith(OPTIM_DIR):
            return True
        frame = frame.f_back
    return False


class HostSyncCheck(TorchDispatchMode):
    """Raises on an operator that would wait for the device on CUDA (module docstring)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        masked = packet in MASK_INDEXED and any(
            isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
            for i in (args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else []))
        copied = packet is HOST_DATA and args[0].dim() > 0
        if (packet in SYNCING or masked or copied) and not _from_optimizer():
            raise RuntimeError(f"trainer.sync_check: {func} waits for the device inside the step loop")
        return func(*args, **(kwargs or {}))


@contextmanager
def _cuda_sync_errors():
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


def no_host_sync(device: torch.device, enabled: bool):
    """The context the step loop runs in: with ``enabled``, a host sync inside it raises."""
    if not enabled:
        return nullcontext()
    return _cuda_sync_errors() if device.type == "cuda" else HostSyncCheck()
