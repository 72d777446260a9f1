"""``python -m imbalance_lab.report <sweep> --compare <table>``: ours next to the published numbers, with the
sweep summary's numbers, per protocol, converted to the published metric."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from imbalance_lab import compare, report
from imbalance_lab.reference import published


def make_run(sweep: Path, overrides: dict, config: dict, method: str, *, test: dict, history: list[dict],
             best_val: dict | None = None) -> None:
    """A finished run folder as a sweep job leaves it (only what the report reads)."""
    run = sweep / ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {"status": "done", "method": method, "imbalance": config["data"]["imbalance"], "config": config,
               "test": test, "history": history, "epochs": len(history),
               "best_on_validation": {"epoch": 1, "val_macro_f1": 0.5, "test": best_val} if best_val else None,
               "data": {"name": config["data"]["name"], "note": "MNIST: the original IDX files"}}
    (run / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def mnist_sweep(tmp_path):
    """affinity_mnist's grid, part of it: ce and affinity at r=2 and 100, three seeds, test metrics at every
    one of 3 epochs (the last is the headline) and a best-on-validation record."""
    sweep = tmp_path / "sweep"
    for loss, base in (("ce", 0.90), ("affinity", 0.93)):
        for ratio, drop in ((2, 0.0), (100, 0.1)):
            for seed, jitter in ((0, 0.0), (1, 0.02), (2, 0.05)):
                last = base - drop + jitter
                history = [{"epoch": e + 1, "test_macro_f1": last + d, "test_accuracy": last + d + 0.01}
                           for e, d in enumerate((-0.2, 0.03, 0.0))]  # the best epoch is the 2nd, not the last
                config = {"seed": seed, "loss": {"name": loss}, "data": {"name": "mnist_even", "imbalance": ratio}}
                make_run(sweep, {"data.imbalance": ratio, "loss": loss, "seed": seed}, config, loss,
                         test={"macro_f1": last, "accuracy": last + 0.01, "balanced_accuracy": last},
                         history=history, best_val={"macro_f1": last - 0.01, "accuracy": last})
    return sweep


def test_compare_numbers_are_the_summary_numbers_per_protocol(mnist_sweep, capsys):
    assert report.main([str(mnist_sweep), "--compare", "affinity_mnist"]) == 0
    rows = pd.read_csv(mnist_sweep / "compare_affinity_mnist.csv")
    agg = pd.read_csv(mnist_sweep / report.AGGREGATE_CSV).set_index(["method", "imbalance_ratio"])
    # 4 cells run (of 18) x 3 protocols: last epoch, best on validation, best epoch on test (the source's)
    assert len(rows) == 12 and set(rows["protocol"]) == {"last_epoch", "best_on_validation", "best_test_epoch"}
    column = {"last_epoch": "test_macro_f1", "best_on_validation": "bestval_test_macro_f1",
              "best_test_epoch": "maxtest_test_macro_f1"}
    for row in rows.to_dict("records"):
        stats = agg.loc[(row["ours_method"], row["imbalance_ratio"])]
        prefix = column[row["protocol"]]
        assert row["ours_median"] == pytest.approx(100 * stats[f"{prefix}_median"])
        assert row["ours_mean"] == pytest.approx(100 * stats[f"{prefix}_mean"])
        assert row["ours_sd"] == pytest.approx(100 * stats[f"{prefix}_sd"])
        assert row["n"] == stats["n"] == 3
        (cell,) = [c for c in published("affinity_mnist")
                   if c["method"] == row["published_method"] and c["imbalance_ratio"] == row["imbalance_ratio"]]
        assert row["published"] == cell["value"]
        assert row["difference"] == pytest.approx(row["ours_median"] - cell["value"])
    # By hand: affinity r=100, seeds' last-epoch macro F1 0.83, 0.85, 0.88 -> median 85.0; the best epoch on
    # test is 0.03 higher in every seed -> 88.0; published 98.27.
    last = rows[(rows["ours_method"] == "affinity") & (rows["imbalance_ratio"] == 100)].set_index("protocol")
    assert last.loc["last_epoch", "ours_median"] == pytest.approx(85.0)
    assert last.loc["best_test_epoch", "ours_median"] == pytest.approx(88.0)
    assert last.loc["last_epoch", "difference"] == pytest.approx(85.0 - 98.27)
    out = capsys.readouterr().out
    assert "affinity_mnist: ours vs published (12 rows; 14 cells not run)" in out
    text = (mnist_sweep / "compare_affinity_mnist.md").read_text()
    assert "best epoch on test (the source's protocol)" in text and "Cells not run in this sweep (14)" in text
    assert "**Dataset note**: MNIST: the original IDX files" in text and "seeds 0, 1, 2." in text
    assert (mnist_sweep / "compare_affinity_mnist.png").read_bytes().startswith(b"\x89PNG")


def cb_run(sweep: Path, base: str, beta: float, accuracy: float, seed: int = 0, lr: float = 0.1,
           gamma: float = 1.0) -> None:
    config = {"seed": seed, "loss": {"name": "cb", "base": base, "beta": beta, "gamma": gamma},
              "optim": {"lr": lr}, "data": {"name": "cifar10_lt", "imbalance": 100}}
    make_run(sweep, {"data.imbalance": 100, "loss.base": base, "loss.beta": beta, "loss.gamma": gamma,
                     "optim.lr": lr, "seed": seed},
             config, "cb", test={"macro_f1": accuracy - 0.05, "accuracy": accuracy, "balanced_accuracy": accuracy},
             history=[{"epoch": 1, "test_accuracy": accuracy}])


def test_compare_converts_accuracy_to_error_and_matches_the_sources_setting(tmp_path):
    """Cui et al. report top-1 error; the best class-balanced setting at r=100 is focal, beta 0.9999, gamma 1;
    a sweep that also varies optim.lr gives one row per summary method."""
    sweep = tmp_path / "sweep"
    for lr, acc in ((0.1, 0.75), (0.05, 0.70)):
        cb_run(sweep, "focal", 0.9999, acc, lr=lr)
    cb_run(sweep, "softmax", 0.0, 0.71)
    cb_run(sweep, "focal", 0.9999, 0.6, gamma=2.0)  # Cui's best at r=50, not at r=100: matches no cell here
    result = compare.write_comparison(sweep, "cb_cifar10_lt")
    rows = result["rows"].set_index(["published_method", "ours_method"])
    assert set(result["rows"]["protocol"]) == {"last_epoch"}  # Cui: last epoch; no validation split here
    best = rows.loc["class_balanced_best"]
    assert sorted(best.index) == ["cb base=focal beta=0.9999 gamma=1.0 optim.lr=0.05",
                                 "cb base=focal beta=0.9999 gamma=1.0 optim.lr=0.1"]
    assert best.loc["cb base=focal beta=0.9999 gamma=1.0 optim.lr=0.1", "ours_median"] == pytest.approx(25.0)  # 100 (1 - 0.75)
    assert best.loc["cb base=focal beta=0.9999 gamma=1.0 optim.lr=0.1", "difference"] == pytest.approx(25.0 - 25.43)
    assert rows.loc[("softmax", "cb base=softmax beta=0.0 gamma=1.0 optim.lr=0.1"), "ours_median"] == pytest.approx(29.0)
    assert "focal_gamma1" not in result["rows"]["published_method"].tolist()  # beta 0 was not run


def test_compare_debiaspl_cells_select_the_unlabelled_profile_and_report_accuracy(tmp_path):
    """USB's FixMatch / DebiasPL cells: top-1 accuracy in %, the best test evaluation (USB's protocol) beside our
    last epoch; the reversed-unlabelled cells take only the runs with that profile, and the source's sd shows."""
    sweep = tmp_path / "sweep"
    arms = (("fixmatch", False, "fixmatch_cosine", 0.70), ("debiaspl", True, "fixmatch_cosine", 0.72),
            ("fixmatch", False, "constant", 0.69), ("debiaspl", True, "constant", 0.71))
    for method, debias, schedule, acc in arms:
        for profile, shift in (("exp", 0.0), ("exp_reversed", -0.05)):
            config = {"seed": 0, "method": "fixmatch", "loss": {"name": "ce"}, "optim": {"schedule": schedule},
                      "data": {"name": "cifar10_lt", "imbalance": 100, "n_max": 1500},
                      "ssl": {"debias": debias, "unlabelled_profile": profile, "unlabelled_imbalance": 100,
                              "unlabelled_n_max": 3000}}
            last = acc + shift
            make_run(sweep, {"optim.schedule": schedule, "ssl.debias": debias, "ssl.unlabelled_profile": profile},
                     config, method, test={"macro_f1": last - 0.02, "accuracy": last, "balanced_accuracy": last},
                     history=[{"epoch": 1, "test_accuracy": last + 0.03}, {"epoch": 2, "test_accuracy": last}])
    result = compare.write_comparison(sweep, "debiaspl_cifar10_lt")
    rows = result["rows"]

    def ours(published_method: str, arm: str, protocol: str = "last_epoch") -> pd.Series:
        (row,) = [r for r in rows.to_dict("records") if r["published_method"] == published_method
                  and r["ours_method"].startswith(arm) and r["protocol"] == protocol]
        return row

    # USB's fixmatch rows ran the cosine: only our cosine FixMatch is their counterpart
    assert set(rows[rows["published_method"] == "fixmatch"]["ours_method"]) == {
        "fixmatch optim.schedule=fixmatch_cosine ssl.debias=False ssl.unlabelled_profile=exp"}
    assert ours("fixmatch", "fixmatch optim.schedule=fixmatch_cosine")["ours_median"] == pytest.approx(70.0)
    assert ours("fixmatch", "fixmatch optim.schedule=fixmatch_cosine")["published_sd"] == 0.78
    assert ours("fixmatch, unlabelled reversed", "fixmatch optim.schedule=fixmatch_cosine")["ours_median"] \
        == pytest.approx(65.0)
    # USB's "debiaspl" rows are FixMatch at a constant lr: both our arms at that lr, neither cosine arm
    assert {m.split(" ssl")[0] for m in rows[rows["published_method"] == "debiaspl"]["ours_method"]} == {
        "debiaspl optim.schedule=constant", "fixmatch optim.schedule=constant"}
    assert ours("debiaspl", "fixmatch optim.schedule=constant")["ours_median"] == pytest.approx(69.0)
    assert ours("debiaspl", "debiaspl optim.schedule=constant", "best_test_epoch")["ours_median"] == pytest.approx(74.0)
    assert ours("debiaspl", "debiaspl optim.schedule=constant")["difference"] == pytest.approx(71.0 - 77.51)
    assert {c["method"] for c in result["facts"]["missing"]} == {"supervised", "fixmatch", "debiaspl"}  # r=150 too
    # the caveat is printed, once, under the table, and the USB debiaspl values are marked with it
    text = compare.comparison_text(result, "debiaspl_cifar10_lt")
    assert text.count("[1] caveat: By USB's own code") == 1 and "published 77.51 ± 0.76 [1]" in text
    assert "published 76.69 ± 0.78 (" in text  # USB's fixmatch row is what its label says: no mark
    markdown = (sweep / "compare_debiaspl_cifar10_lt.md").read_text()
    assert "| 77.51 ± 0.76 [1] |" in markdown and "1. By USB's own code" in markdown
    assert "results/classic_cv_imb.csv, line 13, row 'fixmatch_debiaspl'" in markdown  # where it was read


