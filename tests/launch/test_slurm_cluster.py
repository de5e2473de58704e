"""The launcher against a real SLURM (``launch/slurm_local.sh``): a tiny CPU training job of two processes,
and a preemption cycle (USR1 -> checkpoint -> requeue -> resume) that must end with the same losses.

Both jobs are submitted at once (module fixture) and share the node; each test then waits for its job.
"""

from __future__ import annotations

import math
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from launch.slurm import plan_jobs, submit
from launch.slurm_config import slurm_config_from
from launch_testing import TINY_CONFIG
from olmo_injection.hooks.wandb_logging import read_wandb_history
from olmo_injection.sweep import expand_sweep, load_sweep

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STEPS = 12
SAVE_INTERVAL = 4
LOSS = "train/CrossEntropyLoss"
EVAL_LOSS = "eval/validation/CrossEntropyLoss"
WAIT_S = 300


def job_info(job_id: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_for(condition, what: str, log: Path, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log.exists() else "(no log yet)"
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; job log tail:\n{tail}")


def submit_tiny_run(root: Path, name: str):
    """Submit the tiny config (12 steps, 2 CPU processes) through the launcher; returns (task id, run)."""
    sweep_file = root / f"{name}.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "sweep": {"name": name, "base": [str(TINY_CONFIG)], "overrides": {"max_duration": STEPS}},
        "slurm": {"runs_root": str(root / "runs"), "cpu": True, "nproc_per_node": 2, "cpus_per_node": 2,
                  "time": "20", "env": {"WANDB_MODE": "offline"}},
    }))
    sweep = load_sweep(sweep_file)
    slurm = slurm_config_from(sweep.slurm)
    (job,) = plan_jobs(sweep.name, expand_sweep(sweep, slurm.runs_root), slurm)
    array_id = submit(job)
    return f"{array_id}_0", job.runs[0]


def run_log(run) -> Path:
    logs = sorted((run.run_dir / "logs").glob("slurm-*.out"))
    return logs[0] if logs else run.run_dir / "logs" / "slurm-pending.out"


def wait_until_done(task_id: str, run) -> dict:
    def finished():
        info = job_info(task_id)
        return info if info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") else None

    return wait_for(finished, f"job {task_id} to finish", run_log(run))


def history(run) -> dict:
    return read_wandb_history(run.run_dir / "checkpoints" / "wandb")


def preempt_after_first_checkpoint(task_id: str, run) -> None:
    """Signal the job as SLURM does before its time limit, once it has a checkpoint; wait for the requeue."""
    checkpoints = run.run_dir / "checkpoints"
    wait_for(lambda: (checkpoints / f"step{SAVE_INTERVAL}-unsharded").is_dir(), "the first checkpoint", run_log(run))
    # SLURM's --signal=B:USR1@<seconds> delivers USR1 to the batch shell only; so does this.
    subprocess.run(["scancel", "--signal=USR1", "--batch", task_id], check=True)

    def requeued():
        info = job_info(task_id)
        return int(info.get("Restarts", 0)) >= 1 and info.get("JobState") == "PENDING"

    wait_for(requeued, "the job to be requeued", run_log(run))
    # It starts again by itself after the cluster's cred_expire (10 s, launch/slurm_local.sh). Releasing it earlier
    # races the revocation of its previous run's credential ("Job credential revoked").


@pytest.fixture(scope="module")
def jobs(slurm_cluster, tmp_path_factory):
    """Two identical tiny runs submitted together; the second is preempted after its first checkpoint."""
    root = tmp_path_factory.mktemp("slurm")
    submitted = {"reference": submit_tiny_run(root, "reference"), "preempted": submit_tiny_run(root, "preempted")}
    preempt_after_first_checkpoint(*submitted["preempted"])
    return submitted


def test_tiny_training_job_runs_through_the_launcher_and_leaves_checkpoints_and_metrics(jobs):
    task_id, run = jobs["reference"]
    info = wait_until_done(task_id, run)
    log = run_log(run).read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log[-3000:]
    assert "training exited with status 0" in log
    assert (run.run_dir / "run.yaml").is_file()
    steps = sorted(int(p.name[4:].split("-")[0]) for p in (run.run_dir / "checkpoints").glob("step*-unsharded"))
    assert steps == list(range(0, STEPS + 1, SAVE_INTERVAL))
    rows = history(run)
    assert [s for s in sorted(rows) if LOSS in rows[s]] == list(range(1, STEPS + 1))
    assert all(math.isfinite(rows[s][LOSS]) for s in range(1, STEPS + 1))
    assert EVAL_LOSS in rows[STEPS]
    assert any(key.startswith("task/cmp/") for key in rows[STEPS])


def test_usr1_checkpoints_requeues_and_resumes_to_the_same_final_losses(jobs):
    task_id, run = jobs["preempted"]
    checkpoints = run.run_dir / "checkpoints"
    info = wait_until_done(task_id, run)
    log = run_log(run).read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log[-3000:]
    assert "USR1 before the time limit" in log and "requeueing job" in log
    assert "restart 0," in log and "restart 1," in log

    stopped = re.search(r"Stopping at step (\d+)", log)
    assert stopped, log[-3000:]
    stop_step = int(stopped.group(1))
    assert SAVE_INTERVAL <= stop_step < STEPS
    assert (checkpoints / f"step{stop_step}-unsharded").is_dir()  # the checkpoint the signal asked for
    assert (checkpoints / f"step{STEPS}-unsharded").is_dir()

    reference_task, reference_run = jobs["reference"]
    wait_until_done(reference_task, reference_run)
    expected, got = history(reference_run), history(run)
    for step in range(1, STEPS + 1):
        assert got[step][LOSS] == pytest.approx(expected[step][LOSS], rel=1e-6), step
    assert got[STEPS][EVAL_LOSS] == pytest.approx(expected[STEPS][EVAL_LOSS], rel=1e-6)
