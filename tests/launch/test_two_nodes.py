"""A real two-node job on this machine: the launcher's multi-node batch script, unchanged, on SLURM nodes n1 and
n2 of ``launch/slurm_local.sh`` (each its own hostname and address; one filesystem, as a cluster's shared /home).

The tiny config on 2 nodes x 1 process (gloo over the nodes' network) against one plain process with the same
global batch: the same rows and injected instances at every step and bitwise the same losses; a second two-node
job is sent USR1 as SLURM does before a time limit, checkpoints on both nodes, is requeued and resumes to the
same losses; and OLMo's per-filesystem work (the global data order in ``train_data/``) is done once, not once per
node. All three runs start together (module fixture); each test waits for what it reads.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from launch_testing import JOB_WAIT_S, preempt, run_log, stop_step_of_preempted_run, submit_tiny_run, wait_until_done
from olmo_injection import metric_names as mn
from olmo_injection.metrics_record import read_metrics_record

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STEPS = 16
SAVE_INTERVAL = 4
# The preemption below lands one or two steps after the first checkpoint, well before the end; evaluations at
# 8 and 16 (one after the resume). The data indices record every row each rank trains on.
#
# One row per rank, and the one process trains its two rows as two micro-batches of one row: each rank's device
# batch is then exactly one of the one process's micro-batches, so every fp32 sum (each micro-batch's loss and
# weight gradients, then micro-batch 0 + micro-batch 1) is formed from the same terms in the same grouping and
# the runs agree bitwise. With tiny.yaml's 8 rows OLMo deals rows 0,2,4,6 to rank 0 but the one process sums
# rows 0-3 and 4-7 per micro-batch: the step-1 gradients then differ in the last bits (total norm by 2 units in
# the last place) and the losses by up to 2 units in the last place (1.9e-6) by step 16.
OVERRIDES = {"max_duration": STEPS, "save_interval": SAVE_INTERVAL, "eval_interval": 8, "save_data_indices": True,
             "global_train_batch_size": 2, "device_train_microbatch_size": 1}
TWO_NODES = {"partition": "twonode", "nodes": 2, "nproc_per_node": 1, "cpus_per_node": 1,
             # every rank's log lines, each tagged with its host: which node did what
             "env": {"WANDB_MODE": "offline", "LOG_FILTER_TYPE": "all_ranks"}}
GLOBAL_BATCH = OVERRIDES["global_train_batch_size"]
LOSS = "train/CrossEntropyLoss"
DATA_ORDER_WRITTEN = "Saving global data order indices"


def rows_by_step(save_folder: Path, world_size: int) -> Dict[int, List[int]]:
    """Dataset index of every row of every global batch, in global-batch order, from the ranks' data indices.

    OLMo deals the training order out to ranks interleaved: row ``j`` of rank ``r``'s device batch is row
    ``r + world_size * j`` of the global batch.
    """
    per_rank = []
    for rank in range(world_size):
        with gzip.open(save_folder / "data-indices" / f"rank{rank}.tsv.gz", "rt") as f:
            lines = [line.split("\t") for line in f.read().splitlines()]
        steps = [int(line[0]) for line in lines]
        assert len(set(steps)) == len(steps), f"rank {rank} trained some step twice: {steps}"
        per_rank.append({int(line[0]): [int(i) for i in line[1:]] for line in lines})
    out = {}
    for step in per_rank[0]:
        rows = [0] * GLOBAL_BATCH
        for rank, indices in enumerate(per_rank):
            rows[rank::world_size] = indices[step]
        out[step] = rows
    return out


def metrics(run_dir: Path) -> Dict[int, dict]:
    return {row["_step"]: row for row in read_metrics_record(run_dir / "checkpoints")}


def compared_keys(row: dict) -> List[str]:
    """Training loss and every per-task metric; not OLMo's LM evaluator, whose subset is sharded by rank, nor
    the perplexity, which is exp(loss) and adds nothing."""
    return [k for k, v in row.items()
            if k.startswith(mn.TRAINING_NAMESPACES) and not k.endswith("Perplexity") and isinstance(v, float)]


@pytest.fixture(scope="module")
def runs(two_node_cluster, tmp_path_factory):
    """Two two-node jobs (the second preempted after its first checkpoint) and the one-process reference."""
    root = tmp_path_factory.mktemp("two_nodes")
    jobs = {name: submit_tiny_run(root, name, OVERRIDES, TWO_NODES) for name in ("two", "preempted")}
    reference = root / "one-process"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(root / "one-process.log", "w") as log:
        # The very config the jobs train, in one plain process (a one-rank group, no torchrun).
        one = subprocess.Popen(
            [sys.executable, "-m", "olmo_injection.train", str(jobs["two"][1].config_path),
             f"--save_folder={reference}"], env=env, stdout=log, stderr=subprocess.STDOUT)
        first_checkpoint = jobs["preempted"][1].run_dir / "checkpoints" / f"step{SAVE_INTERVAL}-unsharded"
        preempt(*jobs["preempted"], first_checkpoint.is_dir, "the first checkpoint")
        status = one.wait(timeout=JOB_WAIT_S)
    assert status == 0, (root / "one-process.log").read_text()[-3000:]
    for task_id, run in jobs.values():
        info = wait_until_done(task_id, run)
        assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", run_log(run).read_text()[-3000:]
    return {**{name: run for name, (_, run) in jobs.items()}, "one": reference}


def test_the_job_trains_one_rank_on_each_node(runs):
    log = run_log(runs["two"]).read_text()
    assert re.search(r"nodes n\[1-2\], rendezvous n1:\d+", log), log[:2000]
    # OLMo tags each log line with "<hostname>:<local rank>": both hosts trained.
    assert "\tn1:0\t" in log and "\tn2:0\t" in log
    assert "training exited with status 0" in log
    assert sorted(s for s, row in metrics(runs["two"].run_dir).items() if LOSS in row) == list(range(1, STEPS + 1))


def test_two_nodes_train_on_the_same_stream_with_the_same_losses_as_one_process(runs):
    one, two = rows_by_step(runs["one"], 1), rows_by_step(runs["two"].run_dir / "checkpoints", 2)
    assert sorted(two) == list(range(1, STEPS + 1))
    assert two == one  # the same dataset row at every position of every global batch
    expected = {row["_step"]: row for row in read_metrics_record(runs["one"])}
    got = metrics(runs["two"].run_dir)
    for step in range(1, STEPS + 1):
        # Which rows carried which task, and how many instances so far: exactly the same.
        injected = [k for k in expected[step] if k.endswith(("/injected", "/instances_seen"))]
        assert injected and all(got[step][k] == expected[step][k] for k in injected), step
        for key in compared_keys(expected[step]):
            # The same fp32 operations on the same numbers (see OVERRIDES): bitwise equal, not merely close.
            assert got[step][key] == expected[step][key], (step, key, got[step][key], expected[step][key])


def test_usr1_stops_both_nodes_with_a_checkpoint_and_the_requeued_job_resumes_exactly(runs):
    run = runs["preempted"]
    log = run_log(run).read_text()
    stop_step = stop_step_of_preempted_run(log)
    assert SAVE_INTERVAL <= stop_step < STEPS
    checkpoints = run.run_dir / "checkpoints"
    assert (checkpoints / f"step{stop_step}-unsharded").is_dir()  # the checkpoint the signal asked for
    assert f"Restoring checkpoint {checkpoints / f'step{stop_step}-unsharded'}" in log
    # srun carried the signal to both nodes: each rank stopped for it, not only for the other's request.
    for node in ("n1", "n2"):
        assert re.search(rf"\t{node}:0\t.*Stopping at step {stop_step} \(received SIGUSR1\)", log), node

    expected, got = metrics(runs["two"].run_dir), metrics(run.run_dir)
    assert sorted(got) == sorted(expected)  # every step once: the record was cut back to the checkpoint
    for step in range(1, STEPS + 1):
        for key in compared_keys(expected[step]) + [k for k in expected[step] if k.startswith("eval/")]:
            assert got[step][key] == pytest.approx(expected[step][key], rel=1e-6), (step, key)
    assert rows_by_step(checkpoints, 2) == rows_by_step(runs["two"].run_dir / "checkpoints", 2)


def test_the_data_order_is_written_once_on_the_shared_filesystem(runs):
    for name, starts in (("two", 1), ("preempted", 2)):
        writers = [line.split("\t")[1] for line in run_log(runs[name]).read_text().splitlines()
                   if DATA_ORDER_WRITTEN in line]
        assert writers == ["n1:0"] * starts, (name, writers)  # global rank 0 alone, at every start
    order = np.fromfile(runs["two"].run_dir / "checkpoints" / "train_data" / "global_indices.npy", dtype=np.uint32)
    one = np.fromfile(runs["one"] / "train_data" / "global_indices.npy", dtype=np.uint32)
    # The same order, complete: OLMo drops the tail that does not split evenly over the ranks (drop_last).
    assert len(one) - 2 < len(order) <= len(one) and np.array_equal(order, one[: len(order)])
