"""``imbalance_lab/reference/published.csv``: every published number says where it can be read."""

from __future__ import annotations

import csv
import io

from imbalance_lab.compare import parse_selector
from imbalance_lab.reference import PUBLISHED, published


def rows() -> list[dict]:
    with open(PUBLISHED, newline="") as f:
        return list(csv.DictReader(f))


def test_every_published_number_says_where_it_was_read():
    with open(PUBLISHED, newline="") as f:
        header = next(csv.reader(f))
    assert {"verified_from", "caveat"} <= set(header)
    unread = [(r["table"], r["imbalance_ratio"], r["method"]) for r in rows()
              if not r["verified_from"].strip()]
    assert unread == []


def test_published_keeps_the_provenance_columns_as_strings():
    cells = published()
    assert len(cells) == len(rows())
    assert all(isinstance(c["verified_from"], str) and isinstance(c["caveat"], str) for c in cells)
    (cell,) = [c for c in published("affinity_mnist") if c["imbalance_ratio"] == 10 and c["method"] == "ce"]
    where = cell["verified_from"]
    assert where.startswith("koshian2/affinity-loss@") and "README.md:" in where
    assert "reimplementation" in cell["caveat"]


def test_cells_are_unique_and_their_selectors_parse():
    keys = [(r["table"], r["imbalance_ratio"], r["method"]) for r in rows()]
    assert len(keys) == len(set(keys))
    for r in rows():
        selector = parse_selector(r["ours"])
        assert all(key and value for key, value in selector.items()), r["ours"]
        if not selector:  # a cell that no run can match says why
            assert r["caveat"].strip(), (r["table"], r["imbalance_ratio"], r["method"])


def test_cui_cifar100_best_settings_are_filled():
    best = {c["imbalance_ratio"]: c["ours"] for c in published("cb_cifar100_lt")
            if c["method"] == "class_balanced_best"}
    assert best[100] == "loss.name=cb loss.base=focal loss.beta=0.9 loss.gamma=1"
    assert best[10] == "loss.name=cb loss.base=focal loss.beta=0.999 loss.gamma=0.5"
    assert all(best.values())


def test_the_file_keeps_its_csv_form():
    """Minimal quoting and '\\n' line ends: what csv.writer(lineterminator='\\n') writes back unchanged."""
    with open(PUBLISHED, newline="", encoding="utf-8") as f:
        raw = f.read()
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(csv.reader(io.StringIO(raw)))
    assert out.getvalue() == raw
