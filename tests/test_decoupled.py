"""method=decoupled: stage 2 of Kang et al. 2020 (baselines/decoupled.py) on a finished stage-1 run — τ = 0 is stage 1
exactly, cRT and LWS undo a biased stage 1's neglect of its rarest class, every stage-2 run records its stage 1, and
a stage 1 of another split is refused in one line. One small synthetic stage 1 serves every test."""

import numpy as np
import pytest
import torch
from conftest import compose_run, hydra_compose, read_json, run_in_process

from imbalance_lab.checkpoint import config_hash
from imbalance_lab.schema import ConfigError

# 3 synthetic classes of 8x8 images, r = 40: 180 / 28 / 4 training images (a tenth of each held out for validation),
# 50 test images each. Stage 1: 4 epochs of CE with Adam. One thread, so the numbers below are this machine's
# whatever pytest's thread count.
DATA = ["data=synthetic", "data.synthetic.num_classes=3", "data.synthetic.train_per_class=200",
        "data.synthetic.test_per_class=50", "data.synthetic.image_size=8", "data.imbalance=40",
        "data.val_fraction=0.1", "trainer.batch_size=32", "trainer.progress=false", "trainer.device=cpu",
        "trainer.eval_every=100", "trainer.bn_recalibration_batches=4", "trainer.checkpoint_every=0",
        "trainer.threads=1"]
STAGE2 = ["method=decoupled", "sampler=oversample", "optim.lr=0.1", "trainer.epochs=3"]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    threads = torch.get_num_threads()
    sweep = tmp_path_factory.mktemp("stage1_sweep")
    metrics = run_in_process(sweep / "run0", *DATA, "trainer.epochs=4")
    yield sweep / "run0", metrics
    torch.set_num_threads(threads)


def recalls(metrics: dict) -> list[float]:
    return [round(c["recall"], 2) for c in metrics["test"]["per_class"]]


def test_tau_norm_with_tau_zero_is_the_stage1_classifier_exactly_and_records_its_stage1(stage1, tmp_path):
    folder, first = stage1
    metrics = run_in_process(tmp_path, *DATA, *STAGE2, f"decoupled.stage1={folder}", "decoupled.mode=tau_norm",
                             "decoupled.tau=0")
    assert metrics["status"] == "done" and metrics["method"] == "tau_norm" and metrics["history"] == []
    ours, theirs = np.load(tmp_path / "predictions.npz"), np.load(folder / "predictions.npz")
    assert np.array_equal(ours["probs"], theirs["probs"]) and np.array_equal(ours["y_pred"], theirs["y_pred"])
    assert metrics["test"] == first["test"]
    record = metrics["decoupled"]["stage1"]
    assert record["folder"] == str(folder) and record["fingerprint"] == first["data"]["fingerprint"]
    assert record["config_hash"] == config_hash(read_json(folder / "metrics.json")["config"])
    assert metrics["decoupled"]["tau"] == 0.0 and metrics["decoupled"]["tau_chosen_on"] == "given (decoupled.tau)"


def test_crt_and_lws_raise_the_rare_class_recall_of_a_biased_stage1(stage1, tmp_path):
    """Measured (per-class test recall, classes by training count 180 / 28 / 4): stage 1 [1.0, 1.0, 0.0]; cRT (a new
    linear head, class-balanced sampling, 3 epochs of Adam 0.1 on the frozen features) [1.0, 1.0, 0.7]; LWS (stage
    1's head, learned per-class scales) [1.0, 1.0, 0.64]. Stage 1 is found in its sweep folder by split and seed."""
    folder, first = stage1
    assert recalls(first)[2] <= 0.1 and min(recalls(first)[:2]) >= 0.9
    for mode in ("crt", "lws"):
        metrics = run_in_process(tmp_path / mode, *DATA, *STAGE2, f"decoupled.stage1={folder.parent}",
                                 f"decoupled.mode={mode}")
        assert metrics["status"] == "done", metrics["reason"]
        assert metrics["decoupled"]["stage1"]["folder"] == str(folder)
        rare, common = recalls(metrics)[2], min(recalls(metrics)[:2])
        assert rare >= 0.5 and common >= 0.9, (mode, recalls(metrics))
    assert len(metrics["decoupled"]["scales"]) == 3


