"""Which parameters make up a first-block SwiGLU neuron (pinned against OLMo's model), and top-K selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from olmo.config import ModelConfig
from olmo.model import OLMo

from olmo_injection.grad_decomposition import select_task_neurons
from olmo_injection.neurons import (
    TaskNeurons,
    first_mlp_block,
    ff_proj_rows,
    load_task_neurons,
    neuron_slices,
    num_neurons,
    save_task_neurons,
    top_neurons,
)

VOCAB = 64


def tiny_model(seed: int = 0, **overrides) -> OLMo:
    torch.manual_seed(seed)
    settings = dict(
        d_model=16, n_heads=2, n_layers=2, mlp_hidden_size=32, activation_type="swiglu", vocab_size=VOCAB,
        embedding_size=VOCAB, include_bias=False, layer_norm_with_affine=False, rope=True, weight_tying=False,
        max_sequence_length=8, eos_token_id=0, pad_token_id=1, init_device="cpu",
        attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0,
    )  # fmt: skip
    settings.update(overrides)
    return OLMo(ModelConfig(**settings))


def test_neuron_owns_value_row_gate_row_and_output_column():
    """Pin OLMo's SwiGLU layout: act[..., i] = silu(x @ W[n + i]) * (x @ W[i]); ff_out column i reads act[..., i]."""
    model = tiny_model()
    block = first_mlp_block(model)
    n = num_neurons(block)
    assert n == 16 and block.ff_proj.weight.shape == (2 * n, 16) and block.ff_out.weight.shape == (16, n)
    seen = {}
    handles = [
        block.ff_proj.register_forward_hook(lambda m, i, o: seen.update(x=i[0])),
        block.act.register_forward_hook(lambda m, i, o: seen.update(act=o)),
        block.ff_out.register_forward_hook(lambda m, i, o: seen.update(out=o)),
    ]
    model(input_ids=torch.randint(0, VOCAB, (2, 5)))
    for handle in handles:
        handle.remove()
    weight = block.ff_proj.weight
    for i in (0, 7, n - 1):
        expected = F.silu(seen["x"] @ weight[n + i]) * (seen["x"] @ weight[i])
        torch.testing.assert_close(seen["act"][..., i], expected)
    expected_out = sum(seen["act"][..., i, None] * block.ff_out.weight[:, i] for i in range(n))
    torch.testing.assert_close(seen["out"], expected_out)


def test_neuron_slices_and_rows():
    ff_proj = torch.arange(8 * 3).reshape(8, 3).float()  # n = 4 neurons, d_model = 3
    ff_out = torch.arange(3 * 4).reshape(3, 4).float() + 100
    assert ff_proj_rows(torch.tensor([2, 0]), 4).tolist() == [2, 0, 6, 4]
    slices = neuron_slices(ff_proj, ff_out, torch.tensor([2, 0]))
    assert slices.shape == (2, 3, 3)
    assert slices[0].tolist() == [ff_proj[2].tolist(), ff_proj[6].tolist(), ff_out[:, 2].tolist()]
    assert slices[1].tolist() == [ff_proj[0].tolist(), ff_proj[4].tolist(), ff_out[:, 0].tolist()]


def test_first_mlp_block_with_block_groups_and_non_swiglu():
    grouped = tiny_model(block_group_size=2)
    assert first_mlp_block(grouped) is grouped.transformer.block_groups[0][0]
    with pytest.raises(ValueError, match="activation_type='gelu'"):
        first_mlp_block(tiny_model(activation_type="gelu", mlp_hidden_size=16))


def test_top_neurons_orders_by_norm_then_id():
    gradients = torch.zeros(5, 3, 2)
    gradients[3, 0, 0] = 2.0
    gradients[1, 2, 1] = -1.0
    gradients[4, 1, 0] = 1.0  # ties with neuron 1: the lower id comes first
    assert top_neurons(gradients, 3).tolist() == [3, 1, 4]
    with pytest.raises(ValueError, match=r"num_task_neurons=6: must be in \[1, 5\]"):
        top_neurons(gradients, 6)


def test_check_neurons_rejects_bad_ids():
    model = tiny_model()
    with pytest.raises(ValueError, match="must be in"):
        neuron_slices(first_mlp_block(model).ff_proj.weight, first_mlp_block(model).ff_out.weight, torch.tensor([16]))
    with pytest.raises(ValueError, match="distinct"):
        neuron_slices(first_mlp_block(model).ff_proj.weight, first_mlp_block(model).ff_out.weight, torch.tensor([1, 1]))


def test_selection_matches_brute_force_backward_over_all_instances():
    model = tiny_model(seed=2)
    rng = np.random.default_rng(0)
    words = rng.choice(np.arange(10, 20), size=(30, 2))
    instances = np.concatenate([words, np.where(words[:, :1] < words[:, 1:], 30, 31)], axis=1)
    ids, norms, reference = select_task_neurons(model, instances, 5, batch_size=7)

    # Brute force: full sequences through an ordinary backward, LABEL loss only, per-neuron norms by loop.
    inputs = torch.as_tensor(np.concatenate([instances, np.zeros((30, 1), dtype=np.int64)], axis=1))
    logits = model(input_ids=inputs).logits
    F.cross_entropy(logits[:, 1], inputs[:, 2]).backward()
    block = first_mlp_block(model)
    n = num_neurons(block)
    wp, wo = block.ff_proj.weight.grad, block.ff_out.weight.grad
    brute = [float(torch.cat([wp[i], wp[n + i], wo[:, i]]).norm()) for i in range(n)]
    expected = sorted(range(n), key=lambda i: -brute[i])[:5]
    assert ids.tolist() == expected
    np.testing.assert_allclose(norms.numpy(), [brute[i] for i in expected], rtol=1e-5)
    torch.testing.assert_close(reference, neuron_slices(wp, wo, ids), rtol=1e-5, atol=1e-8)


def test_task_neurons_file_round_trip(tmp_path):
    chosen = TaskNeurons(task="cmp", neurons=[3, 1], gradient_norms=[0.5, 0.25], num_neurons_in_block=16,
                         selected_at_step=7, source="runs/x")  # fmt: skip
    path = tmp_path / "task_neurons" / "cmp.json"
    save_task_neurons(chosen, path)
    assert load_task_neurons(path) == chosen
    assert load_task_neurons(path).ids().tolist() == [3, 1]
    path.write_text(path.read_text().replace('"version": 1', '"version": 9'))
    with pytest.raises(ValueError, match="version 9"):
        load_task_neurons(path)
