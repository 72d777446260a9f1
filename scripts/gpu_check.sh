#!/usr/bin/env bash
# One prepared check of a GPU machine, for whoever first has one (a developer, a user after installing, a
# reviewer): about 8 minutes on one H100/H200, one report. Run it from anywhere:
#
#   IMBALANCE_LAB_DATA=<dataset mirror> bash scripts/gpu_check.sh OUT_DIR
#   bash scripts/gpu_check.sh --dry-run OUT_DIR       # list what it would run, run nothing
#
# Steps, each with its own time limit so the whole stays under 8 minutes (a step that runs out is reported as
# such and the next one runs):
#   1. pytest -m cuda: the GPU twins of the CPU tests of the GPU path (engines x bf16 x channels_last, FixMatch,
#      every loss, resume, device-free files, compile, no host sync in the step loop);
#   2. scripts/bench.py: cnn_mnist, cnn_small, resnet32 (batch 128) and cnn_cifar (batch 640) at stacks 1, 8, 32,
#      vmap and loop: synced images/s against the plain loop, MFU, peak memory;
#   3. 2 epochs of the stacked affinity_mnist grid (90 runs, hydra/launcher=stacked): its wall time and the
#      projected time of the full 100-epoch grid.
# Writes OUT_DIR/gpu_check.md and gpu_check.json (the report), bench.json / bench.md and the steps' logs. The
# sweep's run folders go to $GPU_CHECK_WORK (default: a new temporary folder). Python: $PYTHON (default
# python3); this checkout is put on PYTHONPATH, so the package need not be installed (Hydra and the launchers
# must be importable: see the README's "Checking a GPU machine" for a machine without a package index).
set -uo pipefail

usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; }
DRY=0
OUT=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "error: unknown option $arg" >&2; usage >&2; exit 2 ;;
    *) OUT="$arg" ;;
  esac
done
if [ -z "$OUT" ]; then
  echo "error: no output folder given" >&2; usage >&2; exit 2
fi

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
WORK="${GPU_CHECK_WORK:-}"
SWEEP="<work>/affinity_mnist_2ep"
STEPS=(
  "cuda_tests|180|$PY -m pytest -m cuda -q -p no:cacheprovider -o addopts= --junitxml=<work>/pytest_cuda.xml tests"
  "bench|120|$PY scripts/bench.py --device cuda --models cnn_mnist,cnn_small,resnet32,cnn_cifar:640 --batch-sizes 128 --stacks 1,8,32 --stacking loop,vmap --steps 20 --out <out>/bench"
  "affinity_mnist_2_epochs|150|$PY -m imbalance_lab -m experiment=affinity_mnist hydra/launcher=stacked trainer.epochs=2 trainer.progress=false hydra.sweep.dir=$SWEEP"
)

if [ "$DRY" = 1 ]; then
  echo "gpu_check (dry run): in $REPO, with PYTHONPATH=$REPO, writing <out>/gpu_check.md and gpu_check.json"
  echo "  <out> = $OUT, <work> = ${WORK:-a new temporary folder}"
  for step in "${STEPS[@]}"; do
    IFS='|' read -r name limit cmd <<<"$step"
    echo "  $name (at most ${limit} s): $cmd"
  done
  echo "  report: $PY scripts/gpu_report.py <out> <work>"
  exit 0
fi

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="${WORK:-$(mktemp -d)}"
mkdir -p "$WORK"
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
: >"$WORK/steps.tsv"
for step in "${STEPS[@]}"; do
  IFS='|' read -r name limit cmd <<<"$step"
  cmd="${cmd//<work>/$WORK}"
  cmd="${cmd//<out>/$OUT}"
  echo "== $name (at most ${limit} s): $cmd"
  start=$(date +%s%N)
  timeout --kill-after=10 "$limit" bash -c "$cmd" >"$OUT/$name.log" 2>&1
  rc=$?
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$ms" "$limit" "$cmd" >>"$WORK/steps.tsv"
  echo "   exit $rc after $ms ms; log: $OUT/$name.log"
done
"$PY" scripts/gpu_report.py "$OUT" "$WORK"
