"""Ours next to the published numbers: ``python -m imbalance_lab.report <sweep folder> --compare <table>``.

For each published cell of ``<table>`` (``imbalance_lab/reference/published.csv``) that the sweep has runs
for, the comparison shows our median, mean ± sd and n over seeds — the numbers of the sweep summary
(``summary_aggregate.csv``), converted to the published metric — next to the published value and the
difference (ours − published), once per protocol the runs support:

- ``last epoch``: our headline (test metrics after the last epoch);
- ``best on validation``: the test metrics at the epoch of the best validation macro F1 (runs with
  ``data.val_fraction > 0``);
- ``best epoch on test``: the best test value over the evaluated epochs — shown only where the source
  reported it (``protocol_kind = best_test_epoch``), labelled as the source's protocol. It chooses the
  epoch on the test set, so it is optimistic; ours stays the last epoch.

Metric conversions: ``macro_f1_pct`` = 100 · macro F1; ``top1_error_pct`` = 100 · (1 − accuracy);
``balanced_error_pct`` = 100 · (1 − balanced accuracy); ``top1_acc_pct`` = 100 · accuracy. A cell's
runs are those whose imbalance ratio is the cell's and whose method / config match the cell's ``ours``
selector (``method=ce``, ``loss.base=focal loss.beta=0.9999 loss.gamma=1``, ...); when they fall into
several summary methods (a sweep that also varies e.g. ``optim.lr``), each is a row. The published value
carries the source's sd over seeds where it gives one. Cells the sweep has no runs for are listed as
not run: a sweep that holds part of a table compares the part it has.

Every published number says where it was read (``verified_from``: a paper table and row, a repository file
and line, a results file and commit). A number that is not what its label says (e.g. a row named after one
algorithm that, by the source's own code, measured another) carries a ``caveat``: its published value is
marked ``[k]`` and the caveat is printed under the table, on the console and in the Markdown.

Writes ``compare_<table>.csv``, ``compare_<table>.md`` and ``compare_<table>.png`` (ours vs published,
by imbalance ratio) into the output folder.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd

from .reference import published
from .report import (
    _fmt,
    _load_yaml,
    _ratio,
    aggregate,
    check_one_sweep,
    collect_runs,
    find_run_dirs,
    markdown_table,
)
from .runfolder import METRICS_FILE, write_bytes_atomic, write_text_atomic

# published metric -> (our summary metric, its conversion, the conversion in words); a spread (sd) is 100 x ours
CONVERSIONS = {
    "macro_f1_pct": ("macro_f1", lambda v: 100 * v, "100 · macro F1"),
    "top1_error_pct": ("accuracy", lambda v: 100 * (1 - v), "100 · (1 − accuracy)"),
    "balanced_error_pct": ("balanced_accuracy", lambda v: 100 * (1 - v), "100 · (1 − balanced accuracy)"),
    "top1_acc_pct": ("accuracy", lambda v: 100 * v, "100 · accuracy"),
}
# protocol -> (label, summary column prefix)
PROTOCOLS = {
    "last_epoch": ("last epoch", "test_"),
    "best_on_validation": ("best on validation", "bestval_test_"),
    "best_test_epoch": ("best epoch on test (the source's protocol)", "maxtest_test_"),
}
COLUMNS = ["dataset", "imbalance_ratio", "published_method", "ours_method", "protocol", "n", "ours_median",
           "ours_mean", "ours_sd", "published", "published_sd", "difference", "metric", "published_protocol",
           "source", "verified_from", "caveat"]


class UnknownTable(ValueError):
    """No such published table; the message lists the tables there are."""


def tables() -> list[str]:
    return sorted({r["table"] for r in published()})


def cells_of(table: str) -> list[dict]:
    cells = published(table)
    if not cells:
        raise UnknownTable(f"--compare {table}: no such published table; the tables are: {', '.join(tables())}")
    return cells


def parse_selector(text: str) -> dict[str, str]:
    """``"loss.name=cb loss.beta=0"`` -> ``{"loss.name": "cb", "loss.beta": "0"}``."""
    return dict(part.split("=", 1) for part in text.split())


def run_settings(sweep_dir: Path) -> dict[str, dict]:
    """Per run folder (as in ``summary_runs.csv``'s ``run`` column): its resolved config flattened to dotted
    keys, plus ``method`` (the method metrics.json names)."""
    out = {}
    for run_dir in find_run_dirs(sweep_dir):
        rel = run_dir.relative_to(sweep_dir).as_posix() if run_dir != sweep_dir else "."
        try:
            metrics = json.loads((run_dir / METRICS_FILE).read_text())
        except (OSError, ValueError):
            metrics = {}
        metrics = metrics if isinstance(metrics, dict) else {}
        config = metrics.get("config")
        if not isinstance(config, dict):
            config = _load_yaml(run_dir / ".hydra" / "config.yaml") or {}
        flat = dict(flatten(config))
        flat["method"] = metrics.get("method") or (config.get("loss") or {}).get("name")
        if isinstance(metrics.get("device"), dict):
            flat |= {f"device.{k}": v for k, v in metrics["device"].items()}
        out[rel] = flat
    return out


def sweep_command(sweep_dir: Path) -> str | None:
    """The command line of the sweep, from Hydra's ``multirun.yaml`` (None for a single run's folder)."""
    recorded = _load_yaml(sweep_dir / "multirun.yaml")
    overrides = (recorded or {}).get("hydra", {}).get("overrides") if isinstance(recorded, dict) else None
    if not isinstance(overrides, dict):
        return None
    hydra = [o for o in overrides.get("hydra") or [] if not o.startswith("hydra.mode=")]
    return " ".join(["python -m imbalance_lab -m", *(overrides.get("task") or []), *hydra])


def device_of(settings: dict) -> str | None:
    """'cpu, 2 threads' or the GPU's name, from a run's recorded device."""
    kind, name, threads = (settings.get(f"device.{k}") for k in ("type", "name", "threads"))
    if kind is None:
        return None
    return f"cpu, {threads} threads" if kind == "cpu" else str(name)


def flatten(node: dict, prefix: str = ""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def matches(settings: dict, selector: dict[str, str]) -> bool:
    """Every selector key has the selector's value in the run (numbers compared as numbers); ``a|b`` accepts
    either (``method=fixmatch|debiaspl``: both arms at one setting)."""
    return all(settings.get(key) is not None and any(_equal(settings[key], w) for w in wanted.split("|"))
               for key, wanted in selector.items())


def _equal(value, wanted: str) -> bool:
    try:
        return math.isclose(float(value), float(wanted))
    except (TypeError, ValueError):
        return str(value).lower() == wanted.lower()


def compare(sweep_dir: Path | str, table: str) -> tuple[pd.DataFrame, dict]:
    """The comparison rows (``COLUMNS``) and facts for the Markdown: the runs' dataset notes, the number of
    evaluated epochs behind the best-epoch-on-test protocol, the cells not run."""
    sweep_dir = Path(sweep_dir)
    cells = cells_of(table)
    check_one_sweep(sweep_dir)
    runs = collect_runs(sweep_dir)
    agg = aggregate(runs).set_index(["method", "imbalance_ratio"])
    settings = run_settings(sweep_dir)
    done = runs[(runs["status"] == "done") & runs["debug"].isna()]  # a debug run is no result
    datasets = sorted({str(d) for d in done["dataset"].dropna()})
    wanted = sorted({c["dataset"] for c in cells})
    if datasets and not set(datasets) & set(wanted):
        raise UnknownTable(f"--compare {table}: the table is on {', '.join(wanted)}, the sweep's runs on "
                           f"{', '.join(datasets)}; choose one of: {', '.join(tables())}")
    rows, missing = [], []
    for cell in cells:
        selector = parse_selector(cell["ours"])
        metric, convert, _ = CONVERSIONS[cell["metric"]]
        here = done[(done["imbalance_ratio"] == cell["imbalance_ratio"]) & (done["dataset"] == cell["dataset"])]
        methods = sorted({m for run, m in zip(here["run"], here["method"])
                          if selector and matches(settings[run], selector)})
        if not methods:
            missing.append(cell)
            continue
        protocols = ["last_epoch", "best_on_validation"] + (["best_test_epoch"]
                                                            if cell["protocol_kind"] == "best_test_epoch" else [])
        for method in methods:
            stats = agg.loc[(method, cell["imbalance_ratio"])]
            for protocol in protocols:
                column = PROTOCOLS[protocol][1] + metric
                if pd.isna(stats.get(f"{column}_median", math.nan)):
                    continue  # e.g. no validation split: the protocol is not supported by these runs
                median, mean = convert(stats[f"{column}_median"]), convert(stats[f"{column}_mean"])
                sd = stats.get(f"{column}_sd", math.nan)
                rows.append({"dataset": cell["dataset"], "imbalance_ratio": cell["imbalance_ratio"],
                             "published_method": cell["method"], "ours_method": method, "protocol": protocol,
                             "n": int(stats["n"]), "ours_median": median, "ours_mean": mean,
                             "ours_sd": 100 * sd if pd.notna(sd) else math.nan, "published": cell["value"],
                             "published_sd": cell["sd"] if cell["sd"] is not None else math.nan,
                             "difference": median - cell["value"], "metric": cell["metric"],
                             "published_protocol": cell["protocol"], "source": cell["source"],
                             "verified_from": cell["verified_from"], "caveat": cell["caveat"]})
    evaluations = done["test_evaluations"].dropna()
    finished = pd.to_datetime(done["finished_at"], errors="coerce")
    started = finished - pd.to_timedelta(done["wall_seconds"], unit="s")
    span = (finished.max() - started.min()).total_seconds() if len(done) else math.nan  # nan: no finishing times
    facts = {"command": sweep_command(sweep_dir), "devices": sorted({d for d in map(device_of, settings.values()) if d}),
             "seeds": sorted({int(x) for x in done["seed"].dropna()}),
             "wall_seconds": None if math.isnan(span) else span,
             "notes": sorted({str(n) for n in done["dataset_note"].dropna() if str(n).strip()}),
             "datasets": datasets, "missing": missing, "epochs": sorted({int(e) for e in done["epochs"].dropna()}),
             "test_evaluations": sorted({int(e) for e in evaluations}), "runs": len(runs), "done": len(done)}
    return pd.DataFrame(rows, columns=COLUMNS), facts


def caveat_marks(frame: pd.DataFrame) -> dict[str, int]:
    """Each distinct caveat of the compared cells -> its number k (marked ``[k]``), in table order."""
    marks: dict[str, int] = {}
    for caveat in frame["caveat"]:
        if isinstance(caveat, str) and caveat.strip():
            marks.setdefault(caveat.strip(), len(marks) + 1)
    return marks


def _published(row: dict, marks: dict[str, int]) -> str:
    text = _fmt(row["published"], 2) + (f" ± {_fmt(row['published_sd'], 2)}" if pd.notna(row["published_sd"]) else "")
    caveat = row.get("caveat")
    return text + (f" [{marks[caveat.strip()]}]" if isinstance(caveat, str) and caveat.strip() else "")


def render_markdown(sweep_dir: Path, table: str, frame: pd.DataFrame, facts: dict) -> str:
    cells = cells_of(table)
    epochs = ", ".join(map(str, facts["epochs"])) or "–"
    lines = [f"# `{table}`: ours vs published", "",
             (f"Sweep `{sweep_dir}`: {facts['done']} finished runs of {facts['runs']}; epochs per run: {epochs}; "
             f"seeds {', '.join(map(str, facts['seeds'])) or '–'}."), ""]
    if facts["command"]:
        lines += ["```", facts["command"], "```", ""]
    if facts["wall_seconds"] is not None:
        lines += [(f"Hardware: {'; '.join(facts['devices']) or '?'}. Wall time, first run's start to last run's "
                  f"end: {facts['wall_seconds'] / 60:.1f} min."), ""]
    for metric in sorted({c["metric"] for c in cells}):
        lines.append(f"- `{metric}`: ours = {CONVERSIONS[metric][2]}, from the sweep summary "
                     "(`summary_aggregate.csv`); each cell: **median** (mean ± sd) over seeds, n seeds.")
    lines.append("- Published protocol: " + "; ".join(sorted({c["protocol"] for c in cells})) + ".")
    lines.append("- **last epoch** is our headline. **best on validation**: test metrics at the epoch of "
                 "the best validation macro F1 (needs `data.val_fraction > 0`). **best epoch on test**: the "
                 "best test value over the evaluated epochs — shown only where the source reported it that "
                 "way; it picks the epoch on the test set, so it is optimistic.")
    if facts["test_evaluations"]:
        lines.append(f"- Test metrics were computed at {', '.join(map(str, facts['test_evaluations']))} "
                     "epochs per run (`trainer.eval_every`): the best epoch on test is the best of those.")
    for note in facts["notes"]:
        lines.append(f"- **Dataset note**: {note}")
    lines.append("")
    header = ["r", "published method", "ours", "protocol", "n", "ours median (mean ± sd)", "published",
              "ours − published"]
    marks = caveat_marks(frame)
    body = [[_ratio(r["imbalance_ratio"]), r["published_method"], r["ours_method"],
             PROTOCOLS[r["protocol"]][0], str(r["n"]),
             f"{_fmt(r['ours_median'], 2)} ({_fmt(r['ours_mean'], 2)} ± {_fmt(r['ours_sd'], 2)})",
             _published(r, marks), f"{r['difference']:+.2f}"] for r in frame.to_dict("records")]
    lines += [markdown_table(header, body) if body else "_no run of this sweep matches a cell of the table_", ""]
    if marks:
        lines += ["**Caveats on the published numbers** (what a marked number measures, by its source):", ""]
        lines += [f"{k}. {caveat}" for caveat, k in marks.items()] + [""]
    if facts["missing"]:
        lines += [f"Cells not run in this sweep ({len(facts['missing'])}): " + ", ".join(
            f"{c['method']} r={_ratio(c['imbalance_ratio'])}" for c in facts["missing"]) + ".", ""]
        unselectable = [c for c in facts["missing"] if not c["ours"]]
        if unselectable:
            lines += [("Of these, the source's setting is not transcribed (the `ours` column of "
                       "published.csv is empty), so no run can be matched: "
                       + ", ".join(f"{c['method']} r={_ratio(c['imbalance_ratio'])}" for c in unselectable)
                       + "."), ""]
    sources = sorted({c["source"] for c in cells})
    lines += ["Source: " + "; ".join(sources) + ".", ""]
    read = frame.drop_duplicates(["published_method", "imbalance_ratio"]) if not frame.empty else frame
    if not read.empty:
        lines += ["Where each compared published number was read:", ""]
        lines += [f"- {r['published_method']} r={_ratio(r['imbalance_ratio'])}: {r['verified_from']}"
                  for r in read.to_dict("records")] + [""]
    return "\n".join(lines)


def plot(frame: pd.DataFrame, table: str) -> bytes | None:
    """PNG: x = imbalance ratio (log), one colour per published method; published values dashed, ours solid
    (median, error bar sd) per protocol."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if frame.empty:
        return None
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    styles = {"last_epoch": "o-", "best_on_validation": "s-.", "best_test_epoch": "^:"}
    colours = {}
    for (method, ours, protocol), part in frame.groupby(["published_method", "ours_method", "protocol"], sort=True):
        part = part.sort_values("imbalance_ratio")
        colour = colours.setdefault(method, f"C{len(colours) % 10}")
        ax.errorbar(part["imbalance_ratio"], part["ours_median"], yerr=part["ours_sd"].fillna(0.0),
                    fmt=styles[protocol], color=colour, capsize=3, linewidth=1.2,
                    label=f"ours: {ours}, {PROTOCOLS[protocol][0]}")
    for method, part in frame.drop_duplicates(["published_method", "imbalance_ratio"]).groupby("published_method"):
        part = part.sort_values("imbalance_ratio")
        ax.plot(part["imbalance_ratio"], part["published"], "x--", color=colours[method], linewidth=1,
                label=f"published: {method}")
    ax.set_xscale("log")
    ax.set_xlabel("imbalance ratio r (log scale)")
    ax.set_ylabel(frame["metric"].iloc[0])
    ax.set_title(f"{table}: ours (median ± sd over seeds) vs published", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def write_comparison(sweep_dir: Path | str, table: str, out_dir: Path | str | None = None) -> dict:
    """Write ``compare_<table>.{csv,md,png}``; returns ``{"rows": DataFrame, "facts": dict, "files": [paths]}``."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no such sweep folder: {sweep_dir}")
    frame, facts = compare(sweep_dir, table)
    out_dir = Path(out_dir) if out_dir else sweep_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for suffix, payload in (("csv", frame.to_csv(index=False)),
                            ("md", render_markdown(sweep_dir, table, frame, facts)),
                            ("png", plot(frame, table))):
        if payload is None:
            continue
        path = out_dir / f"compare_{table}.{suffix}"
        (write_text_atomic if isinstance(payload, str) else write_bytes_atomic)(path, payload)
        files.append(path)
    return {"rows": frame, "facts": facts, "files": files}


def comparison_text(result: dict, table: str) -> str:
    frame, facts = result["rows"], result["facts"]
    lines = [f"{table}: ours vs published ({len(frame)} rows; {len(facts['missing'])} cells not run)"]
    for note in facts["notes"]:
        lines.append(f"  dataset note: {note}")
    marks = caveat_marks(frame)
    for r in frame.to_dict("records"):
        lines.append(f"  r={_ratio(r['imbalance_ratio']):>5} {r['published_method']:<20} {r['ours_method']:<28} "
                     f"{PROTOCOLS[r['protocol']][0]:<44} n={r['n']:<2} ours {_fmt(r['ours_median'], 2):>6} "
                     f"published {_published(r, marks):>6} ({r['difference']:+.2f} {r['metric']})")
    lines += [f"  [{k}] caveat: {caveat}" for caveat, k in marks.items()]
    lines += [f"wrote {p}" for p in result["files"]]
    return "\n".join(lines)
