"""The report of ``scripts/gpu_check.sh``: ``python scripts/gpu_report.py OUT_DIR WORK_DIR``.

Reads what the check's steps left (``WORK_DIR/steps.tsv``: name, exit code, milliseconds, limit, command; the
CUDA tests' JUnit XML; ``OUT_DIR/bench.json``; the 2-epoch affinity_mnist sweep's run folders) and writes
``OUT_DIR/gpu_check.json`` and ``OUT_DIR/gpu_check.md``: the machine, each step's outcome, the tests that
failed or were skipped, the benchmark table, and the grid's wall time with the projected time of the full
grid. A step that did not finish is reported as such; nothing here needs the steps to have succeeded.

Projection of the full grid: the 2-epoch sweep's wall time is a fixed part (start-up, data, run folders) plus
its stacks' training (and per-epoch evaluation) time; the full grid runs the same stacks for
``FULL_EPOCHS`` epochs, so projected = fixed + training x FULL_EPOCHS / 2. If the step ran out of time, both
parts are scaled from the runs that finished to all the runs the sweep launched (its log lists them), and the
projection says it is extrapolated.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

FULL_EPOCHS, CHECK_EPOCHS = 100, 2  # the affinity_mnist preset's epochs, and the check's


def machine() -> dict:
    info = {"python": platform.python_version(), "host": platform.node()}
    try:
        import torch

        info |= {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
        if torch.cuda.is_available():
            info |= {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count()}
    except (ImportError, RuntimeError) as exc:  # the report is still written
        info["torch_error"] = f"{type(exc).__name__}: {exc}"
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             check=False, capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        info["nvidia_smi"] = f"not available ({exc})"
    return info


def steps(work: Path) -> list[dict]:
    out = []
    path = work / "steps.tsv"
    for line in path.read_text().splitlines() if path.exists() else []:
        name, rc, ms, limit, command = line.split("\t", 4)
        rc = int(rc)
        outcome = "ok" if rc == 0 else "timed out" if rc in (124, 137) else f"failed (exit {rc})"
        out.append({"step": name, "exit_code": rc, "outcome": outcome, "seconds": int(ms) / 1000,
                    "limit_s": int(limit), "command": command})
    return out


def tests(xml_path: Path) -> dict | None:
    if not xml_path.exists():
        return None
    cases = []
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        status = next((tag for tag in ("failure", "error", "skipped") if case.find(tag) is not None), "passed")
        detail = case.find(status)
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "status": status,
                      "seconds": float(case.get("time") or 0),
                      "message": (detail.get("message") or "")[:500] if detail is not None else ""})
    counts = {s: sum(c["status"] == s for c in cases) for s in ("passed", "failure", "error", "skipped")}
    return {"counts": counts, "cases": cases}


def launched_runs(log: Path) -> int | None:
    """How many runs the sweep launched: Hydra's launcher logs one ``#<index> : <overrides>`` line per run."""
    if not log.exists():
        return None
    return len(re.findall(r"\t#\d+ : ", log.read_text(errors="replace"))) or None


def grid(sweep: Path, wall_seconds: float | None, launched: int | None) -> dict | None:
    """Runs of the 2-epoch grid, their stacks' training time and the projection (module docstring)."""
    metrics = []
    for path in sorted(sweep.glob("*/metrics.json")):
        try:
            metrics.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    if not metrics:
        return None
    stacks = {}
    for m in metrics:
        stack = m.get("stack") or {}
        if m.get("train_seconds") is not None:
            stacks[tuple(stack.get("runs", []))] = (m["train_seconds"], stack.get("engine"), stack.get("size"))
    training = sum(t for t, _, _ in stacks.values())
    total = max(launched or 0, len(metrics))
    out = {"runs": len(metrics), "launched": total, "done": sum(m.get("status") == "done" for m in metrics),
           "failed": [m.get("reason") for m in metrics if m.get("status") != "done"][:5],
           "stacks": len(stacks), "engines": sorted({str(e) for _, e, _ in stacks.values()}),
           "stack_sizes": sorted({s for _, _, s in stacks.values() if s}),
           "training_seconds": training, "wall_seconds": wall_seconds}
    if wall_seconds is not None:
        scale = total / len(metrics)
        fixed = max(wall_seconds - training, 0.0) * scale
        out |= {"fixed_seconds": fixed, "extrapolated": total > len(metrics),
                f"projected_{FULL_EPOCHS}_epoch_seconds": fixed + training * scale * FULL_EPOCHS / CHECK_EPOCHS}
    return out


