"""Where a task lives: MLP-layer ablations and the first layer's task neurons.

Ablation replaces the output of one block's MLP (its ``ff_out``) at every position by zero, or by its mean over
the task prompts at that position, and reports the change of the task loss. Task neurons are the MLP neurons of
the first block ranked by the norm of the task-loss gradient on the weights each neuron owns: rows ``i`` and
``hidden/2 + i`` of ``ff_proj.weight`` and column ``i`` of ``ff_out.weight`` (docs/olmo_0_6_0.md#model, SwiGLU layout).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Dict, Iterator

import numpy as np
import torch
from olmo.model import OLMo

from olmo_injection.neurons import TaskNeurons, first_mlp_block, neuron_slices, num_neurons, top_neurons
from olmo_injection.tasks import Task

from .task_prompts import label_position_logits, label_targets, prompt_ids, task_loss_from_logits

ABLATIONS = ("zero", "mean")


@dataclass
class LocalisationConfig:
    """Which instances and how many neurons."""

    split: str = "all"
    """Instances used: ``train``, ``test`` or ``all`` (the paper's reference gradient uses all 10K)."""

    num_task_neurons: int = 32
    """K of the top-K task neurons (paper: not stated)."""

    ablation_instances: int = 1024
    """Instances (sampled from ``split`` with ``seed``) on which each ablation's task loss is measured; the
    ablation sweep costs 2 x n_layers forward passes, so it uses a sample. Task neurons use the whole split."""

    seed: int = 0
    """Seeds the ablation sample."""

    batch_size: int = 512
    """Prompts per forward pass."""

    def validate(self) -> None:
        if self.split not in ("train", "test", "all"):
            raise ValueError(f"split={self.split!r}: allowed are 'train', 'test', 'all'")
        if self.num_task_neurons < 1:
            raise ValueError(f"num_task_neurons={self.num_task_neurons}: must be >= 1")
        if self.ablation_instances < 1:
            raise ValueError(f"ablation_instances={self.ablation_instances}: must be >= 1")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: must be >= 1")


def split_ids(task: Task, split: str) -> np.ndarray:
    """Instance ids of ``train``, ``test`` or ``all``."""
    return {"train": task.train_ids, "test": task.test_ids, "all": np.arange(task.num_values**2)}[split]


@contextmanager
def replaced_mlp_output(model: OLMo, layer: int, replacement: torch.Tensor) -> Iterator[None]:
    """Within the block, the output of block ``layer``'s ``ff_out`` becomes ``replacement`` ([seq, d] broadcast)."""
    handle = model.transformer.blocks[layer].ff_out.register_forward_hook(
        lambda _m, _i, out: replacement.to(out.dtype).expand_as(out)
    )
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def _task_loss(model: OLMo, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int) -> float:
    total = 0.0
    for start in range(0, len(inputs), batch_size):
        logits = label_position_logits(model, inputs[start : start + batch_size])
        total += float(task_loss_from_logits(logits, targets[start : start + batch_size])) * len(logits)
    return total / len(inputs)


@torch.no_grad()
def _mean_mlp_outputs(model: OLMo, inputs: torch.Tensor, batch_size: int) -> list:
    """Per block, the mean ``ff_out`` output over the prompts at each position: [seq, d]."""
    sums = [torch.zeros(()) for _ in model.transformer.blocks]
    handles = [
        block.ff_out.register_forward_hook(lambda _m, _i, out, i=i: sums.__setitem__(i, sums[i] + out.sum(0)))
        for i, block in enumerate(model.transformer.blocks)
    ]
    try:
        for start in range(0, len(inputs), batch_size):
            label_position_logits(model, inputs[start : start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
    return [s / len(inputs) for s in sums]


def mlp_ablation(model: OLMo, task: Task, cfg: LocalisationConfig) -> Dict:
    """Task loss (nats) clean and with each block's MLP output zeroed / mean-replaced, and the increases."""
    cfg.validate()
    ids = split_ids(task, cfg.split)
    if len(ids) > cfg.ablation_instances:
        ids = np.sort(np.random.default_rng(cfg.seed).choice(ids, size=cfg.ablation_instances, replace=False))
    inputs, targets = prompt_ids(task, ids), label_targets(task, ids)
    clean = _task_loss(model, inputs, targets, cfg.batch_size)
    means = _mean_mlp_outputs(model, inputs, cfg.batch_size)
    result = {"clean_loss": clean, "config": asdict(cfg)}
    for ablation in ABLATIONS:
        losses = []
        for layer in range(len(model.transformer.blocks)):
            replacement = torch.zeros(()) if ablation == "zero" else means[layer]
            with replaced_mlp_output(model, layer, replacement):
                losses.append(_task_loss(model, inputs, targets, cfg.batch_size))
        result[f"{ablation}_ablated_loss"] = losses
        result[f"{ablation}_loss_increase"] = [loss - clean for loss in losses]
    return result


def task_neuron_gradients(model: OLMo, task: Task, cfg: LocalisationConfig) -> torch.Tensor:
    """[n, 3, d_model] gradient of the mean task loss on every first-block neuron's weights (``neurons.py`` layout)."""
    cfg.validate()
    block = first_mlp_block(model)
    ids = split_ids(task, cfg.split)
    inputs, targets = prompt_ids(task, ids), label_targets(task, ids)
    params = [block.ff_proj.weight, block.ff_out.weight]
    grads = [torch.zeros_like(p) for p in params]
    for start in range(0, len(inputs), cfg.batch_size):
        logits = label_position_logits(model, inputs[start : start + cfg.batch_size])
        # Weighted by batch share so the sum is the gradient of the mean loss over all instances.
        loss = task_loss_from_logits(logits, targets[start : start + cfg.batch_size]) * len(logits) / len(inputs)
        for acc, g in zip(grads, torch.autograd.grad(loss, params)):
            acc += g
    return neuron_slices(grads[0], grads[1], torch.arange(num_neurons(block)))


def task_neurons(model: OLMo, task: Task, cfg: LocalisationConfig, source: str = "") -> TaskNeurons:
    """The top-K first-block neurons by task-gradient norm, as the training-time hook's ``TaskNeurons``."""
    gradients = task_neuron_gradients(model, task, cfg)
    top = top_neurons(gradients, cfg.num_task_neurons)
    return TaskNeurons(
        task=task.name,
        neurons=top.tolist(),
        gradient_norms=gradients[top].flatten(1).norm(dim=1).tolist(),
        num_neurons_in_block=gradients.shape[0],
        selected_at_step=None,
        source=source,
    )
