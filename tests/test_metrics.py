"""Tests for imbalance_lab.metrics: sklearn cross-checks, hand-computed examples, report and plot."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
)

from imbalance_lab.metrics import compute_metrics, format_report, plot_confusion

# Any warning (sklearn's undefined-metric or missing-class warnings, matplotlib) fails the test.
pytestmark = pytest.mark.filterwarnings("error")

NAMES3 = ["cat", "dog", "bird"]


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def three_class():
    """Fixed imbalanced predictions: test supports 200/50/10, ~25% of predictions replaced at random."""
    rng = np.random.default_rng(0)
    y_true = np.repeat([0, 1, 2], [200, 50, 10])
    y_pred = y_true.copy()
    flip = rng.random(len(y_true)) < 0.25
    y_pred[flip] = rng.integers(0, 3, flip.sum())
    probs = _softmax(rng.normal(size=(len(y_true), 3)) + 2.5 * np.eye(3)[y_pred])
    return y_true, y_pred, probs, [1000, 60, 8]


def _plain_values(obj):
    """Yield every leaf of a nested dict/list."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _plain_values(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _plain_values(v)
    else:
        yield obj


def test_scalars_match_sklearn(three_class):
    y_true, y_pred, probs, counts = three_class
    m = compute_metrics(y_true, y_pred, probs, counts, NAMES3)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
    assert m["micro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="micro"))
    assert m["micro_f1"] == pytest.approx(m["accuracy"])
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    recalls = recall_score(y_true, y_pred, average=None)
    assert m["g_mean"] == pytest.approx(np.prod(recalls) ** (1 / 3))
    # train counts 1000 / 60 / 8 -> one class in each shot group
    assert m["many_shot_acc"] == pytest.approx(recalls[0])
    assert m["medium_shot_acc"] == pytest.approx(recalls[1])
    assert m["few_shot_acc"] == pytest.approx(recalls[2])
    assert m["minority_f1"] is None and m["minority_class"] is None
    assert m["confusion_matrix"] == confusion_matrix(y_true, y_pred).tolist()

    precisions = precision_score(y_true, y_pred, average=None)
    f1s = f1_score(y_true, y_pred, average=None)
    for c, row in enumerate(m["per_class"]):
        assert (row["class"], row["name"], row["train_count"]) == (c, NAMES3[c], counts[c])
        assert row["support"] == int((y_true == c).sum())
        assert row["precision"] == pytest.approx(precisions[c])
        assert row["recall"] == pytest.approx(recalls[c])
        assert row["f1"] == pytest.approx(f1s[c])


def test_ece_matches_binned_definition(three_class):
    y_true, y_pred, probs, counts = three_class
    m = compute_metrics(y_true, y_pred, probs, counts, NAMES3)
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == y_true
    expected = 0.0
    for lo, hi in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            expected += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    assert m["ece"] == pytest.approx(expected)
    assert compute_metrics(y_true, y_pred, None, counts, NAMES3)["ece"] is None


def test_result_is_plain_json(three_class):
    y_true, y_pred, probs, counts = three_class
    m = compute_metrics(y_true, y_pred, probs, counts, NAMES3)
    assert all(type(v) in (int, float, str, type(None)) for v in _plain_values(m))
    assert json.loads(json.dumps(m)) == m


def test_ece_by_hand():
    # confidences 0.95 (right) and 0.94 (wrong) share the top bin (14/15, 1]; 0.75 (right) and 0.65 (wrong)
    # are alone in theirs: ECE = 2/4*|0.5 - 0.945| + 1/4*|1 - 0.75| + 1/4*|0 - 0.65| = 0.4475
    probs = np.array([[0.95, 0.05], [0.94, 0.06], [0.25, 0.75], [0.35, 0.65]])
    y_true = np.array([0, 1, 1, 0])
    m = compute_metrics(y_true, probs.argmax(axis=1), probs, [10, 10], ["a", "b"])
    assert m["ece"] == pytest.approx(0.4475)


def test_gmean_balanced_and_shot_groups_by_hand():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 0, 2, 2])  # recalls 3/4, 1/2, 1
    m = compute_metrics(y_true, y_pred, None, [500, 50, 5], NAMES3)
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["g_mean"] == pytest.approx((0.75 * 0.5 * 1.0) ** (1 / 3))
    assert (m["many_shot_acc"], m["medium_shot_acc"], m["few_shot_acc"]) == pytest.approx((0.75, 0.5, 1.0))

    # group boundaries: > 100 many, 20..100 (both inclusive) medium, < 20 few; empty group -> None
    m = compute_metrics(y_true, y_pred, None, [101, 100, 20], NAMES3)
    assert m["many_shot_acc"] == pytest.approx(0.75)
    assert m["medium_shot_acc"] == pytest.approx(0.75)  # mean of 1/2 and 1
    assert m["few_shot_acc"] is None
    m = compute_metrics(y_true, y_pred, None, [100, 20, 19], NAMES3)
    assert m["many_shot_acc"] is None
    assert m["medium_shot_acc"] == pytest.approx(0.625)
    assert m["few_shot_acc"] == pytest.approx(1.0)

    # one class never recognised -> G-mean 0 even though balanced accuracy is not
    m = compute_metrics(y_true, np.zeros_like(y_true), None, [500, 50, 5], NAMES3)
    assert m["g_mean"] == 0.0
    assert m["balanced_accuracy"] == pytest.approx(1 / 3)


