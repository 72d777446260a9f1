"""Sweep summary: ``python -m imbalance_lab.report <sweep folder>`` (also run at the end of every multirun).

Reads every run folder under a sweep folder (finished or interrupted) and writes, into the sweep folder:

- ``summary_runs.csv`` — one tidy row per run: folder, status, reason, the run's overrides, method label,
  imbalance ratio, seed and the headline metrics;
- ``summary_aggregate.csv`` — per method x imbalance ratio over seeds: n, median, mean, sd of each metric;
- ``summary.md`` — the aggregate as Markdown, with what the numbers are and which runs did not finish;
- ``summary_macro_f1.png`` — test macro F1 vs imbalance ratio, one line per method, mean ± sd over seeds;
- ``summary_minority.png`` — minority-class F1 (and few-shot accuracy where a run has few-shot classes);
- ``summary_curves.png`` — the learning curves: test macro F1 (and minority F1) after each evaluated epoch,
  one line per method x imbalance ratio, median over seeds (only where runs evaluated more than one epoch).

With ``--compare <table>``, ours next to a published table as well (``imbalance_lab.compare``). The runs and
aggregate CSVs also hold each run's test metrics at the best validation epoch (``bestval_test_*``) and the
best over its evaluated epochs on the test set (``maxtest_test_*``), which only that comparison uses.

Only finished ``metrics.json`` files are read (a run writes its file atomically at the end); a folder without
one is listed as ``unfinished``, an unreadable one as ``corrupt``. Nothing here crashes on a bad run folder.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .metrics import HEADLINE
from .provenance import describe as describe_code
from .runfolder import METRICS_FILE, write_bytes_atomic, write_text_atomic

log = logging.getLogger(__name__)

RUNS_CSV = "summary_runs.csv"
AGGREGATE_CSV = "summary_aggregate.csv"
SUMMARY_MD = "summary.md"
MACRO_F1_PNG = "summary_macro_f1.png"
MINORITY_PNG = "summary_minority.png"
CURVES_PNG = "summary_curves.png"

STATUSES = ("done", "failed", "unfinished", "corrupt")
# Overrides that are axes of the summary, not part of a method's name.
AXIS_KEYS = {"data.imbalance", "seed", "loss", "method"}
# How a run was executed or watched, not what it computes: runs that differ only in these are one method's.
EXECUTION_KEYS = {"trainer.progress", "trainer.threads", "trainer.checkpoint_every", "trainer.sync_check", "tags"}
# Columns: the run's test headline (imbalance_lab.metrics.HEADLINE), the mean F1 of its smallest class(es)
# and its validation macro F1; all are in the aggregate CSV, summary.md leaves out accuracy (= micro F1).
# method=majority_only runs also record a raw-pixel Gaussian's test AUROC on the same images: the bar a learned
# one-class detector has to clear.
METRIC_COLUMNS = [f"test_{m}" for m in HEADLINE] + ["test_tail_f1", "val_macro_f1", "pixel_gaussian_auroc"]
LABELS = {f"test_{m}": label for m, label in HEADLINE.items()} | {
    "test_tail_f1": "smallest-class F1", "val_macro_f1": "val macro F1",
    "pixel_gaussian_auroc": "raw-pixel Gaussian AUROC"}
MARKDOWN_METRICS = tuple(m for m in METRIC_COLUMNS if m != "test_accuracy")
# The same test metrics under the other protocols a comparison with published numbers needs
# (imbalance_lab.compare): at the epoch of the best validation macro F1 (runs with a validation split), and
# the best value over the evaluated epochs on the test set — the protocol some sources report, never ours.
PROTOCOL_METRICS = ("macro_f1", "accuracy", "balanced_accuracy")
PROTOCOL_COLUMNS = ([f"bestval_test_{m}" for m in PROTOCOL_METRICS]
                    + [f"maxtest_test_{m}" for m in PROTOCOL_METRICS])
AGGREGATED = METRIC_COLUMNS + PROTOCOL_COLUMNS


# ----------------------------------------------------------------------------- reading run folders
def find_run_dirs(sweep_dir: Path) -> list[Path]:
    """The run folders of one sweep: its sub-folders holding ``.hydra/`` (Hydra makes it when a job starts),
    or the folder itself when it is a single run."""
    sweep_dir = Path(sweep_dir)
    if (sweep_dir / ".hydra").is_dir():
        return [sweep_dir]
    return sorted(d for d in sweep_dir.iterdir() if d.is_dir() and (d / ".hydra").is_dir())


def find_strays(sweep_dir: Path) -> list[Path]:
    """Sub-folders of a sweep folder that are not run folders (listed in the summary, never merged in)."""
    sweep_dir = Path(sweep_dir)
    if (sweep_dir / ".hydra").is_dir():
        return []
    return sorted(d for d in sweep_dir.iterdir()
                  if d.is_dir() and not d.name.startswith(".") and not (d / ".hydra").is_dir())


class NotASweep(ValueError):
    """The folder is not one sweep (e.g. a date folder holding several); the message says what to do."""


def check_one_sweep(folder: Path) -> None:
    sweeps = sorted(d.parent for d in Path(folder).glob("*/multirun.yaml"))
    if sweeps and not (Path(folder) / "multirun.yaml").exists() and not find_run_dirs(folder):
        names = ", ".join(d.name for d in sweeps)
        raise NotASweep(f"{folder} holds {len(sweeps)} sweeps ({names}), not one: report each, e.g. "
                        f"python -m imbalance_lab.report {sweeps[0]}")


def _load_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def parse_overrides(lines) -> dict[str, str]:
    """``["data.imbalance=10", "+x=1", "~y"]`` -> ``{"data.imbalance": "10", "x": "1", "y": None}``."""
    out: dict[str, str] = {}
    for line in lines or []:
        key, sep, value = str(line).partition("=")
        key = key.lstrip("+~")
        out[key] = value if sep else None
    return out


def read_run(run_dir: Path, sweep_dir: Path) -> dict:
    """One tidy row for a run folder; never raises on a missing or broken file."""
    rel = run_dir.relative_to(sweep_dir).as_posix() if run_dir != sweep_dir else "."
    row: dict = {"run": rel, "status": None, "reason": None}
    overrides = parse_overrides(_load_yaml(run_dir / ".hydra" / "overrides.yaml"))
    metrics_path = run_dir / METRICS_FILE
    metrics = None
    if not metrics_path.exists():
        row["status"] = "unfinished"
        row["reason"] = "no metrics.json (not started, running, or killed)"
    else:
        try:
            metrics = json.loads(metrics_path.read_text())
            if not isinstance(metrics, dict):
                raise ValueError(f"expected a JSON object, got {type(metrics).__name__}")  # noqa: TRY004
        except (OSError, ValueError) as exc:
            metrics = None
            row["status"] = "corrupt"
            row["reason"] = f"unreadable metrics.json: {str(exc)[:200]}"
        else:
            row["status"] = str(metrics.get("status") or "unknown")
            row["reason"] = metrics.get("reason")
            row["finished_at"] = datetime.fromtimestamp(metrics_path.stat().st_mtime).isoformat(timespec="seconds")

    # What the run was: metrics.json says it (method, imbalance ratio, dataset); for a run that never wrote
    # one, the composed config (.hydra/config.yaml) and the overrides stand in.
    metrics_or_empty = metrics or {}
    config = metrics_or_empty.get("config")
    if not isinstance(config, dict):
        config = _load_yaml(run_dir / ".hydra" / "config.yaml")
    config = config if isinstance(config, dict) else {}
    data_cfg = config.get("data") if isinstance(config.get("data"), dict) else {}
    loss_cfg = config.get("loss") if isinstance(config.get("loss"), dict) else {}
    data_summary = metrics_or_empty.get("data") if isinstance(metrics_or_empty.get("data"), dict) else {}
    row["loss"] = loss_cfg.get("name") or overrides.get("loss")
    row["base_method"] = metrics_or_empty.get("method") or fallback_method(config, overrides, row["loss"])
    row["imbalance_ratio"] = _number(metrics_or_empty.get("imbalance", data_cfg.get("imbalance",
                                                                                   overrides.get("data.imbalance"))))
    row["seed"] = _number(config.get("seed", overrides.get("seed")))
    row["dataset"] = data_summary.get("name") or data_cfg.get("name") or overrides.get("data")
    row["overrides"] = overrides

    if metrics:
        test = metrics.get("test") if isinstance(metrics.get("test"), dict) else {}
        val = metrics.get("val") if isinstance(metrics.get("val"), dict) else {}
        for name in HEADLINE:
            row[f"test_{name}"] = _number(test.get(name))
        row["test_tail_f1"] = tail_f1(test)
        row["val_macro_f1"] = _number(val.get("macro_f1"))
        detector = metrics.get("majority_only") if isinstance(metrics.get("majority_only"), dict) else {}
        pixels = detector.get("pixel_gaussian") if isinstance(detector.get("pixel_gaussian"), dict) else {}
        row["pixel_gaussian_auroc"] = _number(pixels.get("auroc"))
        history = [h for h in metrics.get("history") or [] if isinstance(h, dict)]
        best_val = metrics.get("best_on_validation") if isinstance(metrics.get("best_on_validation"), dict) else {}
        best_val_test = best_val.get("test") if isinstance(best_val.get("test"), dict) else {}
        for name in PROTOCOL_METRICS:
            row[f"bestval_test_{name}"] = _number(best_val_test.get(name))
            evaluated = [h[f"test_{name}"] for h in history if isinstance(h.get(f"test_{name}"), int | float)]
            row[f"maxtest_test_{name}"] = max(evaluated) if evaluated else None
        row["test_evaluations"] = sum(1 for h in history if "test_macro_f1" in h)
        row["epochs"] = _number(metrics.get("epochs", len(history) or None))
        row["wall_seconds"] = _number(metrics.get("wall_seconds"))
        data = metrics.get("data") if isinstance(metrics.get("data"), dict) else {}
        row["dataset_note"] = data.get("note") or None
        row["headline"] = metrics.get("headline")
        tags = metrics.get("tags") if isinstance(metrics.get("tags"), list) else []
        row["tags"] = ", ".join(map(str, tags)) or None
        row["code"] = describe_code(metrics.get("code"))
        debug = metrics.get("debug")
        row["debug"] = ", ".join(f"{k}={v}" for k, v in debug.items()) if isinstance(debug, dict) and debug else None
    return row


def fallback_method(config: dict, overrides: dict, loss_name: str | None) -> str | None:
    """The method of a run whose metrics.json does not name it: the non-supervised method (majority_only)
    whatever the loss, else the loss option from the overrides (affinity and affinity_m5 share a
    loss.name), else the loss name."""
    method = config.get("method", overrides.get("method"))
    return method if method not in (None, "supervised") else (overrides.get("loss") or loss_name)


def tail_f1(test: dict) -> float | None:
    """Mean test F1 of the class(es) with the fewest training images; None when all classes are equal."""
    per_class = test.get("per_class") if isinstance(test, dict) else None
    if not per_class:
        return None
    try:
        counts = np.array([c["train_count"] for c in per_class], dtype=float)
        f1 = np.array([c["f1"] for c in per_class], dtype=float)
    except (KeyError, TypeError, ValueError):
        return None
    if counts.min() == counts.max():
        return None
    return float(f1[counts == counts.min()].mean())


def _number(value):
    if value is None or isinstance(value, bool):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    if number.is_integer() and abs(number) < 2**53 and not isinstance(value, float):
        return int(number)
    return number


def _override_value(value: str | None) -> str:
    """An override's value as Hydra reads it (``false`` and ``False`` are one value, ``1e-3`` and ``0.001``)."""
    if value is None:
        return "None"
    try:
        loaded = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if isinstance(loaded, str):  # YAML 1.1 reads 1e-3 as a string, Hydra as a number
        try:
            loaded = float(loaded)
        except ValueError:
            pass
    return repr(loaded)


