#!/usr/bin/env bash
# The wheels the command line needs beyond PyTorch, for a GPU machine that has PyTorch but no package index
# (cloud images, offline cluster nodes). Run on a connected machine, copy DEST over:
#
#   bash scripts/gpu_wheels.sh DEST              # download into DEST (created)
#   bash scripts/gpu_wheels.sh --dry-run DEST    # print the commands, download nothing
#
# then, on the GPU machine (see the README's "Checking a GPU machine"):
#   python3 -m pip install --no-index --no-deps --target /tmp/imbalance_lab_site DEST/*.whl
#   export PYTHONPATH=/tmp/imbalance_lab_site
#
# All of them are pure Python, so one download serves any Python 3.10+ and platform. antlr4-python3-runtime
# 4.9.3 (omegaconf's parser runtime) is published as an sdist only: it is built into a wheel here. The machine
# must already have what GPU images carry: numpy, scikit-learn, scipy, pandas, matplotlib, tqdm, PyYAML,
# packaging, pillow, torchvision (python3 scripts/gpu_wheels.sh --check, run there, lists what is missing).
set -euo pipefail

PACKAGES=(
  "hydra-core>=1.3,<1.4"
  "omegaconf>=2.3,<2.4"
  "hydra-joblib-launcher>=1.2,<1.3"
  "hydra-submitit-launcher>=1.2,<1.3"
  "submitit>=1.4"
  "cloudpickle"
  "joblib"
  "typing_extensions"
)
SDIST_ONLY="antlr4-python3-runtime==4.9.3"
ALREADY_THERE=(numpy sklearn scipy pandas matplotlib tqdm yaml packaging PIL torch torchvision)

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
PY="${PYTHON:-python3}"
DRY=0
DEST=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --check)
      missing=()
      for module in "${ALREADY_THERE[@]}" hydra omegaconf antlr4 submitit joblib cloudpickle; do
        "$PY" -c "import $module" 2>/dev/null || missing+=("$module")
      done
      if [ ${#missing[@]} -eq 0 ]; then echo "everything the command line imports is here"; exit 0; fi
      echo "missing: ${missing[*]}"; exit 1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "error: unknown option $arg" >&2; usage >&2; exit 2 ;;
    *) DEST="$arg" ;;
  esac
done
if [ -z "$DEST" ]; then
  echo "error: no destination folder given" >&2; usage >&2; exit 2
fi

run() {
  echo "+ $*"
  if [ "$DRY" = 0 ]; then "$@"; fi
}
[ "$DRY" = 1 ] || mkdir -p "$DEST"
run "$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$DEST" "${PACKAGES[@]}"
run "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$DEST" "$SDIST_ONLY"
if [ "$DRY" = 0 ]; then
  echo "wheels in $DEST:"
  ls -1 "$DEST"
fi
