#!/usr/bin/env bash
# The GPU check, as one short script (under 8 minutes on an H100): install lmablate into the
# Python that already has a CUDA build of torch (the machine may have no network, so nothing
# else is fetched), then run benchmarks/gpu_check.py. On a machine without a GPU:
#   bash benchmarks/gpu_check.sh --dry-run
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c "import torch" 2>/dev/null || {
  echo "no torch in $PYTHON: install a CUDA build of torch first (or set PYTHON=)" >&2
  exit 2
}
"$PYTHON" -m pip install --quiet --no-deps --no-build-isolation -e . 2>/dev/null \
  || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # no pip or no network: run in place
exec "$PYTHON" benchmarks/gpu_check.py "$@"
