"""How much the choice of the few test images of a reduced class moves macro F1.

At r = 100, ``affinity_mnist`` tests on 10 images per even digit, so one image is 10 points of that digit's
recall. This script takes finished runs (their ``model.pt`` and recorded config), predicts the source's WHOLE
test set once, and scores macro F1 on
  - the run's own test subset (a seeded draw per digit, ``data.subset_order=seeded``),
  - the first n test images per reduced class (``data.subset_order=first``: what koshian2/affinity-loss's
    ``inbalanced_mnist`` keeps),
  - ``--draws`` random draws of n images per reduced class (mean, sd, 5 % / 95 % quantiles, max),
and prints each class's recall on the whole test set, which no draw of 10 images limits.

    python scripts/reference/subset_spread.py RUN_FOLDER [RUN_FOLDER ...] [--draws 2000] [--json out.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from sklearn.metrics import f1_score

from imbalance_lab.baselines.decoupled import Stage1
from imbalance_lab.checkpoint import FINAL_WEIGHTS
from imbalance_lab.data.split import build_split
from imbalance_lab.losses import LOSSES, build_loss
from imbalance_lab.runfolder import METRICS_FILE
from imbalance_lab.schema import Config, to_dataclasses


def whole_test_predictions(folder: Path) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """(the run's metrics, the whole source test set's labels in the split's label space, the predictions,
    the source test index of each)."""
    metrics = json.loads((folder / METRICS_FILE).read_text())
    recorded = dict(metrics["config"])
    loss_cfg = LOSSES[recorded["loss"]["name"]].Config(**recorded.pop("loss"))
    composed = OmegaConf.merge(OmegaConf.structured(Config), recorded)
    composed.loss = OmegaConf.structured(loss_cfg)
    cfg = to_dataclasses(composed)
    # The same training images (hence the same standardisation); every test image of the kept classes.
    split = build_split(dataclasses.replace(cfg.data, test_policy="balanced"))
    weights = torch.load(folder / FINAL_WEIGHTS, weights_only=True, map_location="cpu")
    net = Stage1(folder, metrics, weights).network(cfg, split).eval()
    loss = build_loss(cfg.loss, split.class_counts["train"])
    x = torch.from_numpy(split.test_x).float() / 255  # the network standardises x / 255 itself
    with torch.no_grad():
        pred = torch.cat([loss.scores(net(x[k:k + 1000])).argmax(1) for k in range(0, len(x), 1000)]).numpy()
    return metrics, split.test_y, pred, split.indices["test"]


def spread(folder: Path, draws: int) -> dict:
    metrics, y, pred, source_index = whole_test_predictions(folder)
    n_per_class = np.bincount(y)
    counts = (metrics["data"].get("class_counts") or {}).get("test") or []
    reduced = [c for c, n in enumerate(counts) if n < n_per_class[c]]
    full = np.flatnonzero(~np.isin(y, reduced))
    own = np.flatnonzero(np.isin(source_index, np.load(folder / "subset_indices.npz")["test"]))
    # the split's test images are in source order within a class, so "first n" is a prefix of each class
    first = np.sort(np.concatenate([full] + [np.flatnonzero(y == c)[:counts[c]] for c in reduced]))
    rng = np.random.default_rng(0)

    def f1(idx):
        return float(f1_score(y[idx], pred[idx], average="macro"))

    sample = [f1(np.concatenate([full] + [rng.choice(np.flatnonzero(y == c), counts[c], replace=False)
                                         for c in reduced])) for _ in range(draws)]
    return {"run": folder.name, "method": metrics.get("method") or metrics["config"]["loss"]["name"],
            "whole_test_recall": [round(float((pred[y == c] == c).mean()), 4) for c in range(len(n_per_class))],
            "own_subset": round(f1(own), 4), "first_n": round(f1(first), 4),
            "random": {"draws": draws, "mean": round(float(np.mean(sample)), 4), "sd": round(float(np.std(sample)), 4),
                       "q05": round(float(np.quantile(sample, 0.05)), 4),
                       "q95": round(float(np.quantile(sample, 0.95)), 4), "max": round(float(np.max(sample)), 4)}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished run folders (metrics.json, model.pt)")
    p.add_argument("--draws", type=int, default=2000)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(1)
    results = [spread(folder, args.draws) for folder in args.runs]
    for r in results:
        q = r["random"]
        print(f"{r['method']:<12} whole-test recall {r['whole_test_recall']}\n"
              f"{'':<12} macro F1: own subset {r['own_subset']:.4f} · first n {r['first_n']:.4f} · "
              f"{q['draws']} random draws {q['mean']:.4f} ± {q['sd']:.4f} [5 % {q['q05']:.4f}, 95 % {q['q95']:.4f}, "
              f"max {q['max']:.4f}]")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
