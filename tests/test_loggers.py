"""Watching runs and knowing what made them: live loggers (read back with the libraries themselves), the code
version and tags in metrics.json and the summary, and the debug modes."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import REPO, TINY, compose_run, hydra_compose, run_in_process
from test_compare import make_run

from imbalance_lab import loggers, report
from imbalance_lab.provenance import describe, git_state
from imbalance_lab.run import Job, run_stack
from imbalance_lab.schema import LoggerConfig
from imbalance_lab.train.trainer import debug_limits

EPOCHS = [*TINY, "trainer.epochs=3", "trainer.eval_every=2"]  # evaluated after epochs 2 and 3, not 1


def logged_scalars(history: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """What every logger should have seen per epoch: the history's numbers, by name."""
    out: dict[str, list[tuple[int, float]]] = {}
    for record in history:
        for key, value in loggers.scalars({k: v for k, v in record.items() if k != "epoch"}).items():
            out.setdefault(key, []).append((record["epoch"], value))
    return out


def test_one_name_per_logger_in_the_registry_the_schema_and_the_configs():
    fields = [f.name for f in dataclasses.fields(LoggerConfig)]
    files = sorted(p.stem for p in (REPO / "configs" / "logger").glob("*.yaml"))
    assert list(loggers.LOGGERS) == fields and files == sorted([*fields, "many"])


def test_tensorboard_csv_and_mlflow_hold_each_epoch_of_the_history(tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    metrics = run_in_process(run, *EPOCHS, "logger=[tensorboard,csv,mlflow]", "tags=[baseline,tiny]")
    assert metrics["status"] == "done" and metrics["tags"] == ["baseline", "tiny"]
    wanted = logged_scalars(metrics["history"])
    assert "test_macro_f1" in wanted and [e for e, _ in wanted["test_macro_f1"]] == [2, 3]

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    for key, values in wanted.items():  # TensorBoard keeps float32
        assert [(s.step, pytest.approx(s.value, rel=1e-6)) for s in events.Scalars(key)] == values, key
    assert events.Scalars("final/macro_f1")[0].value == pytest.approx(metrics["test"]["macro_f1"], rel=1e-6)

    table = pd.read_csv(run / "epochs.csv")
    assert table["epoch"].tolist() == [1, 2, 3]
    assert table["loss"].tolist() == [h["loss"] for h in metrics["history"]]
    assert table["test_macro_f1"].isna().tolist() == [True, False, False]

    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())  # a single run: a file store in its folder
    (found,) = client.search_runs([client.get_experiment_by_name("imbalance_lab").experiment_id])
    assert found.info.status == "FINISHED" and found.data.tags["tags"] == "baseline, tiny"
    assert found.data.params["loss.name"] == "ce" and found.data.params["trainer.epochs"] == "3"
    for key, values in wanted.items():
        history = client.get_metric_history(found.info.run_id, key.replace("/", "."))
        assert [(m.step, m.value) for m in history] == values, key


def wandb_records(path: Path):
    """The records of a W&B run file (``run-<id>.wandb``): a LevelDB-style log — a 7-byte header, then 32 KiB
    blocks of chunks (CRC 4 bytes, length 2, type 1: full, first, middle, last) — of protobuf ``Record``s."""
    from wandb.proto import wandb_internal_pb2

    data, pos, parts = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                    reason="W&B is an optional extra (pip install 'imbalance_lab[wandb]'), not installed here")
