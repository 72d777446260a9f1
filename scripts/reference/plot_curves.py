"""Per-epoch test macro F1 (and loss) of our runs and of the reference port, on one figure.

Each curve is LABEL=PATH, PATH a run's ``metrics.json`` (its ``history``) or the JSON that
``koshian2_affinity_keras.py --out`` writes (the same ``history`` keys: epoch, loss, test_macro_f1).

    python scripts/reference/plot_curves.py --out figure.png \
        "ours=RUN/metrics.json" "Keras port=keras.json" [--published 98.27]
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def history(path: Path) -> list[dict]:
    rows = json.loads(path.read_text())["history"]
    return [r for r in rows if r.get("test_macro_f1") is not None]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("curves", nargs="+", metavar="LABEL=PATH")
    p.add_argument("--out", type=Path, help="the figure (PNG)")
    p.add_argument("--published", type=float, action="append", default=[],
                   help="a published macro F1 in %% to draw as a line (repeatable)")
    p.add_argument("--title", default="")
    p.add_argument("--csv", type=Path, help="also write the curves here: label, epoch, loss, test_macro_f1")
    p.add_argument("--ymin", type=float, default=0.0, help="lower end of the macro F1 axis, in %%")
    args = p.parse_args()
    fig, (f1_ax, loss_ax) = plt.subplots(1, 2, figsize=(12, 4.2))
    table = []
    for curve in args.curves:
        label, _, path = curve.partition("=")  # the first "=": labels have none, run folder names may
        rows = history(Path(path))
        table += [{"label": label, "epoch": r["epoch"], "loss": r["loss"], "test_macro_f1": r["test_macro_f1"]}
                  for r in rows]
        epochs = [r["epoch"] for r in rows]
        f1_ax.plot(epochs, [100 * r["test_macro_f1"] for r in rows], label=label, lw=1.2)
        loss_ax.plot(epochs, [r["loss"] for r in rows], label=label, lw=1.2)
    for value in args.published:
        f1_ax.axhline(value, color="grey", ls="--", lw=0.8)
        f1_ax.annotate(f"published {value:g}", (1, value), fontsize=8, color="grey", va="bottom")
    f1_ax.set(xlabel="epoch", ylabel="test macro F1 (%)", ylim=(args.ymin, 100))
    loss_ax.set(xlabel="epoch", ylabel="training loss (epoch mean)", yscale="log")
    for ax in (f1_ax, loss_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title, fontsize=10)
    fig.tight_layout()
    if args.out:
        fig.savefig(args.out, dpi=110)
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)


if __name__ == "__main__":
    main()
