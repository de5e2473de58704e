#!/usr/bin/env bash
# Sets up .venv and runs the main job: the 4M model on the embedded corpus (CPU) with three comparison tasks
# injected a decade of frequency apart, then its learning curves and the table of when each task was learned.
#   bash quickstart.sh                  # install, train configs/default.yaml (~10 min on 2 cores), report
#   bash quickstart.sh --install-only   # install only (what .ci/run uses)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch first: 2.13.0 is the CPU build this machine keeps on disk; on a GPU cluster install your CUDA build first.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install --quiet "torch==2.13.0"
.venv/bin/pip install --quiet -e ".[dev]"
[ "${1:-}" = "--install-only" ] && exit 0
.venv/bin/olmo-inject train configs/default.yaml "$@"
# The save folder is the config's unless overridden; the report reads the run's own metrics record there.
SAVE_FOLDER=$(.venv/bin/olmo-inject train configs/default.yaml "$@" --dry_run | sed -n "s/^save_folder: //p")
exec .venv/bin/olmo-inject analyze learning-curves "$SAVE_FOLDER"
