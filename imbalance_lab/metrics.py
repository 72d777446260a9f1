"""Evaluation metrics for class-imbalanced classification, a text report and a confusion-matrix plot.

Every number in :func:`compute_metrics` is a plain Python value so the dict can go straight into
``metrics.json``. Percent values are only used for display (:func:`format_report`); the dict holds fractions.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

ECE_BINS = 15
# Shot groups by training count (the usual long-tail convention): many > 100, medium 20..100, few < 20.
MANY_SHOT_MIN = 100
FEW_SHOT_MAX = 20
MAX_CLASSES_SHOWN = 20
# The headline scalars of an evaluation, with their display labels: what the epoch history, the
# best-on-validation record and the sweep report carry (every other metric stays in the full dict).
HEADLINE = {
    "macro_f1": "macro F1",
    "micro_f1": "micro F1 (= accuracy)",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "minority_f1": "minority F1",
    "minority_auroc": "minority AUROC",
    "few_shot_acc": "few-shot accuracy",
}


def headline(metrics: dict) -> dict:
    """The headline scalars of a :func:`compute_metrics` result (those that apply to this data)."""
    return {k: metrics[k] for k in HEADLINE if metrics.get(k) is not None}


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE: sum over equal-width confidence bins (lo, hi] of (bin fraction) * |accuracy - mean confidence|."""
    conf = probs.max(axis=1)
    # Correctness of the arg-max class, not of y_pred: the confidence must belong to the class it is
    # compared with (y_pred can differ, e.g. post-hoc logit adjustment).
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    bins = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], conf, side="left")
    gap = np.bincount(bins, weights=correct, minlength=n_bins) - np.bincount(
        bins, weights=conf, minlength=n_bins
    )
    return float(np.abs(gap).sum() / len(y_true))


def _geometric_mean(values: np.ndarray) -> float:
    if len(values) == 0 or np.any(values <= 0):
        return 0.0
    return float(np.exp(np.mean(np.log(values))))


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def minority_auroc(is_minority: np.ndarray, scores: np.ndarray) -> float | None:
    """AUROC of ``scores`` for 'is minority' (threshold-free); None unless both kinds of image are present."""
    return float(roc_auc_score(is_minority, scores)) if 0 < is_minority.sum() < len(is_minority) else None


