"""On one CUDA GPU: FSDP with bf16 autocast through the real entry point, resume, the gradient decomposition
under FSDP, and ``torch.compile`` of the blocks with every hook on. Skipped without CUDA (``-m gpu``; never in CI).

The runs train ``configs/tiny.yaml`` widened to d_model 64 (so attention heads are 16 wide), as OLMo's GPU
path runs it: ``distributed_strategy=fsdp`` (a one-rank NCCL group), ``precision=amp_bf16``, FSDP ``mixed``
precision (bf16 parameters and activations, fp32 gradients), the ``olmo_core`` sharded checkpointer, with
injection, per-task metrics and gradient interference on. Tolerances: bf16 rounds to 2^-8, so a quantity our
hooks compute in fp32 from bf16 operands and one autograd computes in bf16 agree to about 1e-2, not 1e-6.
"""

from __future__ import annotations

import math
import signal
from pathlib import Path

import pytest
import torch

from olmo_injection import metric_names as mn
from olmo_injection.metrics_record import read_metrics_record
from test_grad_decomposition_fsdp import GradientProbe, check_decomposition_under_fsdp, check_probe
from test_train import SignalAtStep, offline_wandb  # noqa: F401 (autouse fixture: wandb offline)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
STEPS = 8
GPU_RUN = [
    f"max_duration={STEPS}", "distributed_strategy=fsdp", "precision=amp_bf16", "fsdp.precision=mixed",
    "fsdp.wrapping_strategy=by_block", "sharded_checkpointer=olmo_core", "save_interval_unsharded=null",
    "model.d_model=64", "model.n_heads=4", "model.mlp_hidden_size=256",
    "grad_interference.enabled=true", "grad_interference.num_task_neurons=8", "grad_interference.selection_step=1",
    "grad_interference.reference_interval=4",
    "max_grad_norm=null",  # the probe compares with .grad after the step; clipping would have scaled it
]  # fmt: skip
BF16_REL = 2e-2


def gpu_run(save_folder: Path, *overrides: str):
    from olmo_injection.train import load_config

    return load_config(TINY, [f"save_folder={save_folder}", *GPU_RUN, *overrides])


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    from olmo_injection.train import train

    save_folder = tmp_path_factory.mktemp("fsdp_bf16")
    probe = GradientProbe()
    result = train(gpu_run(save_folder), extra_hooks=[probe])
    return save_folder, result, probe


def test_fsdp_bf16_run_through_the_entry_point_logs_task_metrics_and_gradient_interference(fsdp_run):
    save_folder, result, probe = fsdp_run
    assert result.final_step == STEPS and result.stopped_by_signal is None
    rows = {row["_step"]: row for row in read_metrics_record(save_folder)}
    assert sorted(rows) == list(range(1, STEPS + 1))
    for step, row in rows.items():
        assert math.isfinite(row[mn.LM_TRAIN_LOSS]) and math.isfinite(row[mn.GRAD_COS_G_REF]), step
    # cmp: 2 instances every batch; add: 1 every 2nd batch (as on the CPU: the stream does not depend on the device)
    assert rows[STEPS][mn.task_key("cmp", mn.TRAIN_STEP, mn.INSTANCES_SEEN)] == 2 * STEPS
    assert rows[STEPS][mn.task_key("add", mn.TRAIN_STEP, mn.INSTANCES_SEEN)] == STEPS // 2
    for key in ("eval/validation/CrossEntropyLoss", mn.task_key("cmp", mn.TEST_SPLIT, mn.LOSS)):
        assert math.isfinite(rows[STEPS][key]), key
    assert rows[STEPS][mn.LM_TRAIN_LOSS] < rows[1][mn.LM_TRAIN_LOSS]  # bf16 training does train
    assert sorted(p.name for p in save_folder.glob("step*")) == ["step0", "step4", "step8"]  # sharded checkpoints
    check_probe(probe, rel=BF16_REL)
    assert not any(r["compiled"] for r in probe.steps)


def test_fsdp_bf16_run_stopped_by_sigterm_resumes_to_the_same_losses(fsdp_run, tmp_path):
    from olmo_injection.train import train

    reference, _, _ = fsdp_run
    first = train(gpu_run(tmp_path), extra_hooks=[SignalAtStep(3, signal.SIGTERM)])
    assert first.stopped_by_signal == signal.SIGTERM and first.final_step == 3
    second = train(gpu_run(tmp_path))
    assert second.final_step == STEPS
    expected = {row["_step"]: row for row in read_metrics_record(reference)}
    got = {row["_step"]: row for row in read_metrics_record(tmp_path)}
    assert sorted(got) == sorted(expected)
    for step, row in expected.items():
        for key, value in row.items():
            if key.startswith((*mn.TRAINING_NAMESPACES, "eval/")) and isinstance(value, float):
                # A restarted process may pick other GEMM/SDPA kernels (another summation order); a wrong data
                # position, RNG or optimizer state would move the losses by far more than this.
                assert got[step][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (step, key)


def test_compiled_blocks_with_every_hook_on_log_the_same_gradient(fsdp_run, tmp_path):
    from olmo_injection.train import train

    reference, _, _ = fsdp_run
    probe = GradientProbe()
    result = train(gpu_run(tmp_path, "compile.backend=inductor"), extra_hooks=[probe])
    assert result.final_step == STEPS
    assert all(r["compiled"] for r in probe.steps)
    check_probe(probe, rel=BF16_REL)
    eager = {row["_step"]: row for row in read_metrics_record(reference)}
    compiled = {row["_step"]: row for row in read_metrics_record(tmp_path)}
    for step in range(1, STEPS + 1):
        # Inductor fuses bf16 ops in another order than eager: the same training to bf16 precision.
        assert compiled[step][mn.LM_TRAIN_LOSS] == pytest.approx(eager[step][mn.LM_TRAIN_LOSS], rel=BF16_REL)


@pytest.fixture(scope="module")
def nccl_group():
    """A one-rank NCCL group, as the entry point makes without torchrun."""
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        torch.cuda.set_device(0)
        dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1)
    yield
    if created:
        dist.destroy_process_group()


@pytest.mark.parametrize("bf16, tolerance", [(False, 1e-4), (True, BF16_REL)])
def test_decomposition_under_fsdp_equals_the_unsharded_model_gradient(nccl_group, bf16, tolerance):
    check_decomposition_under_fsdp(torch.device("cuda", 0), bf16, tolerance)
