"""``benchmarks/gpu_acceptance.sh`` on the CPU: without CUDA it checks its arguments, says so and exits 0; bad
arguments stop it with one line; and its measuring workers run end to end on a tiny size (the figures
themselves are GPU figures, and not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_acceptance.sh"


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHON": sys.executable, "WANDB_MODE": "offline"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script measures (tests/gpu, by hand)")
def test_without_cuda_it_checks_its_arguments_says_so_and_exits_0(tmp_path):
    out = tmp_path / "acceptance.json"
    done = run("--out", str(out), "--models", "20M,1B", "--micro-batch", "1B=2")
    assert done.returncode == 0, done.stderr
    assert "no CUDA device" in done.stdout and "nothing measured" in done.stdout
    assert "'1B': 2" in done.stdout and "'20M': 16" in done.stdout
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--models", "20M,7B"], r"--models 20M,7B: unknown \['7B'\]; known in configs/models: \['1B', '20M'"),
    (["--micro-batch", "300M=0"], r"--micro-batch '300M=0': write MODEL=N with N >= 1"),
    (["--micro-batch", "4B=1"], r"MODEL one of \['20M', '300M', '1B'\]"),
    (["--seq-len", "0"], r"--seq-len=0: must be >= 1"),
    (["--out", "/"], r"--out /: is a folder"),
])
def test_bad_arguments_stop_it_with_one_line(args, message):
    import re

    done = run(*args)
    assert done.returncode == 2 and re.search(message, done.stderr), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""


def worker(*args: str) -> dict:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_acceptance.py"), "--device", "cpu", *args],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # the 4M model at 64-token rows through the three trainers (~40 s)
def test_the_throughput_worker_measures_the_three_trainers_and_g_r():
    result = worker("--worker", "throughput", "--models", "4M", "--seq-len", "64", "--micro-batch", "4M=2",
                    "--blocks", "2", "--steps-per-block", "1", "--warmup-steps", "0", "--task-values", "10")
    assert result["num_params"] == 6_963_200  # the 4M of docs/launch.md's ladder table, counted before FSDP
    assert result["flops_per_token"] > 6 * 6_963_200 * 0.5
    assert [set(block) for block in result["blocks"]] == [{"plain", "ours", "ours_grad"}] * 2
    for arm in ("plain", "ours", "ours_grad"):
        assert result[arm]["tokens_per_s"] > 0 and result[arm]["mfu"] is None  # no peak known for a CPU
    assert result["ours_grad_over_plain"]["median_time_ratio"] > 0
    assert result["g_r"]["instances"] == 100 and result["g_r"]["seconds"] > 0


def test_the_phase_diagram_worker_times_the_paper_scale_config_and_extrapolates():
    result = worker("--worker", "phase-diagram", "--phase-diagram-steps", "4")
    assert result["steps_run"] == 4 and result["paper_steps"] == 100_000 and len(result["widths"]) == 16
    assert result["extrapolated_paper_scale_wall_s"] == pytest.approx(result["wall_s"] / 4 * 100_000)
