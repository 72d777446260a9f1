"""Pseudo-label class distributions and q̂ per epoch of several semi-supervised runs side by side (DebiasPL,
Wang et al. 2022, Fig. 1), from their run folders' metrics.json:

    python scripts/compare_pseudo_labels.py outputs/.../fixmatch_run outputs/.../debiaspl_run -o pseudo_labels.png
"""

import argparse
import json
from pathlib import Path

from imbalance_lab.plots import plot_pseudo_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (method=fixmatch)")
    parser.add_argument("-o", "--out", type=Path, default=Path("pseudo_labels_compare.png"))
    args = parser.parse_args()
    metrics = [json.loads((run / "metrics.json").read_text()) for run in args.runs]
    runs = {f"{m['method']} ({run.name})": m["history"] for m, run in zip(metrics, args.runs)}
    plot_pseudo_labels(runs, metrics[0]["data"]["class_names"], args.out,
                       title=f"{metrics[0]['dataset']}: accepted pseudo-labels per epoch")
    print(args.out)


if __name__ == "__main__":
    main()
