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
from typing import Dict, List

import pytest
import torch

from olmo_injection import metric_names as mn
from olmo_injection.grad_decomposition import NeuronGradCapture, cosine, olmo_micro_batch_loss, split_rows
from olmo_injection.grad_decomposition import task_reference_gradient
from olmo_injection.hooks.base import TrainingHook
from olmo_injection.hooks.grad_interference import GradInterferenceHook
from olmo_injection.metrics_record import read_metrics_record
from olmo_injection.neurons import first_mlp_block, neuron_slices
from test_grad_decomposition import NEURONS, autograd_neuron_gradient, injected_batch, relative_error, task_instances
from test_grad_decomposition import tiny_model
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
TRAINING_KEYS = ("train/", "task/")


class GradientProbe(TrainingHook):
    """After each step: the logged metrics, the optimizer's gradient on the hook's task neurons, and whether the
    first block runs compiled."""

    def __init__(self):
        self.steps: List[Dict] = []

    def post_step(self, trainer, batch):
        hook = next(h for h in trainer.hooks if isinstance(h, GradInterferenceHook))
        block = first_mlp_block(trainer.model)  # under FSDP: the block's FSDP wrapper, which forwards attributes
        record = {"step": trainer.global_step, "metrics": dict(trainer.step_metrics),
                  "compiled": getattr(block, "module", block)._compiled_call_impl is not None}
        if hook.neurons is not None:
            record["grad"] = neuron_slices(block.ff_proj.weight.grad, block.ff_out.weight.grad, hook.neurons).float()
            record["reference"] = hook.reference.clone()
        self.steps.append(record)
        return {}


def gpu_run(save_folder: Path, *overrides: str):
    from olmo_injection.train import load_config

    return load_config(TINY, [f"save_folder={save_folder}", *GPU_RUN, *overrides])


def check_probe(probe: GradientProbe) -> None:
    """The logged g is the gradient FSDP handed the optimizer, and its cosine with g_r is the one logged."""
    assert [r["step"] for r in probe.steps] == list(range(probe.steps[0]["step"], probe.steps[-1]["step"] + 1))
    for record in probe.steps:
        metrics, grad = record["metrics"], record["grad"]
        assert metrics[mn.GRAD_NORM_G] == pytest.approx(float(grad.norm()), rel=BF16_REL), record["step"]
        assert metrics[mn.GRAD_COS_G_REF] == pytest.approx(cosine(grad, record["reference"]), abs=BF16_REL)
        assert math.isfinite(metrics[mn.task_key("cmp", mn.TRAIN_STEP, mn.LOSS)])


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
    check_probe(probe)
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
            if key.startswith(TRAINING_KEYS + ("eval/", "grad/")) and isinstance(value, float):
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
    check_probe(probe)
    eager = {row["_step"]: row for row in read_metrics_record(reference)}
    compiled = {row["_step"]: row for row in read_metrics_record(tmp_path)}
    for step in range(1, STEPS + 1):
        # Inductor fuses bf16 ops in another order than eager: the same training to bf16 precision.
        assert compiled[step][mn.LM_TRAIN_LOSS] == pytest.approx(eager[step][mn.LM_TRAIN_LOSS], rel=BF16_REL)


@pytest.fixture(scope="module")
def process_group():
    """A one-rank NCCL group, as the entry point makes without torchrun."""
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        torch.cuda.set_device(0)
        dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1)
    yield
    if created:
        dist.destroy_process_group()


def fsdp_wrapped(model, bf16: bool):
    """``model`` as ``olmo_injection.train.build_model`` wraps it: FSDP by block, original parameters kept."""
    from olmo.config import FSDPWrapStrategy
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import MixedPrecision

    precision = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.bfloat16)
    return FSDP(model, auto_wrap_policy=model.get_fsdp_wrap_policy(FSDPWrapStrategy.by_block),
                mixed_precision=precision if bf16 else None, use_orig_params=True, device_id=torch.device("cuda"))


def olmo_backward(model, batch, microbatch_size: int, bf16: bool) -> None:
    """OLMo's ``train_batch`` on one rank: per micro-batch, autocast forward, loss / device-batch tokens, backward."""
    tokens = batch["input_ids"].numel()
    for micro_batch in split_rows(batch, microbatch_size):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = olmo_micro_batch_loss(model, micro_batch, tokens)
        loss.backward()


@pytest.mark.parametrize("bf16, tolerance", [(False, 1e-4), (True, BF16_REL)])
def test_decomposition_under_fsdp_equals_the_unsharded_model_gradient(process_group, bf16, tolerance):
    batch, mask = injected_batch(6, injected_rows=[0, 3, 4])
    batch, mask = {k: v.cuda() for k, v in batch.items()}, mask.cuda()
    dtype = torch.bfloat16 if bf16 else None

    unsharded = tiny_model().cuda()  # the same seed: the same weights
    with NeuronGradCapture(first_mlp_block(unsharded), NEURONS) as capture:
        capture.add_task_mask(mask)
        olmo_backward(unsharded, batch, 2, bf16)
    unsharded_parts = capture.gradients()
    expected = autograd_neuron_gradient(unsharded)

    inner = tiny_model()
    sharded = fsdp_wrapped(inner, bf16)
    with NeuronGradCapture(first_mlp_block(inner), NEURONS) as capture:
        capture.add_task_mask(mask)
        olmo_backward(sharded, batch, 2, bf16)
    parts = capture.gradients()

    assert relative_error(parts.total, expected) < tolerance  # against the unsharded model's autograd gradient
    assert relative_error(parts.total, autograd_neuron_gradient(inner).float()) < tolerance  # and FSDP's own
    assert relative_error(parts.task, unsharded_parts.task) < tolerance
    assert relative_error(parts.non_task, unsharded_parts.non_task) < tolerance
    instances = task_instances(10, seed=4)
    # The hook computes g_r on the FSDP wrapper (which gathers the parameters), under the training autocast.
    on_fsdp = task_reference_gradient(sharded, instances, NEURONS, batch_size=3, autocast_dtype=dtype)
    on_unsharded = task_reference_gradient(unsharded, instances, NEURONS, batch_size=3, autocast_dtype=dtype)
    assert relative_error(on_fsdp, on_unsharded) < tolerance
