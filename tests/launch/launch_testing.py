"""Shared by the launcher tests: repository paths, the sub-commands run in-process as ``olmo-inject`` does, and
the tiny training jobs submitted to the local SLURM cluster and waited for.

(No ``__init__.py`` in tests/launch: as a package it would be imported as ``launch`` and hide the real one.)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest
import yaml

from launch.cli import register
from launch.slurm import plan_jobs, submit
from launch.slurm_config import slurm_config_from
from olmo_injection.sweep import RunSpec, expand_sweep, load_sweep

REPO = Path(__file__).resolve().parents[2]
SLURM_LOCAL = REPO / "launch" / "slurm_local.sh"
TINY_CONFIG = REPO / "configs" / "tiny.yaml"
JOB_WAIT_S = 300
FINAL_JOB_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def run_cli(argv: List[str]) -> int:
    """Parse ``argv`` like ``olmo_injection.cli.main`` (dotted overrides after the file) and run the command."""
    parser = argparse.ArgumentParser(prog="olmo-inject")
    register(parser.add_subparsers(dest="command", required=True))
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [u.lstrip("-") for u in unknown]
    return int(args.func(args) or 0)


def submit_tiny_run(root: Path, name: str, overrides: Dict[str, Any], slurm: Dict[str, Any]) -> Tuple[str, RunSpec]:
    """Submit the tiny config with ``overrides`` through the launcher on CPUs (wandb offline), with ``slurm``
    settings on top of a 20-minute limit; returns (array task id ``<job>_0``, the run)."""
    sweep_file = root / f"{name}.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "sweep": {"name": name, "base": [str(TINY_CONFIG)], "overrides": overrides},
        "slurm": {"runs_root": str(root / "runs"), "cpu": True, "time": "20", "env": {"WANDB_MODE": "offline"},
                  **slurm},
    }))
    sweep = load_sweep(sweep_file)
    resources = slurm_config_from(sweep.slurm)
    (job,) = plan_jobs(sweep.name, expand_sweep(sweep, resources.runs_root), resources)
    array_id = submit(job)
    return f"{array_id}_0", job.runs[0]


def job_info(job_id: str) -> Dict[str, str]:
    """``scontrol show job`` as a dict (empty once SLURM has forgotten the job)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def run_log(run: RunSpec) -> Path:
    """The run's job log (``<run>/logs/slurm-<jobid>.out``; restarts append to it)."""
    logs = sorted((run.run_dir / "logs").glob("slurm-*.out"))
    return logs[0] if logs else run.run_dir / "logs" / "slurm-pending.out"


def wait_for(condition: Callable[[], Any], what: str, log: Path, timeout: float = JOB_WAIT_S):
    """``condition()``'s first truthy value, polled every 0.2 s; fails the test with the log's tail on a timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log.exists() else "(no log yet)"
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; job log tail:\n{tail}")


def wait_until_done(task_id: str, run: RunSpec) -> Dict[str, str]:
    """The job's final ``scontrol`` record, once it has left the queue for good."""
    def finished():
        info = job_info(task_id)
        return info if info.get("JobState") in FINAL_JOB_STATES else None

    return wait_for(finished, f"job {task_id} to finish", run_log(run))


def preempt(task_id: str, run: RunSpec, ready: Callable[[], bool], what: str) -> None:
    """Once ``ready()``, signal the job as SLURM does before its time limit; return when it is requeued."""
    wait_for(ready, what, run_log(run))
    # SLURM's --signal=B:USR1@<seconds> delivers USR1 to the batch shell only; so does this.
    subprocess.run(["scancel", "--signal=USR1", "--batch", task_id], check=True)

    wait_for(lambda: int(job_info(task_id).get("Restarts", 0)) >= 1, "the job to be requeued", run_log(run))
    # It starts again by itself after the cluster's cred_expire (10 s, launch/slurm_local.sh). Releasing it earlier
    # races the revocation of its previous run's credential ("Job credential revoked").


def stop_step_of_preempted_run(log: str) -> int:
    """The step at which a run stopped on SLURM's USR1 warning, after checking the log shows the warning, the
    requeue and both starts."""
    import re

    assert "USR1 before the time limit" in log and "requeueing job" in log
    assert "restart 0," in log and "restart 1," in log
    stopped = re.search(r"Stopping at step (\d+)", log)
    assert stopped, log[-3000:]
    return int(stopped.group(1))

