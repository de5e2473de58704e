"""Running a test file as two gloo ranks: ``torchrun --standalone --nproc_per_node=2`` in a subprocess.

A subprocess with a timeout (never ranks forked from the pytest process): a hung rank fails its test instead
of stalling the run, and the ranks start from a clean interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_two_ranks(script: str, *args: str, timeout_s: int) -> None:
    """Run ``script`` with ``args`` as two ranks (one thread each, wandb offline); assert that both exit 0 within
    ``timeout_s`` seconds, showing the tail of their output otherwise."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
