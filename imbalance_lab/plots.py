"""Pictures of one run (the sweep report draws its own): the 2-D feature scatter of the affinity-loss paper
(Hayat et al. 2019); the per-epoch class distribution of pseudo-labels and q̂ of DebiasPL (Wang et al. 2022,
Fig. 1), for one run or several side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def plot_embedding(features: np.ndarray, labels: np.ndarray, class_names: list[str], path: Path,
                   title: str, centres: np.ndarray | None = None, centres_per_class: int = 1) -> Path:
    """Scatter of 2-D test-set embeddings coloured by true class; affinity centres drawn as stars."""
    fig = Figure(figsize=(7, 6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = [f"C{c % 10}" for c in range(len(class_names))]
    for c, name in enumerate(class_names):
        pts = features[labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.5, color=colours[c], label=f"{name} ({len(pts)})")
    if centres is not None:
        for k, (cx, cy) in enumerate(centres):
            ax.scatter(cx, cy, marker="*", s=250, color=colours[k // centres_per_class], edgecolors="black",
                       linewidths=1.0, zorder=3)
    ax.set_title(title)
    ax.set_xlabel("embedding 1")
    ax.set_ylabel("embedding 2")
    ax.legend(markerscale=3, fontsize=8, loc="best", title="class (test n)" + (", ★ centres" if centres
                                                                                is not None else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_pseudo_labels(runs: dict[str, list[dict]], class_names: list[str], path: Path, title: str) -> Path:
    """For each run (label -> its history): a heat map of the share of each class among the accepted
    pseudo-labels per epoch (``pseudo_label_counts``), and one of q̂ per epoch (``q_hat``), the uniform share
    1/C marked as the colour scale's middle."""
    c = len(class_names)
    fig = Figure(figsize=(4.5 * len(runs) + 1.5, 7.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(runs), squeeze=False)
    for col, (label, history) in enumerate(runs.items()):
        epochs = [h for h in history if "pseudo_label_counts" in h]
        counts = np.array([h["pseudo_label_counts"] for h in epochs], dtype=float).reshape(-1, c)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        q_hat = np.array([h["q_hat"] for h in epochs], dtype=float).reshape(-1, c)
        for row, (values, what) in enumerate(((share, "share of accepted pseudo-labels"), (q_hat, "q̂"))):
            ax = axes[row, col]
            image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=0, vmax=2 / c, interpolation="nearest",
                              extent=(-0.5, c - 0.5, len(values) + 0.5, 0.5))
            ax.set_xticks(range(c), class_names if c <= 20 else None, rotation=90, fontsize=7)
            ax.set_ylabel("epoch")
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            total = int(counts[-1].sum()) if len(counts) else 0
            ax.set_title(f"{label}: {what}" + (f"\n(last epoch: {total} accepted)" if row == 0 else ""), fontsize=9)
            fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
