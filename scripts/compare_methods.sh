#!/usr/bin/env bash
# One run per method on the same data/model/epochs/seed; prints a macro-F1 table (issue 3's comparison).
# Usage: scripts/compare_methods.sh OUT_DIR [extra overrides...]
#   e.g. scripts/compare_methods.sh outputs/compare data=mnist_even data.imbalance=50 model=cnn_mnist trainer.epochs=3
set -euo pipefail
out=$1; shift
mkdir -p "$out"
python=${PYTHON:-python}
# DRW switches on in the last epoch (the papers' 160 of 200 epochs, scaled to a short run).
epochs=$(printf '%s\n' "$@" | sed -n 's/^trainer.epochs=//p' | tail -1)
methods=(
  "ce|loss=ce"
  "weighted_ce|loss=weighted_ce"
  "focal|loss=focal"
  "cb softmax|loss=cb loss.base=softmax"
  "cb sigmoid|loss=cb loss.base=sigmoid"
  "cb focal|loss=cb loss.base=focal"
  "affinity m=1|loss=affinity"
  "logit_adjusted|loss=logit_adjusted"
  "logit_adjusted posthoc|loss=logit_adjusted loss.posthoc=true"
  "ldam|loss=ldam"
  "ldam+drw|loss=ldam loss.drw_epoch=${epochs:-1}"
  "debiased|loss=debiased"
  "ce + oversample|loss=ce sampler=oversample"
  "ce + undersample|loss=ce sampler=undersample"
  "ce + sqrt|loss=ce sampler=sqrt"
)
for entry in "${methods[@]}"; do
  label=${entry%%|*}; overrides=${entry#*|}
  dir="$out/$(echo "$label" | tr ' +=()' '_____')"
  # shellcheck disable=SC2086
  "$python" -m imbalance_lab "$@" $overrides trainer.progress=false hydra.run.dir="$dir" > "$dir.log" 2>&1 \
    || echo "$label: failed (see $dir.log)"
done
"$python" - "$out" <<'PY'
import json, sys
from pathlib import Path
rows = []
for m in sorted(Path(sys.argv[1]).glob("*/metrics.json")):
    d = json.loads(m.read_text())
    t = d.get("test") or {}
    rows.append((m.parent.name, d["status"], t.get("macro_f1"), t.get("accuracy"), d.get("train_seconds"),
                 d.get("train_images_per_s")))
print("| method | status | macro F1 | accuracy | train s | img/s |\n|---|---|---|---|---|---|")
for name, status, f1, acc, sec, ips in rows:
    fmt = lambda v, p: "-" if v is None else f"{v:.{p}f}"
    print(f"| {name} | {status} | {fmt(f1, 4)} | {fmt(acc, 4)} | {fmt(sec, 1)} | {fmt(ips, 0)} |")
PY
