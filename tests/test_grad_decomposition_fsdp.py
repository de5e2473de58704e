"""Gradient interference under FSDP, on one rank, on the CPU in fp32 (gloo); tests/gpu runs the same on CUDA,
in fp32 and bf16, and imports the helpers below.

- g = g_t + g_nt and g_r under FSDP equal the unsharded model's: FSDP's flat parameters and its forward and
  backward machinery around the first block, and g_r through the FSDP wrapper as the training hook computes it;
  afterwards the wrapper still holds the parameters its optimizer holds.
- A training run through the entry point with FSDP and the hook logs the gradient FSDP hands the optimizer,
  and saves its sharded checkpoints (which need those parameters to be the optimizer's).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from olmo_injection import metric_names as mn
from olmo_injection.grad_decomposition import NeuronGradCapture, cosine, olmo_micro_batch_loss, split_rows
from olmo_injection.grad_decomposition import task_reference_gradient
from olmo_injection.hooks.base import TrainingHook
from olmo_injection.hooks.grad_interference import GradInterferenceHook
from olmo_injection.neurons import first_mlp_block, neuron_slices
from test_grad_decomposition import NEURONS, autograd_neuron_gradient, injected_batch, relative_error, task_instances
from test_grad_decomposition import tiny_model


def fsdp_wrapped(model, device: torch.device, bf16: bool):
    """``model`` as ``olmo_injection.train.build_model`` wraps it: FSDP by block, original parameters kept,
    OLMo's ``mixed`` precision (bf16 parameters, fp32 gradient reduction) when ``bf16``."""
    from olmo.config import FSDPWrapStrategy
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import MixedPrecision

    precision = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.bfloat16)
    return FSDP(model, auto_wrap_policy=model.get_fsdp_wrap_policy(FSDPWrapStrategy.by_block),
                mixed_precision=precision if bf16 else None, use_orig_params=True, device_id=device)


def olmo_backward(model, batch, microbatch_size: int, bf16: bool) -> None:
    """OLMo's ``train_batch`` on one rank: per micro-batch, (autocast) forward, loss / device-batch tokens, backward."""
    tokens = batch["input_ids"].numel()
    for micro_batch in split_rows(batch, microbatch_size):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = olmo_micro_batch_loss(model, micro_batch, tokens)
        loss.backward()


def check_decomposition_under_fsdp(device: torch.device, bf16: bool, tolerance: float) -> None:
    """Our capture under FSDP against the unsharded model's autograd gradient, FSDP's own gradient, the
    unsharded capture's split, and g_r; relative errors below ``tolerance``."""
    batch, mask = injected_batch(6, injected_rows=[0, 3, 4])
    batch, mask = {k: v.to(device) for k, v in batch.items()}, mask.to(device)

    unsharded = tiny_model().to(device)  # the same seed: the same weights
    with NeuronGradCapture(first_mlp_block(unsharded), NEURONS) as capture:
        capture.add_task_mask(mask)
        olmo_backward(unsharded, batch, 2, bf16)
    unsharded_parts = capture.gradients()

    inner = tiny_model()
    sharded = fsdp_wrapped(inner, device, bf16)
    with NeuronGradCapture(first_mlp_block(inner), NEURONS) as capture:  # the block is an FSDP unit
        capture.add_task_mask(mask)
        olmo_backward(sharded, batch, 2, bf16)
    parts = capture.gradients()

    assert relative_error(parts.total, autograd_neuron_gradient(unsharded)) < tolerance
    assert relative_error(parts.total, autograd_neuron_gradient(inner).float()) < tolerance  # FSDP's own .grad
    assert relative_error(parts.task, unsharded_parts.task) < tolerance
    assert relative_error(parts.non_task, unsharded_parts.non_task) < tolerance
    instances = task_instances(10, seed=4)
    dtype = torch.bfloat16 if bf16 else None
    optimizer = torch.optim.AdamW(sharded.parameters())
    on_fsdp = task_reference_gradient(sharded, instances, NEURONS, batch_size=3, autocast_dtype=dtype)
    on_unsharded = task_reference_gradient(unsharded, instances, NEURONS, batch_size=3, autocast_dtype=dtype)
    assert relative_error(on_fsdp, on_unsharded) < tolerance
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in sharded.parameters()}  # the optimizer still updates the model


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


def check_probe(probe: GradientProbe, rel: float) -> None:
    """Every step: the logged g is the gradient FSDP handed the optimizer, its cosine with g_r is the one logged,
    and the per-task metrics are there."""
    assert [r["step"] for r in probe.steps] == list(range(probe.steps[0]["step"], probe.steps[-1]["step"] + 1))
    for record in probe.steps:
        metrics, grad = record["metrics"], record["grad"]
        assert metrics[mn.GRAD_NORM_G] == pytest.approx(float(grad.norm()), rel=rel), record["step"]
        assert metrics[mn.GRAD_COS_G_REF] == pytest.approx(cosine(grad, record["reference"]), abs=rel)
        assert math.isfinite(metrics[mn.task_key("cmp", mn.TRAIN_STEP, mn.LOSS)])


def test_decomposition_under_fsdp_equals_the_unsharded_model_gradient(one_process_group):
    check_decomposition_under_fsdp(torch.device("cpu"), bf16=False, tolerance=1e-5)


@pytest.mark.slow  # one tiny FSDP training run (~25 s)
def test_fsdp_run_with_the_hook_logs_the_optimizer_gradient_and_saves_sharded_checkpoints(tmp_path, monkeypatch):
    from olmo_injection.train import load_config, train

    monkeypatch.setenv("WANDB_MODE", "offline")
    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    cfg = load_config(str(tiny), [
        f"save_folder={tmp_path}", "max_duration=3", "save_interval=2", "distributed_strategy=fsdp",
        "fsdp.wrapping_strategy=by_block", "sharded_checkpointer=olmo_core", "save_interval_unsharded=null",
        "grad_interference.enabled=true", "grad_interference.num_task_neurons=4", "grad_interference.selection_step=1",
        "grad_interference.reference_interval=2", "max_grad_norm=null", "evaluators=[]",
    ])  # fmt: skip
    probe = GradientProbe()
    assert train(cfg, extra_hooks=[probe]).final_step == 3
    check_probe(probe, rel=1e-5)
    assert sorted(p.name for p in tmp_path.glob("step*")) == ["step0", "step2", "step3"]
