"""Sweeps: the summary report, failed runs, resume, the Optuna path (the submitit/SLURM path: test_slurm.py).

Report unit tests build run folders by hand; the end-to-end tests run the real CLI in a subprocess on the
tiny synthetic config (CPU, one epoch).
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY, hydra_compose, read_json, run_cli
from omegaconf import OmegaConf

from imbalance_lab import report

# TINY without its fixed ratio: the sweeps choose data.imbalance.
BASE = [o for o in TINY if not o.startswith("data.imbalance=")]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- report on hand-made folders
def make_run(sweep: Path, overrides: dict, status: str | None = "done", macro: float = 0.5, *,
             classes: int = 2, reason: str | None = None, val: float | None = None) -> Path:
    """A run folder as a sweep job leaves it: .hydra/{overrides,config}.yaml and (unless status is None)
    metrics.json."""
    name = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    run = sweep / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    loss = overrides.get("loss", "ce")
    config = {"seed": int(overrides.get("seed", 0)), "loss": {"name": loss},
              "data": {"name": "cifar2", "imbalance": float(overrides.get("data.imbalance", 1))}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if status is None:
        return run
    counts = [100, 10] if classes == 2 else [100, 50, 10, 10]
    test = {"macro_f1": macro, "micro_f1": macro + 0.1, "accuracy": macro + 0.1, "balanced_accuracy": macro,
            "minority_f1": macro - 0.1 if classes == 2 else None, "few_shot_acc": 0.2 if classes > 2 else None,
            "per_class": [{"train_count": n, "f1": macro - 0.1 if n == min(counts) else macro + 0.1}
                          for n in counts]}
    metrics = {"status": status, "reason": reason, "headline": "last-epoch test metrics",
               "test": test if status == "done" else None,
               "val": {"macro_f1": val} if val is not None and status == "done" else None,
               "history": [{"epoch": 1}], "epochs": 1, "wall_seconds": 1.5, "config": config,
               "data": {"note": "CIFAR-10 lossy JPEG copy (q75)", "class_counts": {"train": counts}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture
def fake_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    for gamma, base in (("1", 0.6), ("2", 0.7)):
        for ratio, drop in (("10", 0.0), ("100", 0.2)):
            for seed, jitter in (("0", 0.0), ("1", 0.1), ("2", 0.05)):
                make_run(sweep, {"data.imbalance": ratio, "loss": "focal", "loss.gamma": gamma, "seed": seed},
                         macro=base - drop + jitter)
    return sweep


def test_report_tidy_table_and_aggregate(fake_sweep):
    result = report.write_report(fake_sweep)
    runs, agg = result["runs"], result["aggregate"]
    assert len(runs) == 12 and set(runs["status"]) == {"done"}
    # method = loss + the overrides that vary, other than ratio and seed
    assert set(runs["method"]) == {"focal gamma=1", "focal gamma=2"}
    for column in ("run", "status", "reason", "data.imbalance", "loss.gamma", "override:loss", "override:seed",
                   "imbalance_ratio", "seed", "test_macro_f1", "test_micro_f1", "test_minority_f1",
                   "val_macro_f1", "epochs", "wall_seconds"):
        assert column in runs.columns, column
    assert len(agg) == 4 and list(agg["n"]) == [3, 3, 3, 3]
    row = agg[(agg["method"] == "focal gamma=2") & (agg["imbalance_ratio"] == 100)].iloc[0]
    values = [0.5, 0.6, 0.55]
    assert row["test_macro_f1_median"] == pytest.approx(0.55)
    assert row["test_macro_f1_mean"] == pytest.approx(sum(values) / 3)
    assert row["test_macro_f1_sd"] == pytest.approx(pd.Series(values).std())
    # the CSV files hold the same tables
    assert len(pd.read_csv(fake_sweep / report.RUNS_CSV)) == 12
    assert pd.read_csv(fake_sweep / report.AGGREGATE_CSV)["n"].tolist() == [3, 3, 3, 3]
    for name in (report.MACRO_F1_PNG, report.MINORITY_PNG):
        assert (fake_sweep / name).read_bytes().startswith(PNG_MAGIC)
    assert not list(fake_sweep.glob(".*.tmp"))  # atomic writes leave no temp files


def test_method_is_the_loss_option_chosen_not_the_shared_loss_name(tmp_path):
    sweep = tmp_path / "sweep"
    for option in ("affinity", "affinity_m5"):  # both have loss.name "affinity"
        run = make_run(sweep, {"loss": option, "seed": "0"})
        config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        config["loss"]["name"] = metrics["config"]["loss"]["name"] = "affinity"
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        (run / "metrics.json").write_text(json.dumps(metrics))
    run = make_run(sweep, {"method": "majority_only", "seed": "0"})
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["config"]["method"] = "majority_only"
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert sorted(report.collect_runs(sweep)["method"]) == ["affinity", "affinity_m5", "majority_only"]


def test_majority_only_is_not_labelled_with_the_loss_settings_the_other_runs_sweep(tmp_path):
    """A focal sweep with majority_only runs beside it (same folder): majority_only trains no configured loss,
    so its label does not carry loss.gamma; the focal runs' labels do."""
    sweep = tmp_path / "sweep"
    for gamma in ("0", "2"):
        make_run(sweep, {"loss": "focal", "loss.gamma": gamma, "seed": "0"})
    run = make_run(sweep, {"method": "majority_only", "loss.gamma": "0", "seed": "0"})
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["method"] = "majority_only"
    (run / "metrics.json").write_text(json.dumps(metrics))
    labels = sorted(report.collect_runs(sweep)["method"])
    assert labels == ["focal gamma=0", "focal gamma=2", "majority_only"]


