"""The launcher against a real SLURM (``launch/slurm_local.sh``): a tiny CPU training job of two processes,
and a preemption cycle (USR1 -> checkpoint -> requeue -> resume) that must end with the same losses.

Both jobs are submitted at once (module fixture) and share the node; each test then waits for its job.
"""

from __future__ import annotations

import math

import pytest

from launch_testing import preempt, run_log, stop_step_of_preempted_run, submit_tiny_run, wait_until_done
from olmo_injection.metrics_record import read_metrics_record

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STEPS = 12
SAVE_INTERVAL = 4
LOSS = "train/CrossEntropyLoss"
EVAL_LOSS = "eval/validation/CrossEntropyLoss"


def submit_two_process_run(root, name):
    """The tiny config for 12 steps, 2 CPU processes on the debug node."""
    return submit_tiny_run(root, name, {"max_duration": STEPS}, {"nproc_per_node": 2, "cpus_per_node": 2})


def history(run) -> dict:
    """The run's metrics record (``<save_folder>/metrics.jsonl``), one dict per step."""
    return {row["_step"]: row for row in read_metrics_record(run.run_dir / "checkpoints")}


def preempt_after_first_checkpoint(task_id: str, run) -> None:
    """Signal the job as SLURM does before its time limit, once it has a checkpoint; wait for the requeue."""
    first = run.run_dir / "checkpoints" / f"step{SAVE_INTERVAL}-unsharded"
    preempt(task_id, run, first.is_dir, "the first checkpoint")


@pytest.fixture(scope="module")
def jobs(slurm_cluster, tmp_path_factory):
    """Two identical tiny runs submitted together; the second is preempted after its first checkpoint."""
    root = tmp_path_factory.mktemp("slurm")
    submitted = {name: submit_two_process_run(root, name) for name in ("reference", "preempted")}
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
    stop_step = stop_step_of_preempted_run(log)
    assert SAVE_INTERVAL <= stop_step < STEPS
    assert (checkpoints / f"step{stop_step}-unsharded").is_dir()  # the checkpoint the signal asked for
    assert (checkpoints / f"step{STEPS}-unsharded").is_dir()

    reference_task, reference_run = jobs["reference"]
    wait_until_done(reference_task, reference_run)
    expected, got = history(reference_run), history(run)
    for step in range(1, STEPS + 1):
        assert got[step][LOSS] == pytest.approx(expected[step][LOSS], rel=1e-6), step
    assert got[STEPS][EVAL_LOSS] == pytest.approx(expected[STEPS][EVAL_LOSS], rel=1e-6)