def markdown(report: dict) -> str:
    m = report["machine"]
    machine_line = (f"Machine: {m.get('gpu', 'no GPU')} ({m.get('nvidia_smi', '')}), torch {m.get('torch')} "
                    f"(CUDA {m.get('cuda')}), Python {m.get('python')}.")
    lines = ["# GPU check", "", machine_line, "", "## Steps", "",
             "| step | outcome | seconds | limit |", "|---|---|---|---|"]
    lines += [f"| {s['step']} | {s['outcome']} | {s['seconds']:.0f} | {s['limit_s']} |" for s in report["steps"]]
    t = report["tests"]
    lines += ["", "## pytest -m cuda", ""]
    if t is None:
        lines.append("No results (see cuda_tests.log).")
    else:
        lines.append(", ".join(f"{n} {k}" for k, n in t["counts"].items()))
        bad = [c for c in t["cases"] if c["status"] != "passed"]
        lines += [""] + [f"- **{c['status']}** `{c['test']}`: {c['message']}" for c in bad]
    lines += ["", "## Training throughput (scripts/bench.py)", ""]
    bench = report["bench"]
    if bench is None:
        lines.append("No results (see bench.log).")
    else:
        meta = bench["meta"]
        lines += [f"Precision: {meta.get('precision')}; {meta.get('steps_per_epoch')} timed steps per row, synchronised.",
                  "",
                  "| model | batch | stack | engine | images/s | plain loop | ratio | peak MB | MFU |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in bench["rows"]:
            mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") is not None else "–"
            mem = f"{r['peak_memory_mb']:.0f}" if r.get("peak_memory_mb") is not None else "–"
            lines.append(f"| {r['model']} | {r['batch']} | {r['stack']} | {r['engine']} | {r['images_per_s']:.0f} | "
                         f"{r['plain_images_per_s']:.0f} | {r['ratio_to_plain']:.2f} | {mem} | {mfu} |")
    lines += ["", f"## affinity_mnist grid, {CHECK_EPOCHS} epochs, hydra/launcher=stacked", ""]
    g = report["grid"]
    if g is None:
        lines.append("No finished runs (see affinity_mnist_2_epochs.log).")
    else:
        lines.append(f"{g['done']} of {g['runs']} runs done in {g['stacks']} stacks (sizes {g['stack_sizes']}, "
                     f"engines {g['engines']}); wall {g['wall_seconds']:.0f} s, of which training and evaluation "
                     f"{g['training_seconds']:.0f} s.")
        key = f"projected_{FULL_EPOCHS}_epoch_seconds"
        if key in g:
            scaled = (f", extrapolated from the {g['runs']} runs that finished to the {g['launched']} launched"
                      if g["extrapolated"] else "")
            lines.append(f"Projected full grid ({FULL_EPOCHS} epochs): {g[key] / 60:.1f} min "
                         f"(fixed {g['fixed_seconds']:.0f} s + training x {FULL_EPOCHS // CHECK_EPOCHS}{scaled}).")
        if g["failed"]:
            lines.append("Failed: " + "; ".join(map(str, g["failed"])))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    out, work = map(Path, (argv or sys.argv[1:])[:2])
    run_steps = steps(work)
    wall = next((s["seconds"] for s in run_steps if s["step"] == "affinity_mnist_2_epochs"), None)
    bench_path = out / "bench.json"
    report = {"machine": machine(), "steps": run_steps, "tests": tests(work / "pytest_cuda.xml"),
              "bench": json.loads(bench_path.read_text()) if bench_path.exists() else None,
              "grid": grid(work / "affinity_mnist_2ep", wall, launched_runs(out / "affinity_mnist_2_epochs.log"))}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if run_steps and all(s["exit_code"] == 0 for s in run_steps) else 1


if __name__ == "__main__":
    raise SystemExit(main())