def test_runs_that_differ_only_in_how_they_ran_or_in_spelling_are_one_method(tmp_path):
    """trainer.threads / trainer.progress say how a run was executed, not what it computes; false and False,
    1e-3 and 0.001 are one value to Hydra. A setting that really varies still names the method."""
    sweep = tmp_path / "sweep"
    make_run(sweep, {"loss": "ce", "seed": "0", "trainer.threads": "1", "trainer.progress": "false",
                     "optim.lr": "1e-3"})
    make_run(sweep, {"loss": "ce", "seed": "1", "trainer.threads": "2", "trainer.progress": "False",
                     "optim.lr": "0.001"})
    assert sorted(report.collect_runs(sweep)["method"]) == ["ce", "ce"]
    make_run(sweep, {"loss": "ce", "seed": "2", "optim.lr": "0.01"})
    runs = report.collect_runs(sweep).set_index("seed")["method"]
    assert runs[0] == runs[1] != runs[2] and runs[2] == "ce optim.lr=0.01"


def test_report_reads_what_the_run_was_from_metrics_json(tmp_path):
    sweep = tmp_path / "sweep"
    run = make_run(sweep, {"seed": "0"})  # the loss option came from a preset: it is in no override
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.update(method="affinity_cifar_m5", imbalance=50.0)
    metrics["data"]["name"] = "cifar10_even"
    (run / "metrics.json").write_text(json.dumps(metrics))
    row = report.collect_runs(sweep).iloc[0]
    assert (row["method"], row["imbalance_ratio"], row["dataset"]) == ("affinity_cifar_m5", 50, "cifar10_even")


def test_report_markdown_explains_the_numbers(fake_sweep):
    report.write_report(fake_sweep)
    text = (fake_sweep / report.SUMMARY_MD).read_text()
    assert "last-epoch test metrics" in text
    assert "Micro F1" in text and "equals accuracy" in text
    assert "median" in text and "mean ± sd" in text
    assert "lossy JPEG copy" in text  # the dataset note travels into the summary
    assert "| focal gamma=1 | 10 | 3 | 0 |" in text


