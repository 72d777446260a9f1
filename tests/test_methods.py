"""Every loss, sampler and the majority-only baseline end to end on real data, 1 epoch on CPU, in process
(compose + run_experiment, as the command line runs them).

The data are small real subsets (MNIST with an exponential profile from 200 images per class, CIFAR-10
airplane 500 vs automobile 50) so the suite stays fast.
"""

import pytest
from conftest import read_json, run_in_process

LOSSES = ["ce", "weighted_ce", "focal", "cb", "affinity", "logit_adjusted", "ldam", "ldam_drw", "debiased"]
MNIST_SMALL = ["data=mnist_even", "model=cnn_mnist", "data.profile=exp", "data.n_max=200", "data.imbalance=10",
               "data.test_n_max=50", "trainer.epochs=1", "trainer.batch_size=64", "trainer.progress=false",
               "trainer.device=cpu", "trainer.bn_recalibration_batches=4"]


def sweep_runs(sweep_dir):
    return sorted(p.parent for p in sweep_dir.glob("*/metrics.json"))


@pytest.mark.slow
@pytest.mark.parametrize("family, values", [("loss", LOSSES), ("sampler", ["oversample", "undersample", "sqrt"])])
def test_every_method_finishes_on_real_mnist(tmp_path, mirror, family, values):
    for value in values:  # in process: the command line's multirun path is tested in test_sweeps.py
        run_in_process(tmp_path / value, *MNIST_SMALL, f"{family}={value}")
    runs = sweep_runs(tmp_path)
    assert len(runs) == len(values)
    for run in runs:
        metrics = read_json(run / "metrics.json")
        assert metrics["status"] == "done", (run.name, metrics.get("reason"))
        assert metrics["data"]["class_counts"]["train"] == [200, 154, 119, 92, 71, 55, 43, 33, 25, 20]
        assert 0.0 <= metrics["test"]["macro_f1"] <= 1.0
    if family == "loss":
        debiased = read_json(next(r for r in runs if "debiased" in r.name) / "metrics.json")
        assert len(debiased["q_hat_history"]) == 1 and len(debiased["q_hat_final"]) == 10


@pytest.mark.slow
def test_majority_only_baseline_on_real_cifar2(tmp_path, mirror):
    metrics = run_in_process(tmp_path, "method=majority_only", "data.profile=exp", "data.n_max=200",
                             "data.imbalance=10", "data.test_policy=reduced", "data.test_n_max=100",
                             "trainer.epochs=1", "trainer.progress=false", "trainer.device=cpu")
    assert metrics["status"] == "done"
    info = metrics["majority_only"]
    assert info["majority_class"] == "airplane" and info["minority_train_images_unused"] == 20
    assert 0.0 <= info["auroc"] <= 1.0
    assert metrics["test"]["minority_f1"] is not None
    assert metrics["method"] == "majority_only"
