"""Running a test file as two gloo ranks: ``torchrun --standalone --nproc_per_node=2`` in a subprocess.

A subprocess with a timeout (never ranks forked from the pytest process): a hung rank fails its test instead
of stalling the run, and the ranks start from a clean interpreter.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]


def run_two_ranks(script: str, *args: str, timeout_s: int) -> None:
    """Run ``script`` with ``args`` as two ranks (one thread each, wandb offline); assert that both exit 0 within
    ``timeout_s`` seconds, showing the tail of their output otherwise.

    On a timeout torchrun gets SIGTERM, which it forwards to the ranks before it exits (each rank runs in its own
    session, so killing torchrun alone would leave them running); SIGKILL follows if it has not exited in 60 s.
    The output goes to a file, not a pipe, so reading it never waits for a stray rank.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script, *args]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.seek(0)
        tail = log.read()[-6000:]
    outcome = f"still running after {timeout_s} s" if timed_out else f"exit {proc.returncode}"
    assert proc.returncode == 0 and not timed_out, f"{Path(script).name}: {outcome}\n{tail}"
