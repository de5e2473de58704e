"""Train one run of a sweep (or a plain config) on this machine with ``torchrun``, in the foreground."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, List

from olmo_injection.sweep import RunSpec, write_run_config


def torchrun_command(run: RunSpec, nproc_per_node: int, python: str = sys.executable) -> List[str]:
    """``torchrun --standalone`` (rendezvous on this host) starting ``nproc_per_node`` training processes."""
    if nproc_per_node < 1:
        raise ValueError(f"--nproc-per-node={nproc_per_node}: must be >= 1")
    return [
        python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc_per_node}",
        "-m", "olmo_injection.train", str(run.config_path),
    ]


def job_environment() -> Dict[str, str]:
    """The current environment plus what training needs (as the SLURM script sets it)."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_local(run: RunSpec, nproc_per_node: int) -> int:
    """Write the run's config and train it; returns torchrun's exit status (0 = finished)."""
    write_run_config(run)
    return subprocess.call(torchrun_command(run, nproc_per_node), env=job_environment())
