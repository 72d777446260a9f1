"""The README's table of reproductions, made from ``docs/results/reproductions.csv`` (one row per results page:
which published table, which cells, at which budget, ours vs published, the hardware).

    python scripts/reproduction_table.py           # rewrite the README's table between its markers
    python scripts/reproduction_table.py --check   # exit 1 if the README's table is not the CSV's

A results page is added to ``docs/results/`` with its row in the CSV; a test checks that every page has a row and
the README shows the CSV, so the table stays current with the pages.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
INDEX = RESULTS / "reproductions.csv"
README = ROOT / "README.md"
BEGIN = "<!-- reproductions: begin (made by scripts/reproduction_table.py from docs/results/reproductions.csv) -->"
END = "<!-- reproductions: end -->"
HEADER = ["table", "cells", "budget", "ours", "published", "hardware", "page"]


def rows() -> list[dict]:
    with open(INDEX, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def render(entries: list[dict]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in entries:
        cells = [f"`{r['table']}`", r["cells"], r["budget"], r["ours"], r["published"], r["hardware"],
                 f"[{Path(r['page']).stem}](docs/results/{r['page']})"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join([BEGIN, *lines, END])


def with_table(readme: str, table: str) -> str:
    start, stop = readme.index(BEGIN), readme.index(END) + len(END)
    return readme[:start] + table + readme[stop:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the README's table differs from the CSV's")
    args = parser.parse_args(argv)
    readme = README.read_text(encoding="utf-8")
    if BEGIN not in readme or END not in readme:
        print(f"error: README.md has no reproduction table markers ({BEGIN!r} … {END!r})", file=sys.stderr)
        return 2
    wanted = with_table(readme, render(rows()))
    if args.check:
        if wanted != readme:
            print("README.md's reproduction table is not docs/results/reproductions.csv's: run "
                  "python scripts/reproduction_table.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
