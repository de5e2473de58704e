"""g = g_t + g_nt on the task neurons against autograd, on a tiny real OLMo model (CPU, gloo for two ranks).

Run as a script (``torchrun --standalone --nproc_per_node=2 tests/test_grad_decomposition.py``) it is one rank
of the two-rank test.
"""

from __future__ import annotations

import types
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from olmo.config import ModelConfig
from olmo.model import OLMo
from olmo.train import Trainer
from torch.nn.parallel import DistributedDataParallel

from olmo_injection import metric_names as mn
from olmo_injection.grad_decomposition import (
    NeuronGradCapture,
    batch_neuron_gradients,
    grad_cosines_for_checkpoint,
    interference_metrics,
    olmo_labels,
    olmo_micro_batch_loss,
    reduce_over_ranks,
    split_rows,
    task_reference_gradient,
)
from olmo_injection.neurons import first_mlp_block, neuron_slices
from two_ranks import run_two_ranks

VOCAB = 64
SEQ_LEN = 8
NEURONS = torch.tensor([5, 0, 11, 3])


def tiny_model(seed: int = 0) -> OLMo:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        d_model=16, n_heads=2, n_layers=2, mlp_hidden_size=32, activation_type="swiglu", vocab_size=VOCAB,
        embedding_size=VOCAB, include_bias=False, layer_norm_with_affine=False, rope=True, weight_tying=False,
        max_sequence_length=SEQ_LEN, eos_token_id=0, pad_token_id=1, init_device="cpu",
        attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0,
    )  # fmt: skip
    return OLMo(cfg)


def task_instances(n: int, seed: int = 0) -> np.ndarray:
    """[n, 3] (TOK1, TOK2, LABEL) ids from a 6-word task with two label tokens, as Task.instances holds."""
    rng = np.random.default_rng(seed)
    words = rng.choice(np.arange(10, 16), size=(n, 2))
    labels = np.where(words[:, 0] < words[:, 1], 20, 21)
    return np.concatenate([words, labels[:, None]], axis=1)


def injected_batch(rows: int, injected_rows, seed: int = 0):
    """A device batch of random text with task instances in ``injected_rows``, and its task-token mask."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(2, VOCAB, (rows, SEQ_LEN), generator=generator)
    instances = torch.as_tensor(task_instances(len(injected_rows), seed))
    mask = torch.zeros(rows, SEQ_LEN, dtype=torch.bool)
    for instance, row in zip(instances, injected_rows):
        input_ids[row, :4] = torch.cat([instance, torch.tensor([0])])
        mask[row, :4] = True
    return {"input_ids": input_ids}, mask


def autograd_neuron_gradient(model: OLMo) -> torch.Tensor:
    block = first_mlp_block(model)
    return neuron_slices(block.ff_proj.weight.grad, block.ff_out.weight.grad, NEURONS)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


def train_batch_backward(model, batch, microbatch_size, z_loss=False, dist_model=None):
    """OLMo's ``train_batch``: per micro-batch summed loss / device-batch tokens, backward, DDP sync on the last."""
    dist_model = dist_model or model
    batch_size_in_tokens = batch["input_ids"].numel()
    micro_batches = split_rows(batch, microbatch_size)
    for index, micro_batch in enumerate(micro_batches):
        last = index == len(micro_batches) - 1
        sync = dist_model.no_sync() if dist_model is not model and not last else torch.enable_grad()
        with sync:
            olmo_micro_batch_loss(dist_model, micro_batch, batch_size_in_tokens, z_loss=z_loss).backward()


@pytest.mark.parametrize("microbatch_size, z_loss", [(6, False), (2, False), (4, True)])
def test_total_equals_autograd_gradient_with_micro_batching(microbatch_size, z_loss):
    model = tiny_model()
    batch, mask = injected_batch(6, injected_rows=[0, 3, 4])
    with NeuronGradCapture(first_mlp_block(model), NEURONS) as capture:
        capture.add_task_mask(mask)
        train_batch_backward(model, batch, microbatch_size, z_loss=z_loss)
    grads = capture.gradients()
    assert relative_error(grads.total, autograd_neuron_gradient(model)) < 1e-5
    assert grads.task.norm() > 0 and grads.non_task.norm() > 0


@pytest.mark.parametrize("strategy", ["whole_layer", "fine_grained"])
def test_activation_checkpoint_recomputation_is_not_counted_twice(strategy):
    from olmo.config import ActivationCheckpointingStrategy

    batch, mask = injected_batch(4, injected_rows=[1])
    task, non_task = split_gradient_by_autograd(tiny_model(), batch, mask)
    model = tiny_model()
    model.set_activation_checkpointing(ActivationCheckpointingStrategy[strategy])
    with NeuronGradCapture(first_mlp_block(model), NEURONS) as capture:
        capture.add_task_mask(mask)
        train_batch_backward(model, batch, microbatch_size=2)
    grads = capture.gradients()
    assert relative_error(grads.task, task) < 1e-5 and relative_error(grads.non_task, non_task) < 1e-5