def _override_label(key: str, value) -> str:
    short = key.removeprefix("loss.")
    return f"{short}={value}"


def collect_runs(sweep_dir: Path) -> pd.DataFrame:
    """The tidy table of all runs under ``sweep_dir`` (one row per run folder, any status)."""
    sweep_dir = Path(sweep_dir)
    rows = [read_run(d, sweep_dir) for d in find_run_dirs(sweep_dir)]
    override_keys: list[str] = []
    for row in rows:
        override_keys += [k for k in row["overrides"] if k not in override_keys]
    # The method: loss name plus every override that varies across the sweep and is not an axis.
    varying = [k for k in override_keys if k not in AXIS_KEYS | EXECUTION_KEYS
               and not k.startswith(("hydra", "logger"))
               and len({_override_value(r["overrides"].get(k)) for r in rows}) > 1]
    spelling: dict[tuple[str, str], str] = {}  # one label per value, however each run spelled it
    for row in rows:
        for k in varying:
            value = row["overrides"].get(k)
            spelling.setdefault((k, _override_value(value)), value)
    fixed = ["run", "status", "reason", "method", "loss", "imbalance_ratio", "seed"]
    tail = (["dataset"] + AGGREGATED
            + ["test_evaluations", "epochs", "wall_seconds", "finished_at", "dataset_note", "headline", "tags",
               "code", "debug"])
    # Override columns keep their key (data.imbalance, optim.lr, ...); one that clashes with a column
    # above (loss, seed) is kept as "override:<key>".
    override_columns = {k: (f"override:{k}" if k in fixed or k in tail else k) for k in override_keys}
    records = []
    for row in rows:
        overrides = row.pop("overrides")
        base = str(row.pop("base_method") or "?")
        # majority_only trains no configured loss: loss settings that vary for the other runs are not its own
        # an override that only restates the base name (decoupled.mode=crt of method crt) adds nothing
        parts = [base] + [_override_label(k, spelling[k, _override_value(overrides[k])]) for k in varying
                          if overrides.get(k) is not None
                          and str(overrides[k]) != base
                          and not (base == "majority_only" and k.startswith("loss"))]
        row["method"] = " ".join(parts)
        for key, column in override_columns.items():
            row[column] = overrides.get(key)
        records.append(row)
    columns = fixed + list(override_columns.values()) + tail
    frame = pd.DataFrame.from_records(records, columns=columns)
    for column in AGGREGATED + ["imbalance_ratio", "wall_seconds"]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


