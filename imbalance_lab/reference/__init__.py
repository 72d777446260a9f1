"""Published numbers to compare with, as data (``published.csv``): one row per table cell — table (the
experiment preset that reproduces it), dataset, imbalance ratio, method (our loss option, or the paper's
row name where no single option matches, e.g. ``class_balanced_best``), metric (``macro_f1_pct``,
``top1_error_pct``, ``balanced_error_pct``, ``top1_acc_pct``), value, sd (the source's spread over seeds, where
it gives one), the protocol the source used (e.g. the maximum over epochs
on the test set — not ours, which is last-epoch), ``protocol_kind`` (``last_epoch`` or ``best_test_epoch``:
which of our protocols is the source's), the source, ``ours``: which of our runs the cell compares with,
as ``key=value`` pairs on the run's method and resolved config (``method=ce``; ``loss.name=cb loss.base=focal
loss.beta=0.9999 loss.gamma=1``; ``method=fixmatch|debiaspl``: either), empty where the source's setting cannot be identified (Cao et al.'s
"CB Focal" at CIFAR-10 r=10), ``verified_from``: where the value can be read (a paper's table, row and column,
a repository file and line at a commit, a seed article's table), and ``caveat``: what the number is when it is
not what its label says (a blog's reimplementation, another algorithm by the source's own code, another protocol or recipe),
else empty. Cui et al.'s best class-balanced setting per ratio (their Table 2, rows "Loss Type", β, γ) on
CIFAR-10: r=200 softmax β=0.9999; 100 focal β=0.9999 γ=1; 50 focal β=0.9999 γ=2; 20 softmax β=0.9999;
10 sigmoid β=0.9999; on CIFAR-100: r=200 and 100 focal β=0.9 γ=1; 50 sigmoid β=0.99; 20 focal β=0.99
γ=0.5; 10 focal β=0.999 γ=0.5 (and sigmoid at r=1 on both, where every class weight is equal).
``imbalance_lab.compare`` puts our sweeps next to these."""

from __future__ import annotations

import csv
from pathlib import Path

PUBLISHED = Path(__file__).with_name("published.csv")


def published(table: str | None = None) -> list[dict]:
    """The published cells (of one table, if named), values as floats and ratios as numbers; the other columns
    (``verified_from`` and ``caveat`` among them) as the file's strings."""
    with open(PUBLISHED, newline="") as f:
        rows = [dict(r, imbalance_ratio=float(r["imbalance_ratio"]), value=float(r["value"]),
                     sd=float(r["sd"]) if r["sd"] else None) for r in csv.DictReader(f)]
    return [r for r in rows if table is None or r["table"] == table]
