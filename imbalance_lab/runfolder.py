"""What a run leaves in its folder. ``metrics.json`` is written atomically (temp file + rename), so an
interrupted run never leaves a file that looks finished; a sweep re-run skips folders whose file says done."""

from __future__ import annotations

import hashlib
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from .atomic import atomic_write

METRICS_FILE = "metrics.json"
MAX_DIRNAME_BYTES = 200  # file systems allow 255 bytes per path component


def run_dirname(override_dirname: str) -> str:
    """A sweep job's folder name (``hydra.sweep.subdir``): its overrides, as one safe path component.

    ``/`` becomes ``%2F`` (a value cannot nest or escape folders), and a name too long for the file system
    keeps its first ~190 bytes plus a hash of the whole, so the same overrides always map to the same folder
    (what lets a re-run of a sweep skip finished runs). The full overrides are in ``.hydra/overrides.yaml``.
    """
    name = str(override_dirname).replace("/", "%2F")
    raw = name.encode()
    if len(raw) <= MAX_DIRNAME_BYTES:
        return name
    digest = hashlib.sha1(raw).hexdigest()[:12]
    return raw[: MAX_DIRNAME_BYTES - 13].decode(errors="ignore") + "~" + digest


def register_resolvers() -> None:
    """``${run_dirname:...}`` for configs/hydra/default.yaml; registered when this module is imported."""
    if not OmegaConf.has_resolver("run_dirname"):
        OmegaConf.register_new_resolver("run_dirname", run_dirname)


register_resolvers()


def write_json_atomic(path: Path, obj) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, allow_nan=True).encode()))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def save_npz_atomic(path: Path, **arrays) -> None:
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def read_metrics(run_dir: Path) -> dict | None:
    """The run's metrics, or None if it has no readable metrics file (never finished, or corrupt: unreadable,
    not JSON, or JSON that is not an object)."""
    try:
        metrics = json.loads((Path(run_dir) / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def is_done(run_dir: Path) -> bool:
    metrics = read_metrics(run_dir)
    return bool(metrics) and metrics.get("status") == "done"


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("imbalance_lab", "torch", "torchvision", "hydra-core", "omegaconf", "numpy", "scikit-learn",
                 "pandas"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def os_error_behind(exc: BaseException) -> OSError | None:
    """The operating-system error an exception comes from, if any (raised as it, or chained under it: a
    library that failed to write wraps the ``OSError`` of the full disk)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of an exception, for a run's recorded reason; for an I/O failure its root cause (a
    full disk shows as ``OSError: [Errno 28] No space left on device``, not as the error of the library that
    was writing)."""
    exc = os_error_behind(exc) or exc
    message = " ".join(str(exc).split())[:500]
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
