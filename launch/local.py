"""Train one run of a sweep (or a plain config) on this machine with ``torchrun``, in the foreground."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, List

from olmo_injection.sweep import RunSpec, write_run_config


def torchrun_command(run: RunSpec, nproc_per_node: int, python: str = sys.executable) -> List[str]:
    """``torchrun --standalone`` (rendezvous on this host) starting ``nproc_per_node`` training processes.

    Each rank's output also goes to its own files under ``<run>/logs/ranks/`` and reaches the console with a
    ``[default<local rank>]:`` prefix (torchrun's ``--redirects``/``--tee``), as in the SLURM job script.
    """
    if nproc_per_node < 1:
        raise ValueError(f"--nproc-per-node={nproc_per_node}: must be >= 1")
    return [
        python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc_per_node}",
        f"--log-dir={run.run_dir / 'logs' / 'ranks'}", "--redirects=3", "--tee=3",
        "-m", "olmo_injection.train", str(run.config_path),
    ]


def job_environment() -> Dict[str, str]:
    """The current environment plus what training needs (as the SLURM script sets it)."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("PYTHONFAULTHANDLER", "1")  # every thread's traceback on a crash or a hang's fatal signal
    return env


def run_local(run: RunSpec, nproc_per_node: int) -> int:
    """Write the run's config and train it; returns torchrun's exit status (0 = finished)."""
    write_run_config(run)
    return subprocess.call(torchrun_command(run, nproc_per_node), env=job_environment())