def test_tau_is_chosen_on_validation_and_a_stage1_of_another_split_is_refused(stage1, tmp_path):
    folder, _ = stage1
    metrics = run_in_process(tmp_path / "tau", *DATA, *STAGE2, f"decoupled.stage1={folder}", "decoupled.mode=tau_norm")
    search = metrics["decoupled"]["tau_search"]
    assert [r["tau"] for r in search] == pytest.approx([i / 10 for i in range(21)])
    best = max(r["val_balanced_accuracy"] for r in search)
    assert metrics["decoupled"]["tau"] == next(r["tau"] for r in search if r["val_balanced_accuracy"] == best)
    with pytest.raises(ConfigError, match=r"^decoupled.stage1='.*' is not allowed: a run of this data split "
                                          r"\(fingerprint \w+\); .* was trained on fingerprint \w+: "
                                          r"data.imbalance=40.0 \(this run: 20.0\)$"):
        run_in_process(tmp_path / "other", *DATA, *STAGE2, f"decoupled.stage1={folder}", "data.imbalance=20")


def test_decoupled_settings_are_checked_before_any_work(tmp_path):
    with hydra_compose() as compose:
        for overrides, message in [
            (["method=decoupled"], r"^decoupled.stage1=None is not allowed: the folder of a finished stage-1 run"),
            (["method=decoupled", f"decoupled.stage1={tmp_path / 'nowhere'}"], r"is not allowed: an existing folder"),
            (["method=decoupled", f"decoupled.stage1={tmp_path}", "decoupled.mode=tau_norm"],
             r"^decoupled.tau=None is not allowed: a number >= 0, or null with data.val_fraction > 0"),
            (["method=decoupled", f"decoupled.stage1={tmp_path}", "decoupled.mode=ncm"],
             r"^decoupled.mode='ncm' is not allowed: one of crt, tau_norm, lws$"),
            (["method=decoupled", f"decoupled.stage1={tmp_path}", "decoupled.tau_grid=[]"],
             r"^decoupled.tau_grid=\[\] is not allowed"),
            (["method=decoupled", f"decoupled.stage1={tmp_path}", "trainer.mixup=mixup"],
             r"^trainer.mixup='mixup' is not allowed: null with method=decoupled"),
        ]:
            with pytest.raises(ConfigError, match=message):
                compose_run(*overrides, compose=compose)


def test_report_compares_stage2_runs_with_bagoftricks_table(tmp_path):
    """``report <sweep> --compare decoupled_cifar10_lt``: each stage-2 mode meets its published row (top-1 error)."""
    import json

    import yaml

    from imbalance_lab import compare

    sweep = tmp_path / "sweep"
    for mode, accuracy in (("crt", 0.76), ("tau_norm", 0.70), ("lws", 0.74)):
        run = sweep / f"data.imbalance=100,decoupled.mode={mode}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["data.imbalance=100", f"decoupled.mode={mode}"]))
        config = {"seed": 0, "method": "decoupled", "loss": {"name": "ce"}, "decoupled": {"mode": mode, "tau": 1.0},
                  "data": {"name": "cifar10_lt", "imbalance": 100}}
        (run / "metrics.json").write_text(json.dumps({
            "status": "done", "method": mode, "imbalance": 100, "config": config, "epochs": 1,
            "test": {"accuracy": accuracy, "macro_f1": accuracy, "balanced_accuracy": accuracy},
            "history": [{"epoch": 1, "test_accuracy": accuracy, "test_macro_f1": accuracy}],
            "data": {"name": "cifar10_lt"}}))
    rows = compare.write_comparison(sweep, "decoupled_cifar10_lt")["rows"]
    last = rows[rows["protocol"] == "last_epoch"].set_index("published_method")
    assert last.loc["crt", "ours_median"] == pytest.approx(24.0) and last.loc["crt", "published"] == 25.01
    assert last.loc["tau_norm", "ours_median"] == pytest.approx(30.0) and last.loc["lws", "published"] == 27.37