def test_compare_refuses_an_unknown_table_or_another_dataset(mnist_sweep, capsys):
    assert report.main([str(mnist_sweep), "--compare", "affinity_mnst"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --compare affinity_mnst: no such published table; the tables are: ")
    assert "affinity_mnist" in err and not (mnist_sweep / report.SUMMARY_MD).exists()  # refused before work
    assert report.main([str(mnist_sweep), "--compare", "cb_cifar10_lt"]) == 2
    assert "the table is on cifar10_lt, the sweep's runs on mnist_even" in capsys.readouterr().err


def test_the_summary_draws_each_methods_learning_curve_median_over_seeds(mnist_sweep):
    """summary_curves.png: test macro F1 after each evaluated epoch, the median over seeds per method x ratio."""
    result = report.write_report(mnist_sweep)
    curves = report.learning_curves(mnist_sweep, result["runs"])
    assert len(curves) == 2 * 2 * 3 * 3  # methods x ratios x seeds x epochs
    median = curves.groupby(["method", "imbalance_ratio", "epoch"])["test_macro_f1"].median()
    assert median[("ce", 2, 2)] == pytest.approx(0.90 + 0.02 + 0.03)  # seeds' jitter 0, 0.02, 0.05: median 0.02
    assert median[("affinity", 100, 1)] == pytest.approx(0.93 - 0.1 + 0.02 - 0.2)
    assert (mnist_sweep / report.CURVES_PNG).read_bytes().startswith(b"\x89PNG")
