"""Pictures of one run (the sweep report draws its own): the 2-D feature scatter of the affinity-loss paper (Hayat et al. 2019)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


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