def test_wandb_offline_run_files_hold_each_epoch(tmp_path):
    run = tmp_path / "run"
    metrics = run_in_process(run, *EPOCHS, "logger=wandb", "tags=[baseline]")
    (path,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    logged, tags = {}, None
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            logged[items["epoch"]] = items
        elif record.WhichOneof("record_type") == "run":
            tags = list(record.run.tags)
    assert tags == ["baseline"]
    for key, values in logged_scalars(metrics["history"]).items():
        assert [(e, logged[e][key]) for e, _ in values] == values, key


def test_each_run_of_a_stacked_sweep_logs_as_its_own_run_under_the_sweep(tmp_path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    sweep = tmp_path / "sweep"
    jobs = []
    with hydra_compose() as compose:
        for seed in range(3):
            cfg, resolved, option = compose_run(*TINY, "trainer.epochs=2", "logger=tensorboard", f"seed={seed}",
                                                compose=compose)
            jobs.append(Job(cfg, sweep / f"seed={seed}", resolved, option, multirun=True, sweep_dir=sweep))
    results = run_stack(jobs)
    assert [m["stack"]["size"] for m in results] == [3, 3, 3]  # trained together
    runs = EventMultiplexer().AddRunsFromDirectory(str(sweep))
    runs.Reload()
    assert sorted(runs.Runs()) == [f"seed={s}/tensorboard" for s in range(3)]
    for seed, metrics in enumerate(results):
        losses = [e.value for e in runs.Scalars(f"seed={seed}/tensorboard", "loss")]
        assert losses == [pytest.approx(h["loss"], rel=1e-6) for h in metrics["history"]]
    assert len({tuple(e.value for e in runs.Scalars(r, "loss")) for r in runs.Runs()}) == 3  # three seeds


def test_a_logger_that_fails_leaves_the_run_done_with_one_warning(tmp_path, caplog):
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="imbalance_lab.loggers"):
        metrics = run_in_process(tmp_path / "run", *EPOCHS, "logger=[tensorboard,csv]",
                                 f"logger.tensorboard.save_dir={blocked}")
    assert metrics["status"] == "done"
    (warning,) = [r for r in caplog.records if r.name == "imbalance_lab.loggers"]
    assert warning.getMessage().startswith("logger tensorboard failed (opening) and is off for this run: ")
    assert len(pd.read_csv(tmp_path / "run" / "epochs.csv")) == 3  # the other logger went on


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_the_code_version_is_the_checkouts_commit_and_whether_it_was_dirty(tmp_path):
    package = tmp_path / "repo" / "imbalance_lab"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    root = package.parent
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    clean = git_state(package)
    assert clean == {"commit": git(root, "rev-parse", "HEAD"), "dirty": False, "diff_sha256": None}
    (root / "outputs.txt").write_text("untracked run output\n")  # not a change of the code
    assert git_state(package) == clean
    (package / "__init__.py").write_text("x = 2\n")
    dirty = git_state(package)
    assert dirty["dirty"] and dirty["commit"] == clean["commit"] and len(dirty["diff_sha256"]) == 64
    (package / "__init__.py").write_text("x = 3\n")
    assert git_state(package)["diff_sha256"] != dirty["diff_sha256"]  # another difference, another hash
    assert git_state(tmp_path / "elsewhere") is None  # not in a checkout
    assert describe({"package_version": "0.1.0", "git": dirty}).startswith(f"0.1.0 @ {clean['commit'][:10]} +dirty ")


def test_a_run_records_this_checkouts_commit():
    metrics_code = {"package_version": "x", "git": git_state()}
    assert metrics_code["git"]["commit"] == git(REPO, "rev-parse", "HEAD")


def test_the_summary_shows_tags_differing_code_versions_and_lists_debug_runs_apart(tmp_path):
    sweep = tmp_path / "sweep"
    config = {"seed": 0, "loss": {"name": "ce"}, "data": {"name": "mnist_even", "imbalance": 10}}
    for seed, commit, debug in ((0, "a" * 40, None), (1, "b" * 40, None), (2, "b" * 40, {"fast_dev_run": True})):
        make_run(sweep, {"seed": seed}, config | {"seed": seed}, "ce", test={"macro_f1": 0.8 + seed / 100},
                 history=[{"epoch": 1, "test_macro_f1": 0.8}])
        path = sweep / f"seed={seed}" / "metrics.json"
        metrics = json.loads(path.read_text()) | {
            "tags": ["baseline"] + (["rerun"] if seed else []), "debug": debug,
            "code": {"package_version": "0.1.0", "git": {"commit": commit, "dirty": False, "diff_sha256": None}}}
        path.write_text(json.dumps(metrics))
    result = report.write_report(sweep)
    text = (sweep / report.SUMMARY_MD).read_text()
    assert "- `baseline`: 3 of 3 runs" in text and "- `rerun`: 2 of 3 runs" in text
    assert f"- `0.1.0 @ {'a' * 10}`: 1 runs" in text and f"- `0.1.0 @ {'b' * 10}`: 2 runs" in text
    assert "## Debug runs (1)" in text and "- `seed=2` — done, fast_dev_run=True" in text
    (row,) = result["aggregate"].to_dict("records")
    assert row["n"] == 2 and row["test_macro_f1_median"] == pytest.approx(0.805)  # the debug run left out


def test_debug_fdr_runs_one_step_and_one_evaluation_batch_on_real_mnist(tmp_path, mirror):
    metrics = run_in_process(tmp_path / "fdr", "data=mnist_even", "model=cnn_mnist", "debug=fdr",
                             "trainer.progress=false", f"data.root={mirror}")
    assert metrics["status"] == "done" and metrics["debug"] == {"fast_dev_run": True}
    assert metrics["epochs"] == 1 and len(metrics["history"]) == 1
    assert sum(sum(row) for row in metrics["test"]["confusion_matrix"]) == 1000  # one evaluation batch
    assert metrics["train_seconds"] < 30


def test_debug_overfit_trains_on_the_same_batches_and_its_loss_falls(tmp_path):
    metrics = run_in_process(tmp_path / "overfit", *TINY, "debug=overfit", "trainer.epochs=6",
                             "trainer.eval_every=6")
    losses = [h["loss"] for h in metrics["history"]]
    assert metrics["debug"] == {"overfit_batches": 3} and metrics["config"]["data"]["augment"] is False
    assert losses[-1] < 0.5 * losses[0]


def test_debug_modes_change_only_the_steps_they_name():
    with hydra_compose() as compose:
        limit = compose_run(*TINY, "debug=limit", compose=compose)[0].trainer
        overfit = compose_run(*TINY, "debug=overfit", compose=compose)[0].trainer
        fdr = compose_run(*TINY, "debug=fdr", "trainer.epochs=7", compose=compose)[0].trainer
    y = torch.arange(4).repeat_interleave(100)
    counts = torch.bincount(y)
    assert debug_limits(limit, 100, 15, "uniform", y, counts)[:2] == (10, 15)
    assert debug_limits(dataclasses.replace(limit, limit_train_batches=0.001), 100, 15, "uniform", y, counts)[:2] \
        == (1, 15)  # at least one step
    assert debug_limits(fdr, 100, 7, "uniform", y, counts) == (1, 1, None)
    steps, epochs, order = debug_limits(overfit, 100, 15, "uniform", y, counts)
    assert (steps, epochs, len(order)) == (3, 15, 3 * overfit.batch_size)
    assert torch.equal(order, debug_limits(overfit, 100, 15, "uniform", y, counts)[2])  # the same every time