def split_gradient_by_autograd(model: OLMo, batch, mask) -> tuple:
    """(g_t, g_nt) by autograd alone: task positions use a second copy of each weight (same values).

    Forward hooks replace ``ff_proj``'s and ``ff_out``'s outputs at task positions by the same product with a
    leaf copy of the weight, so autograd sends those positions' gradient to the copy and the rest to the original.
    """
    block = first_mlp_block(model)
    copies = {name: getattr(block, name).weight.detach().clone().requires_grad_() for name in ("ff_proj", "ff_out")}

    def route(name):
        def hook(module, inputs, output):
            return torch.where(mask[..., None], F.linear(inputs[0], copies[name]), output)

        return hook

    handles = [getattr(block, name).register_forward_hook(route(name)) for name in copies]
    try:
        olmo_micro_batch_loss(model, batch, batch["input_ids"].numel()).backward()
    finally:
        for handle in handles:
            handle.remove()
    task = neuron_slices(copies["ff_proj"].grad, copies["ff_out"].grad, NEURONS)
    return task, autograd_neuron_gradient(model)


def test_task_and_non_task_parts_match_autograd_split_by_position():
    batch, mask = injected_batch(4, injected_rows=[1, 2])
    task, non_task = split_gradient_by_autograd(tiny_model(), batch, mask)
    model = tiny_model()
    with NeuronGradCapture(first_mlp_block(model), NEURONS) as capture:
        capture.add_task_mask(mask)
        olmo_micro_batch_loss(model, batch, batch["input_ids"].numel()).backward()
    grads = capture.gradients()
    assert relative_error(grads.task, task) < 1e-5
    assert relative_error(grads.non_task, non_task) < 1e-5


def test_batch_without_task_tokens_has_zero_task_part():
    model = tiny_model()
    batch, mask = injected_batch(4, injected_rows=[])
    grads = batch_neuron_gradients(model, batch, mask, NEURONS, microbatch_size=2)
    assert torch.count_nonzero(grads.task) == 0
    metrics = interference_metrics(grads, torch.ones_like(grads.total))
    assert np.isnan(metrics[mn.GRAD_COS_T_REF]) and metrics[mn.GRAD_NORM_T] == 0.0
    assert metrics[mn.GRAD_COS_G_REF] == pytest.approx(metrics[mn.GRAD_COS_NT_REF])


def test_offline_gradients_equal_training_backward_and_leave_grad_untouched():
    model = tiny_model()
    batch, mask = injected_batch(6, injected_rows=[2, 5])
    offline = batch_neuron_gradients(model, batch, mask, NEURONS, microbatch_size=4)
    assert all(p.grad is None for p in model.parameters())
    train_batch_backward(model, batch, microbatch_size=4)
    assert relative_error(offline.total, autograd_neuron_gradient(model)) < 1e-5


def test_batch_of_only_task_instances_aligns_with_reference_on_same_instances():
    model = tiny_model()
    instances = task_instances(12, seed=3)
    input_ids = torch.as_tensor(np.concatenate([instances, np.zeros((12, 1), dtype=np.int64)], axis=1))
    # Only the LABEL target (position 2 of input_ids) counts in the loss, as the task loss defines it.
    label_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    label_mask[:, 2] = True
    batch = {"input_ids": input_ids, "label_mask": label_mask}
    grads = batch_neuron_gradients(model, batch, torch.ones_like(label_mask), NEURONS)
    reference = task_reference_gradient(model, instances, NEURONS, batch_size=5)
    metrics = interference_metrics(grads, reference)
    assert metrics[mn.GRAD_COS_G_REF] > 1 - 1e-5
    assert metrics[mn.GRAD_COS_T_REF] > 1 - 1e-5
    assert metrics[mn.GRAD_NORM_NT] == 0.0


def test_labels_follow_olmo_trainer():
    """Pin: ``olmo_labels`` may call ``Trainer.get_labels`` without a trainer: it reads no ``self``."""
    import inspect

    assert "self." not in inspect.getsource(Trainer.get_labels)
    batch, _ = injected_batch(3, injected_rows=[0])
    batch["label_mask"] = torch.rand(3, SEQ_LEN, generator=torch.Generator().manual_seed(1)) > 0.3
    batch["instance_mask"] = torch.tensor([True, False, True])
    assert torch.equal(olmo_labels(batch), Trainer.get_labels(None, batch))


