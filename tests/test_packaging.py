"""The package as a user installs it: a built wheel carries the configs, installs non-editable into a fresh
environment and runs from a directory outside the checkout, with a user's own config folder beside the
package's."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import CLI_ENV, REPO, TINY, read_json

TINY_DATA = """\
# a data variant in the user's folder, built on the package's data=synthetic
defaults:
  - synthetic
synthetic:
  num_classes: 3
  train_per_class: 96
  test_per_class: 32
  image_size: 16
imbalance: 4
"""
USER_EXPERIMENT = """\
# @package _global_
defaults:
  - override /data: tiny_synthetic
  - override /loss: focal
loss:
  gamma: 1.0
trainer:
  epochs: 1
  batch_size: 32
  progress: false
  device: cpu
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel built from this checkout installed, not editable. Its dependencies (torch,
    Hydra, ...) come from the test's own environment through a path file, so no second torch is installed;
    that path entry does not run the environment's own .pth files, so the checkout's editable install is not
    visible there."""
    root = tmp_path_factory.mktemp("install")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(root / "dist"), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = (root / "dist").glob("imbalance_lab-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--quiet", str(wheel)], check=True, capture_output=True, timeout=300)
    return venv


def run_installed(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | CLI_ENV
    return subprocess.run([str(venv / "bin" / "imbalance-lab"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_the_wheel_carries_every_config_and_the_published_numbers(installed):
    (wheel,) = (installed.parent / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"imbalance_lab/configs/{p.relative_to(REPO / 'configs')}" for p in (REPO / "configs").rglob("*.yaml")}
    assert configs and configs <= names
    assert "imbalance_lab/reference/published.csv" in names
    assert "hydra_plugins/imbalance_lab_launcher/stacked_launcher.py" in names


def test_an_installed_wheel_runs_outside_the_checkout_with_a_users_config_folder(installed, tmp_path):
    where = subprocess.run([str(installed / "bin" / "python"), "-c",
                            "import imbalance_lab.app as a; print(a.__file__); print(a.CONFIG_DIR)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    module, configs = where.stdout.split()
    assert module.startswith(str(installed)) and configs.startswith(str(installed)), where.stdout

    done = run_installed(installed, *TINY, f"hydra.run.dir={tmp_path / 'plain'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_json(tmp_path / "plain" / "metrics.json")["status"] == "done"

    mine = tmp_path / "my_configs"
    (mine / "data").mkdir(parents=True)
    (mine / "experiment").mkdir()
    (mine / "data" / "tiny_synthetic.yaml").write_text(TINY_DATA)
    (mine / "experiment" / "my_focal.yaml").write_text(USER_EXPERIMENT)
    # (--config-dir <folder> adds it to the search path as hydra.searchpath=[file://<folder>] does)
    done = run_installed(installed, "--config-dir", str(mine), "experiment=my_focal",
                         f"hydra.run.dir={tmp_path / 'mine'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = read_json(tmp_path / "mine" / "metrics.json")
    assert metrics["status"] == "done" and metrics["method"] == "focal"
    assert metrics["config"]["loss"]["gamma"] == 1.0 and metrics["data"]["class_counts"]["train"] == [96, 48, 24]