# ----------------------------------------------------------------------------- aggregating
def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method x imbalance ratio: n finished runs (seeds), n_not_done, and median/mean/sd of each metric.
    Debug runs (``debug=fdr|overfit|limit``) are left out: their numbers are not results."""
    keys = ["method", "imbalance_ratio"]
    if "debug" in runs:
        runs = runs[runs["debug"].isna()]
    if runs.empty:
        return pd.DataFrame(columns=keys + ["n", "n_not_done"])
    runs = runs.assign(imbalance_ratio=runs["imbalance_ratio"].fillna(-1))
    groups = runs.groupby(keys, sort=True, dropna=False)
    counts = groups["status"].agg(n=lambda s: int((s == "done").sum()),
                                  n_not_done=lambda s: int((s != "done").sum()))
    done = runs[runs["status"] == "done"]
    metrics = [m for m in AGGREGATED if done[m].notna().any()]
    if metrics:
        stats = done.groupby(keys, sort=True)[metrics].agg(["median", "mean", "std"])
        stats.columns = [f"{m}_{'sd' if s == 'std' else s}" for m, s in stats.columns]
        table = counts.join(stats, how="left")
    else:
        table = counts
    table = table.reset_index()
    table["imbalance_ratio"] = table["imbalance_ratio"].replace(-1, np.nan)
    return table


# ----------------------------------------------------------------------------- markdown
def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _ratio(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "?"
    return f"{value:g}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header))] + [line(r) for r in rows])


def render_markdown(sweep_dir: Path, runs: pd.DataFrame, agg: pd.DataFrame) -> str:
    counts = {s: int((runs["status"] == s).sum()) for s in STATUSES}
    other = len(runs) - sum(counts.values())
    status_line = ", ".join(f"{n} {s}" for s, n in counts.items()) + (f", {other} other" if other else "")
    lines = [f"# Sweep summary: `{sweep_dir}`", "",
             f"**{len(runs)} runs**: {status_line}.", ""]
    lines += [
        ("- Numbers are **last-epoch test metrics** of each run (the test set is never used to choose "
         "anything; a hyperparameter search maximises validation macro F1)."),
        ("- Each cell: **median**, then (mean ± sd) over seeds; **n** = finished runs (seeds) in the cell, "
         "n_not_done = failed, unfinished or corrupt runs of that cell, which are left out."),
        ("- **Micro F1** (`test_micro_f1`, column \"micro F1 (= accuracy)\") is the F1 of the pooled "
         "predictions; for single-label classification it equals accuracy. Macro F1 (unweighted mean of "
         "per-class F1) is the headline metric for imbalance."),
        ("- **minority F1**: F1 of the smaller class (two-class data). **smallest-class F1**: mean F1 of the "
         "class(es) with the fewest training images. **few-shot accuracy**: mean recall of classes with < 20 "
         "training images (only where such classes exist). **minority AUROC**: how well the run's p(minority) (a "
         "one-class detector's score) ranks the test images, threshold-free; **raw-pixel Gaussian AUROC**: the "
         "same for a Gaussian on the raw pixels of the majority images (`method=majority_only` runs)."),
        ("- **method** = the loss option (or `method=majority_only`) plus every override that varies across "
         "the sweep other than the imbalance ratio and the seed."),
    ]
    done = runs[runs["status"] == "done"]
    notes = sorted({str(n) for n in done["dataset_note"].dropna() if str(n).strip()})
    headlines = sorted({str(h) for h in done["headline"].dropna()} - {"last-epoch test metrics"})
    datasets = sorted({str(d) for d in runs["dataset"].dropna()})
    if datasets:
        lines.append(f"- Dataset: {', '.join(datasets)}.")
    for note in notes:
        lines.append(f"- **Dataset note**: {note}")
    for headline in headlines:
        lines.append(f"- Headline: {headline}")
    lines.append("")

    lines += ["## Aggregate over seeds", ""]
    shown = [m for m in MARKDOWN_METRICS if f"{m}_median" in agg.columns]
    if "test_minority_f1" in shown and "test_tail_f1" in shown:
        shown.remove("test_tail_f1")  # the same number for two classes
    header = ["method", "imbalance r", "n", "n_not_done"] + [LABELS[m] for m in shown]
    rows = []
    for rec in agg.to_dict("records"):
        cells = [rec["method"], _ratio(rec["imbalance_ratio"]), str(rec["n"]), str(rec["n_not_done"])]
        for m in shown:
            med, mean, sd = rec.get(f"{m}_median"), rec.get(f"{m}_mean"), rec.get(f"{m}_sd")
            if med is None or (isinstance(med, float) and math.isnan(med)):
                cells.append("–")
            else:
                cells.append(f"{_fmt(med)} ({_fmt(mean)} ± {_fmt(sd)})")
        rows.append(cells)
    lines += [markdown_table(header, rows) if rows else "_no runs found_", ""]

    tags = sorted({t.strip() for value in runs["tags"].dropna() for t in str(value).split(",") if t.strip()})
    if tags:
        lines += ["## Tags", ""]
        for tag in tags:
            n = sum(tag in [t.strip() for t in str(v).split(",")] for v in runs["tags"].dropna())
            lines.append(f"- `{tag}`: {n} of {len(runs)} runs")
        lines.append("")
    codes = runs["code"].dropna()
    if codes.nunique() > 1:  # one code version: nothing to say; several: which runs ran which
        lines += ["## Code versions differ", "",
                  ("The runs did not all run the same code (package version @ commit, +dirty: tracked files "
                   "differed from the commit, with the hash of the difference):"), ""]
        for code, n in codes.value_counts().sort_index().items():
            lines.append(f"- `{code}`: {n} runs")
        lines.append("")
    debug = runs[runs["debug"].notna()]
    if len(debug):
        lines += [f"## Debug runs ({len(debug)})", "",
                  "Run with a debug mode (`debug=fdr|overfit|limit`): left out of the aggregate above.", ""]
        lines += [f"- `{rec['run']}` — {rec['status']}, {rec['debug']}" for rec in debug.to_dict("records")]
        lines.append("")
    bad = runs[runs["status"] != "done"]
    if len(bad):
        lines += [f"## Runs not done ({len(bad)})", ""]
        for rec in bad.to_dict("records"):
            reason = rec["reason"] if isinstance(rec["reason"], str) else ""
            lines.append(f"- `{rec['run']}` — **{rec['status']}**" + (f": {reason}" if reason else ""))
        lines += ["", ("Re-run the same sweep command with `hydra.sweep.dir=<this folder>` to redo only "
                       "these (runs whose metrics.json says done are skipped)."), ""]
    strays = find_strays(sweep_dir)
    if strays:
        lines += [f"## Folders that are not runs ({len(strays)})", ""]
        lines += [f"- `{d.name}`" for d in strays]
        lines += ["", "They hold no `.hydra/` (Hydra makes it when a job starts): left out of every table.", ""]
    lines += [("Files: `summary_runs.csv` (one row per run), `summary_aggregate.csv` (median, mean, sd, n "
               "per method × ratio), `summary_macro_f1.png`, `summary_minority.png`."), ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots
def plot_metric_vs_ratio(agg: pd.DataFrame, metrics: list[str], title: str) -> bytes | None:
    """PNG bytes: one panel per metric, x = imbalance ratio (log), one line per method, mean ± sd."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    metrics = [m for m in metrics if f"{m}_mean" in agg.columns and agg[f"{m}_mean"].notna().any()]
    if not metrics:
        return None
    fig = Figure(figsize=(6.4 * len(metrics), 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    ratios = sorted(r for r in agg["imbalance_ratio"].dropna().unique() if r > 0)
    methods = list(dict.fromkeys(agg["method"]))
    for ax, metric in zip(axes, metrics):
        low, high = 1.0, 0.0
        for i, method in enumerate(methods):
            part = agg[(agg["method"] == method) & agg[f"{metric}_mean"].notna()
                       & (agg["imbalance_ratio"] > 0)].sort_values("imbalance_ratio")
            if part.empty:
                continue
            # A small multiplicative offset keeps overlapping error bars readable on the log axis.
            shift = 1.0 + 0.025 * (i - (len(methods) - 1) / 2)
            sd = part[f"{metric}_sd"].fillna(0.0)
            low = min(low, float((part[f"{metric}_mean"] - sd).min()))
            high = max(high, float((part[f"{metric}_mean"] + sd).max()))
            ax.errorbar(part["imbalance_ratio"] * shift, part[f"{metric}_mean"],
                        yerr=sd, marker="o", capsize=3, linewidth=1.5,
                        label=f"{method} (n={int(part['n'].min())}–{int(part['n'].max())})"
                        if part["n"].min() != part["n"].max() else f"{method} (n={int(part['n'].min())})")
        ax.set_xscale("log")
        if ratios:
            ax.set_xticks(ratios)
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlim(min(ratios) / 1.3, max(ratios) * 1.3)
        # Scores live in [0, 1]: an error bar past either end is cut at the frame, not the axis stretched.
        ax.set_ylim(max(0.0, low) - 0.03, min(1.0, high) + 0.03)
        ax.set_xlabel("imbalance ratio r (log scale)")
        ax.set_ylabel(f"test {LABELS[metric].replace('test ', '')} (last epoch)")
        ax.set_title(f"{LABELS[metric]}: mean ± sd over seeds", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


CURVE_METRICS = ("test_macro_f1", "test_minority_f1")


def learning_curves(sweep_dir: Path, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run x evaluated epoch: method, imbalance ratio, seed, epoch and the history's test
    metrics (``test_macro_f1``, ``test_minority_f1`` where recorded)."""
    rows = []
    for run in runs[(runs["status"] == "done") & runs["debug"].isna()].to_dict("records"):
        try:
            history = json.loads((sweep_dir / run["run"] / METRICS_FILE).read_text()).get("history") or []
        except (OSError, ValueError, AttributeError):
            continue
        for h in history:
            if isinstance(h, dict) and isinstance(h.get("test_macro_f1"), int | float):
                rows.append({"method": run["method"], "imbalance_ratio": run["imbalance_ratio"], "seed": run["seed"],
                             "epoch": h.get("epoch"), **{k: _number(h.get(k)) for k in CURVE_METRICS}})
    return pd.DataFrame(rows, columns=["method", "imbalance_ratio", "seed", "epoch", *CURVE_METRICS])


def plot_curves(curves: pd.DataFrame, title: str) -> bytes | None:
    """PNG bytes: one panel per metric, x = epoch, one line per method x ratio (median over seeds)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if curves.empty or curves.groupby(["method", "imbalance_ratio", "seed"], dropna=False).size().max() < 2:
        return None  # one evaluation per run: nothing to draw a curve through
    metrics = [m for m in CURVE_METRICS if curves[m].notna().any()]
    fig = Figure(figsize=(6.4 * len(metrics), 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    median = curves.groupby(["method", "imbalance_ratio", "epoch"], dropna=False)[list(metrics)].median()
    for ax, metric in zip(axes, metrics):
        for (method, ratio), part in median.groupby(level=["method", "imbalance_ratio"], dropna=False):
            part = part[metric].dropna()
            ax.plot(part.index.get_level_values("epoch"), part.values, linewidth=1.2,
                    label=f"{method}, r={_ratio(ratio)}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(LABELS.get(metric, metric.replace("_", " ")))
        ax.set_title(f"{metric.replace('_', ' ')} after each evaluated epoch: median over seeds", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


# ----------------------------------------------------------------------------- entry points
def write_report(sweep_dir: Path | str, out_dir: Path | str | None = None) -> dict:
    """Write the summary files for ``sweep_dir`` (into ``out_dir``, default the sweep folder).

    Returns ``{"runs": DataFrame, "aggregate": DataFrame, "files": [paths], "counts": {status: n}, "sweep_dir"}``.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no such sweep folder: {sweep_dir}")
    check_one_sweep(sweep_dir)
    out_dir = Path(out_dir) if out_dir else sweep_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = collect_runs(sweep_dir)
    agg = aggregate(runs)
    files = []

    def emit(name: str, payload: str | bytes | None):
        if payload is None:
            return
        path = out_dir / name
        (write_text_atomic if isinstance(payload, str) else write_bytes_atomic)(path, payload)
        files.append(path)

    emit(RUNS_CSV, runs.to_csv(index=False))
    emit(AGGREGATE_CSV, agg.to_csv(index=False))
    emit(SUMMARY_MD, render_markdown(sweep_dir, runs, agg))
    datasets = ", ".join(sorted({str(d) for d in runs["dataset"].dropna()})) if len(runs) else ""
    name = f"{datasets} — sweep {sweep_dir.resolve().name}" if datasets else f"sweep {sweep_dir.resolve().name}"
    emit(MACRO_F1_PNG, plot_metric_vs_ratio(agg, ["test_macro_f1"], f"test macro F1 vs imbalance ratio: {name}"))
    minority = ["test_minority_f1"] if "test_minority_f1_mean" in agg.columns else ["test_tail_f1"]
    emit(MINORITY_PNG, plot_metric_vs_ratio(agg, minority + ["test_minority_auroc", "test_few_shot_acc"],
                                            f"minority / few-shot metrics vs imbalance ratio: {name}"))
    emit(CURVES_PNG, plot_curves(learning_curves(sweep_dir, runs), f"learning curves: {name}"))
    counts = {s: int((runs["status"] == s).sum()) for s in STATUSES}
    return {"runs": runs, "aggregate": agg, "files": files, "counts": counts, "sweep_dir": sweep_dir}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imbalance_lab.report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder (outputs/sweeps/<date>/<time>) or run folder")
    parser.add_argument("--out", type=Path, default=None, help="where to write the summary (default: sweep_dir)")
    parser.add_argument("--compare", metavar="TABLE", default=None,
                        help="also put ours next to a published table (imbalance_lab/reference/published.csv), "
                             "e.g. affinity_mnist; writes compare_<TABLE>.{csv,md,png}")
    args = parser.parse_args(argv)
    # compare builds on this module's summary, so it is imported here, not at the top (no import cycle).
    from . import compare

    try:
        if args.compare:
            compare.cells_of(args.compare)  # an unknown table is an error before any work
        result = write_report(args.sweep_dir, args.out)
        comparison = compare.write_comparison(args.sweep_dir, args.compare, args.out) if args.compare else None
    except (FileNotFoundError, NotASweep, compare.UnknownTable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary_text(result))
    if comparison:
        print(compare.comparison_text(comparison, args.compare))
    return 0


def summary_text(result: dict) -> str:
    counts = result["counts"]
    agg = result["aggregate"]
    lines = [f"{len(result['runs'])} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    if "test_macro_f1_median" in agg.columns:
        lines.append("test macro F1 (last epoch), median over seeds [n]:")
        for rec in agg.to_dict("records"):
            lines.append(f"  {rec['method']:<30} r={_ratio(rec['imbalance_ratio']):>6}  "
                         f"{_fmt(rec['test_macro_f1_median'])}  [n={rec['n']}]")
    bad = result["runs"][result["runs"]["status"] != "done"]
    for rec in bad.to_dict("records"):
        reason = rec["reason"] if isinstance(rec["reason"], str) else ""
        lines.append(f"  not done: {rec['run']} ({rec['status']}{': ' + reason[:120] if reason else ''})")
    lines += [f"  not a run folder, left out: {d}" for d in find_strays(result["sweep_dir"])]
    lines += [f"wrote {p}" for p in result["files"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