def test_report_lists_failed_unfinished_and_corrupt_runs_without_crashing(tmp_path):
    sweep = tmp_path / "sweep"
    make_run(sweep, {"data.imbalance": "10", "loss": "ce", "seed": "0"}, macro=0.8)
    make_run(sweep, {"data.imbalance": "10", "loss": "ce", "seed": "1"}, status="failed",
             reason="loss became nan at epoch 3")
    killed = make_run(sweep, {"data.imbalance": "10", "loss": "ce", "seed": "2"}, status=None)
    (killed / ".metrics.json.abc123.tmp").write_text('{"status": "do')  # killed while writing: never read
    corrupt = make_run(sweep, {"data.imbalance": "10", "loss": "ce", "seed": "3"})
    (corrupt / "metrics.json").write_text('{"status": "done", "test": {"macro')
    (sweep / "not_a_run").mkdir()  # stray folders are not runs
    result = report.write_report(sweep)
    runs = result["runs"].set_index("seed")
    assert runs.loc[0, "status"] == "done"
    assert runs.loc[1, "status"] == "failed" and "nan" in runs.loc[1, "reason"]
    assert runs.loc[2, "status"] == "unfinished"
    assert runs.loc[3, "status"] == "corrupt"
    assert result["counts"] == {"done": 1, "failed": 1, "unfinished": 1, "corrupt": 1}
    agg = result["aggregate"]
    assert len(agg) == 1 and agg["n"].tolist() == [1] and agg["n_not_done"].tolist() == [3]
    assert agg["test_macro_f1_median"].tolist() == [pytest.approx(0.8)]
    text = (sweep / report.SUMMARY_MD).read_text()
    assert "1 failed, 1 unfinished, 1 corrupt" in text
    for name in ("seed=1", "seed=2", "seed=3"):
        assert name in text


def test_report_on_empty_or_all_failed_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(report.write_report(empty)["runs"]) == 0
    failed = tmp_path / "failed"
    make_run(failed, {"data.imbalance": "10", "loss": "ce", "seed": "0"}, status="failed", reason="x")
    result = report.write_report(failed)
    assert result["aggregate"]["n"].tolist() == [0]
    assert (failed / report.SUMMARY_MD).exists() and not (failed / report.MACRO_F1_PNG).exists()


