#!/usr/bin/env bash
# Sets up .venv and runs the main job (4M model, T_CMP + T_ADD injected, embedded corpus, CPU).
#   bash quickstart.sh                  # install, then train configs/default.yaml
#   bash quickstart.sh --install-only   # install only (what .ci/run uses)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch first: 2.13.0 is the CPU build this machine keeps on disk; on a GPU cluster install your CUDA build first.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install --quiet "torch==2.13.0"
.venv/bin/pip install --quiet -e ".[dev]"
[ "${1:-}" = "--install-only" ] && exit 0
exec .venv/bin/olmo-inject train configs/default.yaml "$@"
