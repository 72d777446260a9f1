"""What a run leaves in its folder. ``metrics.json`` is written atomically (temp file + rename), so an
interrupted run never leaves a file that looks finished; a sweep re-run skips folders whose file says done."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

METRICS_FILE = "metrics.json"


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, allow_nan=True).encode()))


def save_npz_atomic(path: Path, **arrays) -> None:
    _atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def read_metrics(run_dir: Path) -> dict | None:
    """The run's metrics, or None if it has no readable metrics file (never finished, or corrupt)."""
    try:
        return json.loads((Path(run_dir) / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None


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
