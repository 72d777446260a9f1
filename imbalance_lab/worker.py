"""Worker processes of the local parallel launchers (``hydra/launcher=parallel``, the stacked launcher's
``n_jobs``): each ends with the sweep's main process, and each can be pinned to one GPU of the machine.

A run in a worker process of a parallel launcher (joblib's loky workers: ``hydra/launcher=parallel``, the
stacked launcher's ``n_jobs``) ends when the sweep's main process dies: a killed sweep leaves no workers
computing or idling, holding memory, and a resumed sweep never runs a job twice at once. The run it was
doing is left unfinished (no metrics.json) and continues from its checkpoint when the sweep is resumed."""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
_watching = False


def in_worker() -> bool:
    """Whether this process is a worker started by a launcher through multiprocessing (joblib's loky)."""
    return multiprocessing.parent_process() is not None


def end_with_parent() -> None:
    """In a multiprocessing worker, start (once) a daemon thread that exits the process when its parent is
    gone (the worker is then re-parented). A process started otherwise — a shell's, a SLURM job — is left
    alone: it must outlive whatever started it."""
    global _watching
    if _watching or multiprocessing.parent_process() is None:
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()
    _watching = True


# ----------------------------------------------------------------------------- one GPU per worker
GPUS_ENV, SLOTS_ENV = "IMBALANCE_LAB_GPUS", "IMBALANCE_LAB_GPU_SLOTS"
_claimed: tuple[int, str] | None = None


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries: that variable's list where it is set,
    else every device the driver reports (none without CUDA)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "").strip():
        return [g.strip() for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    # counted without initialising CUDA in this process (its children must pick their devices first)
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return [str(i) for i in range(len(list(proc.iterdir())))]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]  # NVML where it can


@contextmanager
def gpus_for_workers(gpus, slots_dir: Path):
    """In a launcher's process, around starting its workers: workers (and this process) claim their GPUs from
    ``gpus`` (a list of ``CUDA_VISIBLE_DEVICES`` entries; None = :func:`visible_gpus`) with :func:`claim_gpu`,
    one slot each, round-robin, through files in ``slots_dir``. No GPUs, nothing to claim."""
    chosen = [str(g) for g in gpus] if gpus is not None else visible_gpus()
    before = {k: os.environ.get(k) for k in (GPUS_ENV, SLOTS_ENV)}
    if chosen:
        slots_dir.mkdir(parents=True, exist_ok=True)
        os.environ[GPUS_ENV], os.environ[SLOTS_ENV] = ",".join(chosen), str(slots_dir)
    try:
        yield chosen
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def claim_gpu() -> tuple[int, str] | None:
    """In a worker (or the launcher's own process) of a launcher that assigns GPUs: claim the lowest free slot
    k (a file ``<slots>/<k>`` holding this process's id; a dead process's slot is free again) and pin this
    process to GPU ``gpus[k % len(gpus)]`` by setting ``CUDA_VISIBLE_DEVICES`` — before CUDA is initialised,
    so several workers may share a GPU when there are more workers than GPUs. Once per process; (slot, GPU),
    or None where no GPUs are assigned."""
    global _claimed
    if _claimed is not None or not os.environ.get(GPUS_ENV):
        return _claimed
    gpus, slots = os.environ[GPUS_ENV].split(","), Path(os.environ[SLOTS_ENV])
    slot = 0
    while True:
        path = slots / str(slot)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _alive(path):
                slot += 1
                continue
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        break
    gpu = gpus[slot % len(gpus)]
    import torch

    if torch.cuda.is_initialized():  # too late to pin: say so rather than pretend
        log.warning("CUDA was initialised before this worker was given GPU %s (slot %d): it keeps its device",
                    gpu, slot)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    atexit.register(lambda: path.unlink(missing_ok=True))
    _claimed = (slot, gpu)
    return _claimed


def claimed() -> tuple[int, str] | None:
    """This process's (slot, GPU), if it claimed one."""
    return _claimed


def _alive(path: Path) -> bool:
    try:
        pid = int(path.read_text() or 0)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError, FileNotFoundError):
        return False
    except PermissionError:  # another user's process: alive
        return True
    return pid != 0
