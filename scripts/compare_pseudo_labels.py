"""Pseudo-label class distributions and q̂ per epoch of several semi-supervised runs side by side (DebiasPL,
Wang et al. 2022, Fig. 1), from their run folders' metrics.json:

    python scripts/compare_pseudo_labels.py outputs/.../fixmatch_run outputs/.../debiaspl_run -o pseudo_labels.png
"""

import argparse
import json
from pathlib import Path

from imbalance_lab.compare import flatten
from imbalance_lab.plots import plot_pseudo_labels


def labels(metrics: list[dict], folders: list[Path]) -> list[str]:
    """Each run's method and the settings in which the runs differ (ssl.debias is the method's name); the
    folder name only where that leaves two runs alike."""
    flat = [dict(flatten(m.get("config") or {})) for m in metrics]
    differ = sorted(k for k in set().union(*flat) if k != "ssl.debias" and len({repr(f.get(k)) for f in flat}) > 1)
    out = [" ".join([m["method"], *(f"{k.rsplit('.', 1)[-1]}={f.get(k)}" for k in differ)])
           for m, f in zip(metrics, flat)]
    return [f"{label} ({folder.name})" if out.count(label) > 1 else label for label, folder in zip(out, folders)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (method=fixmatch)")
    parser.add_argument("-o", "--out", type=Path, default=Path("pseudo_labels_compare.png"))
    args = parser.parse_args()
    metrics = [json.loads((run / "metrics.json").read_text()) for run in args.runs]
    runs = {label: m["history"] for label, m in zip(labels(metrics, args.runs), metrics)}
    plot_pseudo_labels(runs, metrics[0]["data"]["class_names"], args.out,
                       title=f"{metrics[0]['dataset']}: accepted pseudo-labels per epoch")
    print(args.out)


if __name__ == "__main__":
    main()
