"""Which code made a run's numbers (``metrics.json`` ``code``): the package version and, when the package is
imported from a git checkout of it, the commit, whether tracked files differed from it (``dirty``: untracked
files such as run outputs do not count) and the SHA-256 of that difference (``git diff HEAD``), so two dirty
runs can be told apart. An installed package (site-packages) has no commit: ``git`` is then null."""

from __future__ import annotations

import hashlib
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=30, check=False)


def git_state(package_dir: Path = PACKAGE_DIR) -> dict | None:
    """``{"commit", "dirty", "diff_sha256"}`` of the checkout ``package_dir`` is tracked in, or None (not a git
    checkout, no git, or a folder the enclosing repository does not track — a virtual environment inside some
    other repository)."""
    try:
        top = _git(package_dir, "rev-parse", "--show-toplevel")
        if top.returncode:
            return None
        root = Path(top.stdout.decode().strip())
        tracked = _git(root, "ls-files", "--error-unmatch", "--", str(package_dir / "__init__.py"))
        head = _git(root, "rev-parse", "HEAD")
        if tracked.returncode or head.returncode:
            return None
        diff = _git(root, "diff", "HEAD", "--binary").stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.decode().strip(), "dirty": bool(diff),
            "diff_sha256": hashlib.sha256(diff).hexdigest() if diff else None}


def code_version(package_dir: Path = PACKAGE_DIR) -> dict:
    try:
        package = version("imbalance_lab")
    except PackageNotFoundError:
        package = None
    return {"package_version": package, "git": git_state(package_dir)}


def describe(code: dict | None) -> str | None:
    """One short label: ``0.1.0 @ 3a5158c1d2`` (``+dirty 1f2e3d4c`` when tracked files differed), or None."""
    if not isinstance(code, dict):
        return None
    git = code.get("git") if isinstance(code.get("git"), dict) else None
    label = str(code.get("package_version") or "?")
    if git and git.get("commit"):
        label += f" @ {str(git['commit'])[:10]}"
        if git.get("dirty"):
            label += f" +dirty {str(git.get('diff_sha256') or '')[:8]}"
    return label