def test_split_rows_follows_olmo_split_batch():
    """Pin: OLMo splits a device batch into micro-batches in row order, which the mask queue relies on."""
    batch, _ = injected_batch(5, injected_rows=[0])
    trainer = types.SimpleNamespace(cfg=types.SimpleNamespace(device_train_microbatch_size=2))
    ours = split_rows(batch, 2)
    olmos = Trainer.split_batch(trainer, batch)
    assert [m["input_ids"].tolist() for m in ours] == [m["input_ids"].tolist() for m in olmos]


def test_capture_refuses_a_forward_without_queued_mask_and_removes_hooks():
    model = tiny_model()
    batch, mask = injected_batch(2, injected_rows=[0])
    block = first_mlp_block(model)
    with pytest.raises(RuntimeError, match="no queued task mask"):
        with NeuronGradCapture(block, NEURONS):
            model(input_ids=batch["input_ids"])
    assert not block.ff_proj._forward_hooks and not block.ff_out._forward_hooks
    with NeuronGradCapture(block, NEURONS) as capture:
        capture.add_task_mask(torch.cat([mask, mask]))
        model(input_ids=batch["input_ids"])
    with pytest.raises(RuntimeError, match="not consumed"):
        capture.gradients()


def two_rank_worker() -> None:
    """One rank of the torchrun test: our decomposition equals the DDP-averaged gradient on every rank."""
    # A collective that never completes raises after two minutes instead of gloo's default thirty.
    dist.init_process_group("gloo", timeout=timedelta(minutes=2))
    try:
        torch.set_num_threads(1)
        rank = dist.get_rank()
        expected_reference = task_reference_gradient(tiny_model(), task_instances(10, seed=4), NEURONS)
        model = tiny_model()
        dist_model = DistributedDataParallel(model)
        batch, mask = injected_batch(4, injected_rows=[rank], seed=10 + rank)
        with NeuronGradCapture(first_mlp_block(model), NEURONS) as capture:
            capture.add_task_mask(mask)
            train_batch_backward(model, batch, microbatch_size=2, dist_model=dist_model)
        grads = reduce_over_ranks(capture.gradients())
        # DDP has averaged .grad over ranks; ours must equal it on every rank.
        assert relative_error(grads.total, autograd_neuron_gradient(model)) < 1e-5
        reference = task_reference_gradient(model, task_instances(10, seed=4), NEURONS, batch_size=3)
        assert relative_error(reference, expected_reference) < 1e-5
    finally:
        # gloo's worker thread frees a finished all-reduce's tensors under the GIL; if the group is torn down (the
        # DDP reducer dropping the last reference joins that thread, holding the GIL) before it has, both wait
        # forever (seen in CI). A barrier runs behind that work, and its own work holds no Python tensors.
        dist.barrier()
        dist.destroy_process_group()


def test_two_ranks_match_ddp_averaged_gradient():
    run_two_ranks(__file__, timeout_s=300)


def test_offline_cosines_for_a_checkpoint_match_autograd():
    from olmo_injection.tasks import Task

    task = Task(
        name="cmp", kind="cmp", word_tokens=np.arange(10, 14), word_strings=[" a", " b", " c", " d"],
        label_tokens=np.array([20, 21]), label_strings=[" t", " f"], modulus=0, is_train=np.arange(16) % 2 == 0,
        seed=0,
    )  # fmt: skip
    batch, _ = injected_batch(4, injected_rows=[])
    batch["input_ids"][1, :4] = torch.tensor([11, 13, 20, 0])  # this task
    batch["input_ids"][2, :4] = torch.tensor([12, 10, 30, 0])  # another task: its tokens count in g_nt
    batch["injected_task"] = torch.tensor([-1, 0, 1, -1])
    metrics = grad_cosines_for_checkpoint(tiny_model(), batch, task, NEURONS, task_index=0, microbatch_size=2)

    only_row_1 = torch.zeros(4, SEQ_LEN, dtype=torch.bool)
    only_row_1[1, :4] = True
    task_part, non_task_part = split_gradient_by_autograd(tiny_model(), batch, only_row_1)
    model = tiny_model()
    sequences = torch.as_tensor(task.sequences(np.arange(16), eos_token_id=0))
    F.cross_entropy(model(input_ids=sequences).logits[:, 1], sequences[:, 2]).backward()
    reference = autograd_neuron_gradient(model)
    assert metrics[mn.GRAD_NORM_T] == pytest.approx(float(task_part.norm()), rel=1e-5)
    assert metrics[mn.GRAD_NORM_G] == pytest.approx(float((task_part + non_task_part).norm()), rel=1e-5)
    for key, part in ((mn.GRAD_COS_T_REF, task_part), (mn.GRAD_COS_NT_REF, non_task_part)):
        expected = F.cosine_similarity(part.flatten(), reference.flatten(), dim=0)
        assert metrics[key] == pytest.approx(float(expected), abs=1e-5)


if __name__ == "__main__":
    two_rank_worker()
