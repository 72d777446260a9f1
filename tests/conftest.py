"""Shared helpers. Runs happen in this process (compose + ``run_experiment``) unless a test needs what only
a process shows: an exit code, Hydra's own output and run folder, a launcher, resume after a kill."""

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Small, fast synthetic setting for run tests: 3 classes, 16x16 images, one epoch.
TINY = [
    "data=synthetic", "data.synthetic.num_classes=3", "data.synthetic.train_per_class=96",
    "data.synthetic.test_per_class=32", "data.synthetic.image_size=16", "data.imbalance=4",
    "trainer.epochs=1", "trainer.batch_size=32", "trainer.progress=false", "trainer.device=cpu",
]
# Threads are pinned: results on CPU depend on the thread count, and tiny runs are many times slower with
# two threads spinning on a busy 2-core machine. In this process: 2 (the CI machine's cores, one test at a
# time), 1 under pytest-xdist (a worker per core); in a CLI subprocess: 1.
IN_PROCESS_THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
CLI_ENV = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def slurm_unavailable() -> str | None:
    """Why the SLURM tests cannot run here (None: a node of the cluster takes jobs)."""
    import shutil

    if not shutil.which("sbatch"):
        return "needs SLURM (sbatch not found): start a one-node cluster with sudo bash scripts/slurm_local.sh start"
    state = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, check=False)
    if state.returncode or not {"idle", "mix", "alloc"} & set(state.stdout.split()):
        return ("needs a running SLURM with a node that takes jobs (sinfo: "
                f"{(state.stdout or state.stderr).strip() or 'no answer'}): sudo bash scripts/slurm_local.sh start")
    return None


# The files that take longest go first: pytest-xdist hands whole files to its workers in collection order, and
# a long file started last would keep one worker busy while the other idles.
LONGEST_FIRST = ["test_slurm.py", "test_sweeps.py", "test_cli.py", "test_reliability.py", "test_gpu_path.py",
                 "test_packaging.py", "test_compile.py"]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` (``pytest -m cuda``) need a CUDA GPU, those marked ``slurm`` a running SLURM: each is
    skipped, with the reason, where it is missing, so CI on a machine without them stays green. The longest
    files are collected first (``LONGEST_FIRST``)."""
    import torch

    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order

    needs = {"cuda": None if torch.cuda.is_available() else "needs a CUDA GPU"}
    if any("slurm" in item.keywords for item in items):
        needs["slurm"] = slurm_unavailable()
    for item in items:
        for mark, reason in needs.items():
            if reason and mark in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def pinned_threads():
    import torch

    torch.set_num_threads(IN_PROCESS_THREADS)


MIRROR_DATASETS = ["mnist", "cifar10"]  # what the real-data tests read


@pytest.fixture(scope="session")
def mirror() -> str:
    """The offline dataset mirror for the real-data tests: $IMBALANCE_LAB_DATA, else one in the user cache,
    built once from torchvision's downloads (``python -m imbalance_lab.mirror``; pytest-xdist workers wait for
    each other's build)."""
    root = os.environ.get("IMBALANCE_LAB_DATA")
    if root:
        return root
    import fcntl

    from imbalance_lab.data.sources import DatasetUnavailable, cache_home
    from imbalance_lab.mirror import build, complete

    folder = Path(cache_home()) / "mirror"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not complete(folder, MIRROR_DATASETS):
            try:
                build(folder, MIRROR_DATASETS)
            except DatasetUnavailable as exc:
                pytest.fail(f"IMBALANCE_LAB_DATA is not set and no mirror could be built in {folder} ({exc}): "
                            "point IMBALANCE_LAB_DATA at an offline dataset mirror (e.g. ../shared/data), or run "
                            "where the internet is reachable")
    return str(folder)


def run_cli(*args: str, module: str = "imbalance_lab", cwd: Path | None = None,
            timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m imbalance_lab ...`` (or another module) as a user runs it, in a subprocess."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or REPO, env={**os.environ, **CLI_ENV},
                          check=False, capture_output=True, text=True, timeout=timeout)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@contextmanager
def hydra_compose():
    """Hydra's compose API on the package's configs (what ``python -m imbalance_lab`` composes)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from imbalance_lab.app import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        yield lambda *overrides: compose("config", overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()


def compose_run(*overrides: str, compose=None):
    """(validated Config, resolved config dict without Hydra's part, loss option chosen) for the overrides;
    ``compose`` from :func:`hydra_compose` saves initialising Hydra again."""
    from omegaconf import OmegaConf, open_dict

    from imbalance_lab.configstore import validate

    if compose is None:
        with hydra_compose() as fresh:
            cfg = fresh(*overrides)
    else:
        cfg = compose(*overrides)
    option = cfg.hydra.runtime.choices.get("loss")
    with open_dict(cfg):
        del cfg["hydra"]
    return validate(cfg), OmegaConf.to_container(cfg, resolve=True), option


def run_in_process(out_dir: Path, *overrides: str) -> dict:
    """One run in this process (compose + ``run_experiment``); its metrics.json content."""
    from imbalance_lab.run import run_experiment

    config, resolved, option = compose_run(*overrides)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return run_experiment(config, Path(out_dir), resolved, loss_option=option)
