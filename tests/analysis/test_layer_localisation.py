"""MLP ablations and task neurons on a model whose task lives, by construction, in block 1's MLP."""

from __future__ import annotations

import pytest
import torch
from olmo.model import OLMo

from analysis.layer_localisation import LocalisationConfig, mlp_ablation, task_neuron_gradients, task_neurons
from analysis.task_prompts import label_position_logits, prompt_ids

from planted_analysis_models import planted_order_model, synthetic_task, tiny_model_config


@pytest.fixture(scope="module")
def planted():
    task = synthetic_task("cmp", 16)
    model, _ = planted_order_model(task)
    return task, model


def test_label_position_logits_match_the_full_forward():
    torch.manual_seed(0)
    model = OLMo(tiny_model_config()).eval()
    ids = torch.randint(0, 120, (4, 2))
    with torch.no_grad():
        torch.testing.assert_close(label_position_logits(model, ids), model(ids).logits[:, 1])


def test_ablation_hits_the_layer_that_computes_the_task(planted):
    task, model = planted
    result = mlp_ablation(model, task, LocalisationConfig())
    assert result["clean_loss"] < 0.1
    # Block 0's MLP output is zero by construction (zero ablation changes nothing); block 1 holds the task.
    assert result["zero_loss_increase"][0] == pytest.approx(0.0, abs=1e-5)
    assert result["zero_loss_increase"][1] > 0.5


def test_task_neurons_are_the_largest_gradient_neurons():
    torch.manual_seed(0)
    model = OLMo(tiny_model_config()).eval()
    task = synthetic_task("cmp", 8)
    cfg = LocalisationConfig(num_task_neurons=5)
    gradients = task_neuron_gradients(model, task, cfg)
    # Brute force: neuron 3's value row is row 3 of ff_proj's gradient (docs/olmo_0_6_0.md#model, SwiGLU layout).
    model.zero_grad()
    loss = torch.nn.functional.cross_entropy(label_position_logits(model, prompt_ids(task, range(64))),
                                             torch.as_tensor(task.instances[:, 2]))
    loss.backward()
    torch.testing.assert_close(gradients[3, 0], model.transformer.blocks[0].ff_proj.weight.grad[3])
    torch.testing.assert_close(gradients[3, 2], model.transformer.blocks[0].ff_out.weight.grad[:, 3])
    chosen = task_neurons(model, task, cfg)
    norms = gradients.flatten(1).norm(dim=1)
    assert chosen.neurons == torch.argsort(norms, descending=True)[:5].tolist()
    with pytest.raises(ValueError, match="num_task_neurons"):
        task_neurons(model, task, LocalisationConfig(num_task_neurons=10_000))
