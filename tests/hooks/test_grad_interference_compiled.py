"""The gradient capture with the blocks under ``torch.compile``, on the CPU.

The backend is ``aot_eager``: Dynamo and AOTAutograd, where module and tensor hooks meet the compiler, without
inductor's code generation (minutes of C++ compilation on a CPU); tests/gpu runs the same with inductor on CUDA.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from olmo.config import CompilerConfig

from test_grad_decomposition import (
    NEURONS,
    autograd_neuron_gradient,
    injected_batch,
    relative_error,
    task_instances,
    tiny_model,
    train_batch_backward,
)

from olmo_injection import metric_names as mn
from olmo_injection.grad_decomposition import NeuronGradCapture, cosine, task_reference_gradient
from olmo_injection.hooks.base import TrainingHook
from olmo_injection.hooks.grad_interference import GradInterferenceHook
from olmo_injection.hooks.grad_interference_config import GradInterferenceConfig
from olmo_injection.neurons import first_mlp_block, neuron_slices

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def with_compiled_blocks(model, **compile_kwargs):
    """``model`` with every block compiled as ``olmo_injection.train.build_model`` does for ``compile:``."""
    for block in model.transformer.blocks:
        block.compile(backend="aot_eager", **compile_kwargs)
    return model


def test_capture_in_compiled_blocks_equals_autograd_and_the_uncompiled_split():
    batch, mask = injected_batch(6, injected_rows=[0, 3, 4])
    eager = tiny_model()
    with NeuronGradCapture(first_mlp_block(eager), NEURONS) as capture:
        capture.add_task_mask(mask)
        train_batch_backward(eager, batch, microbatch_size=2)
    expected = capture.gradients()

    model = with_compiled_blocks(tiny_model())
    for _ in range(2):  # the second pass runs the cached graphs, after a pass without the capture's hooks
        model.zero_grad(set_to_none=True)
        with NeuronGradCapture(first_mlp_block(model), NEURONS) as capture:
            capture.add_task_mask(mask)
            train_batch_backward(model, batch, microbatch_size=2)
        grads = capture.gradients()
        assert relative_error(grads.total, autograd_neuron_gradient(model)) < 1e-5
        assert relative_error(grads.task, expected.task) < 1e-5
        assert relative_error(grads.non_task, expected.non_task) < 1e-5
        model.zero_grad(set_to_none=True)
        train_batch_backward(model, batch, microbatch_size=2)

    instances = task_instances(10, seed=4)
    reference = task_reference_gradient(model, instances, NEURONS, batch_size=3)
    assert relative_error(reference, task_reference_gradient(tiny_model(), instances, NEURONS, batch_size=3)) < 1e-5


class CompiledRunProbe(TrainingHook):
    """After each step: the run's logged metrics, and the optimizer's gradient on the hook's task neurons."""

    def __init__(self):
        self.steps = []

    def post_step(self, trainer, batch):
        hook = next(h for h in trainer.hooks if isinstance(h, GradInterferenceHook))
        block = first_mlp_block(trainer.model)
        record = {"metrics": dict(trainer.step_metrics), "compiled": block._compiled_call_impl is not None}
        if hook.neurons is not None:
            record["grad"] = neuron_slices(block.ff_proj.weight.grad, block.ff_out.weight.grad, hook.neurons)
            record["reference"] = hook.reference.clone()
        self.steps.append(record)
        return {}


@pytest.mark.slow  # one tiny training run with compiled blocks (~30 s)
def test_training_with_compiled_blocks_and_every_hook_logs_the_optimizer_gradient(tmp_path, monkeypatch):
    from olmo_injection.train import load_config, train

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = load_config(str(TINY), [
        f"--save_folder={tmp_path}", "--max_duration=3", "--compile={backend: aot_eager}", "--max_grad_norm=null",
        "--grad_interference.enabled=true", "--grad_interference.num_task_neurons=4",
        "--grad_interference.selection_step=1", "--evaluators=[]", "--eval_interval=1000",
        "--save_interval=1000", "--save_interval_unsharded=1000", "--no_pre_train_checkpoint=true",
    ])  # fmt: skip
    probe = CompiledRunProbe()
    assert train(cfg, extra_hooks=[probe]).final_step == 3
    assert len(probe.steps) == 3 and all(record["compiled"] for record in probe.steps)
    for record in probe.steps:
        metrics = record["metrics"]
        assert np.isfinite(metrics[mn.task_key("cmp", mn.TRAIN_STEP, mn.LOSS)])  # the per-task metrics hook
        assert metrics[mn.GRAD_NORM_G] == pytest.approx(float(record["grad"].norm()), rel=1e-5)
        assert metrics[mn.GRAD_COS_G_REF] == pytest.approx(cosine(record["grad"], record["reference"]), abs=1e-5)


def test_fullgraph_compile_is_refused_with_the_reason(tmp_path):
    from olmo_injection.tasks import Task

    task = Task(
        name="cmp", kind="cmp", word_tokens=np.arange(10, 14), word_strings=[" a", " b", " c", " d"],
        label_tokens=np.array([20, 21]), label_strings=[" t", " f"], modulus=0, is_train=np.arange(16) % 2 == 0,
        seed=0,
    )  # fmt: skip
    hook = GradInterferenceHook(GradInterferenceConfig(enabled=True), [task])
    trainer = SimpleNamespace(cfg=SimpleNamespace(save_folder=str(tmp_path), compile=CompilerConfig(fullgraph=True)))
    with pytest.raises(ValueError, match=r"compile.fullgraph=True: the capture's hooks .* graph break"):
        hook.on_train_start(trainer)
    trainer.cfg.compile = CompilerConfig(fullgraph=False)
    trainer.model = with_compiled_blocks(tiny_model())
    hook.on_train_start(trainer)  # accepted