def test_confusion_matrix_keeps_never_predicted_and_absent_classes():
    names = ["a", "b", "c", "d"]
    y_true = np.array([0, 0, 1, 1, 2, 2])  # class 3 not in the test set
    y_pred = np.array([0, 1, 1, 1, 0, 3])  # class 2 never predicted, class 3 predicted once
    m = compute_metrics(y_true, y_pred, None, [50, 40, 30, 20], names)
    assert m["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]]
    assert m["per_class"][2]["precision"] == 0.0 and m["per_class"][3]["support"] == 0
    assert m["macro_f1"] == pytest.approx(
        f1_score(y_true, y_pred, labels=range(4), average="macro", zero_division=0)
    )
    # mean recall over the classes that are in the test set: (1/2 + 1 + 0) / 3
    assert m["balanced_accuracy"] == pytest.approx(0.5)


@pytest.mark.parametrize(("counts", "minority"), [([5000, 500], 1), ([50, 5000], 0), ([100, 100], 1)])
def test_minority_f1_is_class_with_fewer_training_images(counts, minority):
    rng = np.random.default_rng(1)
    y_true = np.repeat([0, 1], [300, 40])
    y_pred = np.where(rng.random(len(y_true)) < 0.2, 1 - y_true, y_true)
    names = ["airplane", "automobile"]
    m = compute_metrics(y_true, y_pred, None, counts, names)
    assert m["minority_class"] == names[minority]
    assert m["minority_f1"] == pytest.approx(f1_score(y_true, y_pred, pos_label=minority))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["micro_f1"] == pytest.approx(accuracy_score(y_true, y_pred))


def test_minority_auroc_ranks_by_the_minority_probability():
    """Two-class data: AUROC of p(minority) for 'is minority' — 3 of the 4 (minority, majority) pairs are in
    the right order here; None without probabilities or for more classes."""
    y_true = np.array([1, 1, 0, 0])
    p_minority = np.array([0.9, 0.3, 0.4, 0.1])  # pairs: (0.9 > 0.4), (0.9 > 0.1), (0.3 < 0.4), (0.3 > 0.1)
    probs = np.stack([1 - p_minority, p_minority], axis=1)
    m = compute_metrics(y_true, probs.argmax(1), probs, [500, 50], ["airplane", "automobile"])
    assert m["minority_auroc"] == pytest.approx(0.75)
    assert compute_metrics(y_true, y_true, None, [500, 50], ["a", "b"])["minority_auroc"] is None
    # class 0 the minority: p(class 0) ranks "is class 0" as well as p(class 1) ranked "is class 1"
    assert compute_metrics(y_true, y_true, probs, [50, 500], ["a", "b"])["minority_auroc"] == pytest.approx(0.75)


def test_mismatched_inputs_are_rejected():
    with pytest.raises(ValueError, match="train_counts"):
        compute_metrics(np.array([0, 1]), np.array([0, 1]), None, [1, 2, 3], ["a", "b"])


def test_report_shows_names_headline_and_matrix(three_class):
    y_true, y_pred, probs, counts = three_class
    m = compute_metrics(y_true, y_pred, probs, counts, NAMES3)
    report = format_report(m)
    for name in NAMES3:
        assert name in report
    assert f"{100 * m['macro_f1']:.2f}" in report
    assert "micro F1 (= accuracy)" in report and f"{100 * m['accuracy']:.2f}" in report
    assert f"{100 * m['ece']:.2f}" in report
    assert "Confusion matrix (rows = true" in report
    assert " ".join(str(v) for v in m["confusion_matrix"][0]) in " ".join(report.split())


def test_report_binary_and_many_classes():
    y = np.array([0, 0, 0, 1])
    report = format_report(compute_metrics(y, y, None, [90, 9], ["majority", "minority"]))
    assert "minority F1 (minority)" in report and "100.00" in report and "ECE" in report

    names = [f"class{i}" for i in range(25)]
    y = np.arange(25).repeat(2)
    report = format_report(compute_metrics(y, y, None, [10] * 25, names))
    assert "class24" in report and "see the confusion plot" in report
    assert "rows = true" not in report


@pytest.mark.parametrize("n_classes", [3, 25])
def test_plot_confusion_writes_png(tmp_path, n_classes):
    rng = np.random.default_rng(2)
    cm = rng.integers(0, 50, size=(n_classes, n_classes))
    cm[-1] = 0  # a class with no test samples must not divide by zero
    path = plot_confusion(cm, [f"c{i}" for i in range(n_classes)], tmp_path / "sub" / "cm.png", "test")
    data = (tmp_path / "sub" / "cm.png").read_bytes()
    assert path == tmp_path / "sub" / "cm.png"
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_gmean_handles_many_small_recalls():
    # 100 classes with recall 1/10 each: the product underflows nothing, G-mean is exactly 0.1
    y_true = np.arange(100).repeat(10)
    y_pred = y_true.copy()
    y_pred[np.arange(len(y_true)) % 10 != 0] = (y_true[np.arange(len(y_true)) % 10 != 0] + 1) % 100
    m = compute_metrics(y_true, y_pred, None, [10] * 100, [str(i) for i in range(100)])
    assert math.isclose(m["g_mean"], 0.1)