def compute_metrics(y_true, y_pred, probs, train_counts, class_names) -> dict:
    """All metrics of one evaluation; ``probs`` (N x C softmax) may be None, then ``ece`` is None.

    Per-class averages that need a test sample of the class (balanced accuracy, G-mean, shot groups) use
    only classes present in ``y_true``; F1 averages use all C classes (absent ones count as F1 = 0).
    """
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    y_pred = np.asarray(y_pred).astype(np.int64).ravel()
    names = [str(n) for n in class_names]
    n_classes = len(names)
    counts = np.asarray(train_counts, dtype=np.int64)
    if len(counts) != n_classes:
        raise ValueError(f"train_counts has {len(counts)} entries but there are {n_classes} class names")
    if y_true.shape != y_pred.shape or len(y_true) == 0:
        raise ValueError(
            f"y_true {y_true.shape} and y_pred {y_pred.shape} must be non-empty and of the same length"
        )
    labels = list(range(n_classes))

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    present = support > 0
    with warnings.catch_warnings():
        # sklearn warns when y_pred has a class y_true lacks; the score (mean recall over the classes in
        # y_true) is still what we want, and that situation is normal for reduced test sets.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = balanced_accuracy_score(y_true, y_pred)

    many = present & (counts > MANY_SHOT_MIN)
    medium = present & (counts >= FEW_SHOT_MAX) & (counts <= MANY_SHOT_MIN)
    few = present & (counts < FEW_SHOT_MAX)

    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        # Equal to accuracy for single-label data; kept because papers and posts on imbalance report it under this name.
        "micro_f1": float(f1_score(y_true, y_pred, labels=labels, average="micro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "balanced_accuracy": float(balanced),
        "g_mean": _geometric_mean(recall[present]),
        "ece": None if probs is None else expected_calibration_error(np.asarray(probs, np.float64), y_true),
        "many_shot_acc": _mean_or_none(recall[many]),
        "medium_shot_acc": _mean_or_none(recall[medium]),
        "few_shot_acc": _mean_or_none(recall[few]),
        "minority_class": None,
        "minority_f1": None,
        "minority_auroc": None,
    }
    if n_classes == 2:
        minority = 0 if counts[0] < counts[1] else 1  # tie -> class 1 (the class cifar2 reduces by default)
        out["minority_class"] = names[minority]
        out["minority_f1"] = float(f1[minority])
        # Threshold-free: how well p(minority) ranks the test images, comparable with a one-class detector's
        # anomaly score (method=majority_only) whatever the threshold either uses.
        if probs is not None:
            out["minority_auroc"] = minority_auroc(y_true == minority, np.asarray(probs, np.float64)[:, minority])
    out["per_class"] = [
        {
            "class": c,
            "name": names[c],
            "train_count": int(counts[c]),
            "support": int(support[c]),
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
        }
        for c in labels
    ]
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return out


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def format_report(metrics: dict) -> str:
    """Per-class table, headline numbers and (for <= 20 classes) the confusion matrix; values in percent."""
    rows = metrics["per_class"]
    name_w = min(max([4] + [len(r["name"]) for r in rows]), 24)
    count_w = max(7, len(str(max(r["train_count"] for r in rows))))
    head = f"{'class':>5}  {'name':<{name_w}}  {'train n':>{count_w}}  {'test n':>7}  {'prec %':>7}  {'rec %':>7}  {'F1 %':>7}"
    lines = ["Per-class results (percent):", head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['class']:>5}  {r['name'][:name_w]:<{name_w}}  {r['train_count']:>{count_w}}  {r['support']:>7}"
            f"  {_pct(r['precision']):>7}  {_pct(r['recall']):>7}  {_pct(r['f1']):>7}"
        )

    summary = [
        ("macro F1", metrics["macro_f1"]),
        ("micro F1 (= accuracy)", metrics["micro_f1"]),
        ("balanced accuracy", metrics["balanced_accuracy"]),
        ("weighted F1", metrics["weighted_f1"]),
        ("G-mean", metrics["g_mean"]),
        ("ECE (15 bins)", metrics.get("ece")),
    ]
    if metrics.get("minority_f1") is not None:
        summary.append((f"minority F1 ({metrics['minority_class']})", metrics["minority_f1"]))
    for key, label in (
        ("many_shot_acc", "many-shot acc (>100)"),
        ("medium_shot_acc", "medium-shot acc (20-100)"),
        ("few_shot_acc", "few-shot acc (<20)"),
    ):
        if metrics.get(key) is not None:
            summary.append((label, metrics[key]))
    label_w = max(len(label) for label, _ in summary)
    lines += ["", "Summary (percent):"] + [f"  {label:<{label_w}}  {_pct(v):>6}" for label, v in summary]

    cm = metrics["confusion_matrix"]
    if len(cm) <= MAX_CLASSES_SHOWN:
        cell_w = max(3, len(str(max(max(row) for row in cm))))
        row_w = min(max(len(f"{r['class']} {r['name']}") for r in rows), 5 + 1 + name_w)
        lines += [
            "",
            "Confusion matrix (rows = true, columns = predicted):",
            " " * row_w + " " + "".join(f" {c:>{cell_w}}" for c in range(len(cm))),
        ]
        for r, row in zip(rows, cm):
            label = f"{r['class']} {r['name']}"[:row_w]
            lines.append(f"{label:<{row_w}} " + "".join(f" {v:>{cell_w}}" for v in row))
    else:
        lines += ["", f"Confusion matrix: {len(cm)} classes, see the confusion plot or metrics.json."]
    return "\n".join(lines)


def plot_confusion(cm, class_names, path, title: str = "Confusion matrix") -> Path:
    """Save a row-normalised confusion-matrix heatmap (counts annotated for <= 20 classes) as a PNG."""
    # Figure + Agg canvas directly instead of pyplot: no global backend switch, nothing left open.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = np.asarray(cm, dtype=np.int64)
    n = len(cm)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)

    size = min(max(4.0, 0.5 * n + 2.0), 14.0)
    fig = Figure(figsize=(size + 1.0, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set(title=title, xlabel="predicted", ylabel="true")
    if n <= MAX_CLASSES_SHOWN:
        ax.set_xticks(range(n), [str(c) for c in class_names], rotation=45, ha="right")
        ax.set_yticks(range(n), [str(c) for c in class_names])
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if frac[i, j] > 0.5 else "black",
                )
    fig.tight_layout()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    fig.clear()
    return path
