#!/usr/bin/env bash
# GPU acceptance on one H200, one command, at most ~8 minutes: the GPU tests, then tokens/s and MFU of plain
# OLMo against ours (injection + task metrics, then gradient interference too) for 20M, 300M and 1B at
# 4096-token rows, the cost of one g_r, and the synthetic module's sweeps on the GPU; one JSON with everything.
#
#   bash benchmarks/gpu_acceptance.sh [--out results/benchmarks/gpu_acceptance.json] [--models 20M,300M,1B]
#                                     [--micro-batch 1B=4] [--skip-tests] [--budget-s 470] ...   (--help)
#
# Without a CUDA device it checks its arguments, says so and exits 0. What each figure means: the docstring
# of benchmarks/gpu_acceptance.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
exec "$PYTHON" benchmarks/gpu_acceptance.py "$@"