def test_report_multiclass_uses_smallest_class_and_few_shot(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in ("0", "1"):
        make_run(sweep, {"data.imbalance": "10", "loss": "ce", "seed": seed}, macro=0.5, classes=4, val=0.4)
    runs = report.write_report(sweep)["runs"]
    assert runs["test_tail_f1"].tolist() == [pytest.approx(0.4)] * 2  # the two 10-image classes
    assert runs["test_few_shot_acc"].tolist() == [pytest.approx(0.2)] * 2
    assert runs["val_macro_f1"].tolist() == [pytest.approx(0.4)] * 2
    assert runs["test_minority_f1"].isna().all()


def test_report_command_line(fake_sweep, tmp_path, capsys):
    proc = run_cli(str(fake_sweep), module="imbalance_lab.report")
    assert proc.returncode == 0, proc.stderr
    assert "12 runs: 12 done" in proc.stdout and "summary.md" in proc.stdout
    assert report.main([str(tmp_path / "nope")]) == 2  # the command's exit code (in process)
    assert capsys.readouterr().err.startswith("error: no such sweep folder")


# ----------------------------------------------------------------------------- end to end (real CLI)
def sweep_cli(sweep_dir: Path, *overrides: str, returncode: int = 0) -> subprocess.CompletedProcess:
    """``python -m imbalance_lab -m ...`` into ``sweep_dir`` (threads pinned by ``run_cli``); the exit code
    is 1 when a run of the sweep did not finish done."""
    proc = run_cli("-m", *BASE, *overrides, f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == returncode, (proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


# Through the stacked launcher: the two seeds of each (ratio, loss) cell train as one stack of 2.
GRID = ("hydra/launcher=stacked", "data.imbalance=2,4", "loss=ce,focal", "seed=0,1")


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("grid") / "sweep"
    sweep_cli(sweep, *GRID)
    return sweep


def test_grid_sweep_writes_summary(grid_sweep):
    runs = pd.read_csv(grid_sweep / report.RUNS_CSV)
    assert len(runs) == 8 and set(runs["status"]) == {"done"}
    assert sorted(runs["method"].unique()) == ["ce", "focal"]
    assert sorted(runs["imbalance_ratio"].unique()) == [2, 4] and sorted(runs["seed"].unique()) == [0, 1]
    agg = pd.read_csv(grid_sweep / report.AGGREGATE_CSV)
    assert len(agg) == 4 and agg["n"].tolist() == [2, 2, 2, 2]
    assert agg["test_macro_f1_median"].between(0, 1).all()
    text = (grid_sweep / report.SUMMARY_MD).read_text()
    assert "equals accuracy" in text and "8 done" in text
    assert (grid_sweep / report.MACRO_F1_PNG).read_bytes().startswith(PNG_MAGIC)
    for run in runs.to_dict("records"):
        metrics = read_json(grid_sweep / run["run"] / "metrics.json")
        assert metrics["status"] == "done"
        # the run says what it was: the report's method, ratio and dataset are these
        assert (metrics["method"], metrics["imbalance"], metrics["data"]["name"]) == (
            run["method"], run["imbalance_ratio"], "synthetic")
        assert metrics["stack"]["size"] == 2 and len({m for m in metrics["stack"]["runs"]}) == 2
        assert (grid_sweep / run["run"] / ".hydra" / "config.yaml").exists()


def test_resume_redoes_only_unfinished_runs(grid_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(grid_sweep, sweep)  # copy2 keeps the files' times
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(runs) == 8
    # As a kill -9 leaves it: one run never wrote metrics.json (only the atomic writer's temp file), and
    # one run's metrics.json is unreadable. Both must be redone; the six others must not be touched.
    killed, corrupt, finished = runs[0], runs[5], [r for i, r in enumerate(runs) if i not in (0, 5)]
    (killed / "metrics.json").unlink()
    (killed / ".metrics.json.x1y2z3.tmp").write_text('{"status": "done", "te')
    (corrupt / "metrics.json").write_text('{"status": "done", "test": ')
    before = {r: ((r / "metrics.json").stat().st_mtime_ns, (r / "metrics.json").read_bytes()) for r in finished}
    counts = report.write_report(sweep)["counts"]
    assert counts == {"done": 6, "failed": 0, "unfinished": 1, "corrupt": 1}

    # the same sweep command, into the same folder; with another thread count (not part of a run's folder name)
    proc = sweep_cli(sweep, *GRID, "trainer.threads=2")
    assert proc.stdout.count("already done, skipped") + proc.stderr.count("already done, skipped") == 6
    # the finished runs had 1 thread (run_cli pins it): mixing thread counts is flagged for each of them
    assert (proc.stdout + proc.stderr).count("was trained with 1 CPU threads, this sweep has 2") == 6
    for r in finished:
        assert ((r / "metrics.json").stat().st_mtime_ns, (r / "metrics.json").read_bytes()) == before[r]
    for r in (killed, corrupt):
        assert read_json(r / "metrics.json")["status"] == "done"
    runs_csv = pd.read_csv(sweep / report.RUNS_CSV)
    assert len(runs_csv) == 8 and set(runs_csv["status"]) == {"done"}


def test_optuna_search_stores_its_study(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    optuna = pytest.importorskip("optuna")
    sweep = tmp_path / "sweep"
    # The article-001 preset, with its search space swapped for focal's gamma (the objective is validation
    # macro F1, hence the validation split).
    sweep_cli(sweep, "+hparams_search=affinity_optuna", "hydra.sweeper.params=null", "loss=focal",
              "loss.gamma=interval(0,3)", "data.val_fraction=0.25", "data.imbalance=4", "hydra.sweeper.n_trials=3")
    db = sweep / "optuna.db"
    assert db.stat().st_size > 0
    study = optuna.load_study(study_name="affinity", storage=f"sqlite:///{db}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == 3 and len(complete) == 3 and all(0 <= t.value <= 1 for t in complete)
    assert set(study.best_params) == {"loss.gamma"} and 0 <= study.best_params["loss.gamma"] <= 3
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(study.best_value)
    runs = pd.read_csv(sweep / report.RUNS_CSV)
    assert len(runs) == 3 and set(runs["status"]) == {"done"} and runs["val_macro_f1"].notna().all()
    # the objective is the validation macro F1 the runs recorded, never test
    assert sorted(t.value for t in complete) == pytest.approx(sorted(runs["val_macro_f1"]))


def test_continued_search_does_not_replay_its_proposals(tmp_path):
    """Re-running a search into the same folder loads the SQLite study (the plugin's load_if_exists) and
    offsets the sampler's seed by the trials already made, so the start-up proposals are not repeated."""
    optuna = pytest.importorskip("optuna")
    from imbalance_lab.callbacks import continued_tpe_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"

    def session(n):
        sampler = continued_tpe_sampler(seed=0, storage=storage, study_name="s", n_startup_trials=10)
        study = optuna.create_study(study_name="s", storage=storage, sampler=sampler, direction="maximize",
                                    load_if_exists=True)
        study.optimize(lambda t: -abs(t.suggest_float("x", 0, 1) - 0.3), n_trials=n)
        return [t.params["x"] for t in study.trials]

    first = session(2)
    both = session(2)
    assert both[:2] == first and len(set(both)) == 4  # the same study, continued with new proposals
    fresh = continued_tpe_sampler(seed=0, storage=f"sqlite:///{tmp_path / 'other.db'}", study_name="s")
    study = optuna.create_study(sampler=fresh)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert [t.params["x"] for t in study.trials] == first  # a fresh search is reproducible from the seed


def test_launcher_and_search_presets_compose():
    import warnings

    with hydra_compose() as compose, warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Hydra's deprecated automatic schema matching
        for preset, target in (("parallel", "imbalance_lab_launcher.parallel.ParallelLauncher"),
                               ("slurm", "imbalance_lab_launcher.slurm.SlurmLauncher"),
                               ("slurm_local", "imbalance_lab_launcher.slurm.LocalLauncher")):
            cfg = compose(f"hydra/launcher={preset}")
            assert cfg.hydra.launcher._target_.endswith(target)
        cfg = compose("hydra/launcher=parallel")
        assert cfg.hydra.launcher.n_jobs == 2  # k is explicit, not "all cores"
        cfg = compose("hydra/launcher=slurm")
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.array_parallelism > 0
        cfg = compose("+hparams_search=affinity_optuna")
        sweeper = OmegaConf.to_container(cfg.hydra.sweeper)
        assert sweeper["direction"] == "maximize" and sweeper["storage"] == "sqlite:///${hydra.sweep.dir}/optuna.db"
        assert sweeper["params"] == {"loss.lam": "interval(0.01, 1.0)",
                                     "loss.sigma": "tag(log, interval(10.0, 100.0))",
                                     "loss.m": "int(interval(1, 30))"}
        assert sweeper["sampler"]["_target_"] == "imbalance_lab.callbacks.continued_tpe_sampler"
        assert cfg.loss.name == "affinity" and cfg.data.val_fraction > 0


def test_run_dirname_is_one_safe_stable_path_component():
    from imbalance_lab.runfolder import MAX_DIRNAME_BYTES, run_dirname

    assert run_dirname("data.imbalance=10,loss=ce,seed=0") == "data.imbalance=10,loss=ce,seed=0"
    assert run_dirname("data.root=../x/y,seed=0") == "data.root=..%2Fx%2Fy,seed=0"
    long = ",".join(f"key{i}=value{i}" for i in range(40))
    name = run_dirname(long)
    assert len(name.encode()) <= MAX_DIRNAME_BYTES and name.startswith("key0=value0,")
    assert run_dirname(long) == name  # the same overrides map to the same folder (resume)
    assert run_dirname(long.replace("value39", "other")) != name


def test_a_folder_holding_two_sweeps_is_not_merged(tmp_path, capsys):
    """A date folder with two sweeps of the same grid: reported as two sweeps (an error that names them),
    never as one sweep with n=2 per cell; a stray folder in a sweep is listed, not read as a run."""
    day = tmp_path / "2026-01-01"
    for sweep in ("12-00-00_000001", "13-00-00_000002"):
        for seed in ("0", "1"):
            make_run(day / sweep, {"data.imbalance": "10", "loss": "ce", "seed": seed})
        (day / sweep / "multirun.yaml").write_text("hydra: {}\n")
    assert report.main([str(day)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {day} holds 2 sweeps (12-00-00_000001, 13-00-00_000002), not one")
    one = day / "12-00-00_000001"
    (one / "notes").mkdir()
    (one / "notes" / "metrics.json").write_text("{}")  # not a run: it has no .hydra/
    result = report.write_report(one)
    assert len(result["runs"]) == 2 and list(result["aggregate"]["n"]) == [2]
    text = (one / report.SUMMARY_MD).read_text()
    assert "## Folders that are not runs (1)" in text and "- `notes`" in text


def test_published_reference_numbers_are_the_papers():
    """A few cells of the transcribed tables, checked against the papers' tables."""
    from imbalance_lab.reference import published

    def cell(table, r, method):
        (row,) = [x for x in published(table) if x["imbalance_ratio"] == r and x["method"] == method]
        return row

    assert cell("affinity_cifar10", 100, "affinity_cifar")["value"] == 57.78
    assert cell("affinity_cifar10", 2, "ce")["protocol"].startswith("max over epochs on the test set")
    assert cell("affinity_mnist", 100, "affinity_m5")["value"] == 98.85  # n = 10 minority test images
    assert cell("cb_cifar10_lt", 100, "class_balanced_best")["value"] == 25.43
    assert cell("cb_cifar100_lt", 1, "softmax")["value"] == 29.07
    assert cell("ldam_drw_cifar10_lt", 10, "ldam_drw")["value"] == 11.84
    assert cell("logit_adjusted_cifar100_lt", 100, "logit_adjusted")["metric"] == "balanced_error_pct"
    assert len(published("affinity_cifar10")) == 18 and len(published("cb_cifar10_lt")) == 24
    # which of our runs each cell compares with, and under which of our protocols the source's number was made
    assert cell("cb_cifar10_lt", 50, "class_balanced_best")["ours"] == (
        "loss.name=cb loss.base=focal loss.beta=0.9999 loss.gamma=2")
    assert cell("affinity_mnist", 10, "ce")["protocol_kind"] == "best_test_epoch"
    assert cell("cb_cifar10_lt", 10, "softmax")["protocol_kind"] == "last_epoch"
    # USB's reimplementation (results/classic_cv_imb.csv): CIFAR-10, N1=1500, M1=3000, gamma_l = gamma_u = 100
    debiaspl = cell("debiaspl_cifar10_lt", 100, "debiaspl")
    assert (debiaspl["value"], debiaspl["sd"], debiaspl["metric"]) == (77.51, 0.76, "top1_acc_pct")
    assert cell("debiaspl_cifar10_lt", 100, "fixmatch, unlabelled reversed")["value"] == 69.95
    assert cell("debiaspl_cifar10_lt", 150, "fixmatch")["ours"].endswith("ssl.unlabelled_imbalance=150")


def test_parallel_workers_each_get_one_gpu(tmp_path):
    """hydra/launcher=parallel with 2 workers and 2 GPUs: each worker claims a slot and its GPU through
    CUDA_VISIBLE_DEVICES, set before anything touches CUDA, and every run records its worker's assignment (here
    on CPU: the names stand for GPUs and nothing else changes). More workers than GPUs: test_gpu_slots_..."""
    sweep = tmp_path / "sweep"
    sweep_cli(sweep, "hydra/launcher=parallel", "hydra.launcher.gpus=[g0,g1]", "data.imbalance=2,4")
    devices = [read_json(p)["device"] for p in sweep.glob("*/metrics.json")]
    assigned = {(d["worker_slot"], d["cuda_visible_devices"]) for d in devices}
    assert len(devices) == 2 and assigned <= {(0, "g0"), (1, "g1")}
    assert not list((sweep / ".gpu_slots").iterdir())  # the workers gave their slots back on exit


def test_gpu_slots_go_round_robin_and_a_dead_workers_slot_is_taken_again(tmp_path, monkeypatch):
    """The third worker on two GPUs shares the first GPU; a slot whose process is gone is free again."""
    from imbalance_lab import worker

    monkeypatch.setenv(worker.GPUS_ENV, "g0,g1")
    monkeypatch.setenv(worker.SLOTS_ENV, str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    (tmp_path / "0").write_text(str(os.getpid()))  # a live worker
    (tmp_path / "1").write_text(str(os.getppid()))  # another live one
    monkeypatch.setattr(worker, "_claimed", None)
    assert worker.claim_gpu() == (2, "g0") and os.environ["CUDA_VISIBLE_DEVICES"] == "g0"
    (tmp_path / "1").write_text("999999999")  # its process is gone
    monkeypatch.setattr(worker, "_claimed", None)
    assert worker.claim_gpu() == (1, "g1") and (tmp_path / "1").read_text() == str(os.getpid())
