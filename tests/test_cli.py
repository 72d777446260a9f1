"""Runs end to end: the command line in a subprocess where the process is what is tested (exit codes,
Hydra's run folder and messages), in process (compose + run_experiment) otherwise."""

import json

import numpy as np
import pytest
from conftest import IN_PROCESS_THREADS, TINY, compose_run, read_json, run_cli, run_in_process
from sklearn.metrics import f1_score

from imbalance_lab.schema import ConfigError


def test_tiny_run_writes_done_metrics(tmp_path):
    run_dir = tmp_path / "run"
    # from another working directory: configs are found through the package
    proc = run_cli(*TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["status"] == "done"
    assert metrics["data"]["class_counts"]["train"] == [96, 48, 24]
    assert len(metrics["history"]) == 1 and np.isfinite(metrics["history"][0]["loss"])
    assert metrics["headline"].startswith("last-epoch")
    assert len(metrics["data"]["fingerprint"]) == 16
    assert metrics["versions"]["torch"]
    # the reported macro F1 is scikit-learn's on the saved predictions
    pred = np.load(run_dir / "predictions.npz")
    assert metrics["test"]["macro_f1"] == pytest.approx(f1_score(pred["y_true"], pred["y_pred"], average="macro"))
    for name in ("confusion.png", ".hydra/config.yaml", ".hydra/overrides.yaml"):
        assert (run_dir / name).stat().st_size > 0
    assert "macro F1" in proc.stdout + proc.stderr


def test_same_seed_same_numbers_on_cpu(tmp_path):
    runs = [run_in_process(tmp_path / name, *TINY) for name in ("a", "b")]
    assert runs[0]["history"][0]["loss"] == runs[1]["history"][0]["loss"]
    assert runs[0]["test"] == runs[1]["test"]


BAD_VALUES = [
    ("loss.gamma=-1", "loss.gamma"),
    ("data.imbalance=0.5", "data.imbalance"),
    ("data.imbalance=500", "data.imbalance"),  # 96 images per class: r=500 empties the smallest class
    ("trainer.epochs=0", "trainer.epochs"),
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("model.name=vgg", "model.name"),
]


@pytest.mark.parametrize("override, key", BAD_VALUES)
def test_bad_value_is_one_clear_line(override, key):
    extra = ["loss=focal"] if override.startswith("loss.") else []
    with pytest.raises(ConfigError) as err:
        compose_run(*TINY, *extra, override)
    assert err.value.key == key and str(err.value).startswith(f"{key}=")
    assert len(str(err.value).splitlines()) == 1


def test_bad_value_stops_the_command_with_one_line_and_exit_code_2(tmp_path):
    proc = run_cli(*TINY, "loss=focal", "loss.gamma=-1", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: loss.gamma="), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "predictions.npz").exists()  # no work done


@pytest.mark.parametrize("override, needle", [
    ("loss=nosuch", "loss"),
    ("data.imbalance=abc", "data.imbalance"),
    ("trainer.epoch=3", "epoch"),
])
def test_unknown_or_mistyped_value_fails_at_compose_time(override, needle):
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    with pytest.raises((HydraException, OmegaConfBaseException)) as err:
        compose_run(*TINY, override)
    assert needle in str(err.value)


def test_compose_error_stops_the_command_without_a_traceback(tmp_path):
    proc = run_cli(*TINY, "trainer.epoch=3", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert "epoch" in proc.stderr and "Traceback" not in proc.stderr


def test_cuda_without_gpu_is_refused():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="^trainer.device='cuda' is not allowed"):
        compose_run(*TINY, "trainer.device=cuda")


def test_diverging_loss_ends_failed(tmp_path):
    proc = run_cli(*TINY, "optim=sgd", "optim.lr=1e30", "optim.warmup_epochs=0", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 1
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["status"] == "failed"
    assert "nan" in metrics["reason"] or "inf" in metrics["reason"]


@pytest.mark.slow
def test_real_mnist_run(tmp_path, mirror):
    """A short run on real MNIST digits 0-3 (0 and 2 reduced 100x) learns: macro F1 well above chance."""
    metrics = run_in_process(tmp_path, "data=mnist_even", "model=cnn_mnist", "data.imbalance=100",
                             "data.classes=[0,1,2,3]", "data.reduced_classes=[0,2]", "trainer.epochs=1",
                             "trainer.progress=false", "trainer.device=cpu")
    assert metrics["status"] == "done"
    assert metrics["data"]["class_counts"]["train"] == [60, 6742, 60, 6131]
    assert metrics["data"]["class_counts"]["test"] == [10, 1135, 10, 1010]
    assert "MNIST" in metrics["dataset"]
    assert metrics["test"]["macro_f1"] > 0.5


def test_embedding_plot_with_affinity_centres(tmp_path):
    metrics = run_in_process(tmp_path, *TINY, "loss=affinity", "loss.m=2", "model.embedding_dim=2")
    pred = np.load(tmp_path / "predictions.npz")
    assert pred["features"].shape == (len(pred["y_true"]), 2)
    assert (tmp_path / "embedding.png").stat().st_size > 10_000
    assert metrics["status"] == "done"


def test_a_run_records_the_loss_option_it_was_given(tmp_path):
    """metrics.json names the option chosen (``affinity_m5``, whose loss.name is ``affinity``), the ratio and
    the dataset."""
    metrics = run_in_process(tmp_path, *TINY, "loss=affinity_m5")
    assert metrics["status"] == "done" and metrics["config"]["loss"]["name"] == "affinity"
    assert (metrics["method"], metrics["imbalance"], metrics["data"]["name"]) == ("affinity_m5", 4.0, "synthetic")
    # the thread count used is part of the recorded config (on CPU the numbers depend on it)
    assert metrics["config"]["trainer"]["threads"] == metrics["device"]["threads"] == IN_PROCESS_THREADS
    assert read_json(tmp_path / "metrics.json") == json.loads(json.dumps(metrics))
