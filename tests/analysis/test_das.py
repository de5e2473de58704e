"""DAS with real pyvene finds a planted 1-D order encoding and finds nothing in a random model; its pairs are
balanced (chance 0.5) and every IIA comes with the baselines it must beat."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from olmo.model import OLMo

from analysis.das import (
    DasConfig,
    counterfactual_label_logits,
    base_answer_baseline,
    counterfactual_pairs,
    das_at,
    das_sweep,
    label_head,
    load_direction,
    rotated_intervenable,
    save_direction,
    site_representations,
    source_value_baseline,
)
from analysis.hf_conversion import convert_to_hf
from analysis.task_prompts import cmp_label_index, prompt_ids

from planted_analysis_models import planted_order_model, synthetic_task, tiny_model_config

FAST = dict(num_train_pairs=512, num_eval_pairs=256, epochs=4, batch_size=64, learning_rate=1e-2)


@pytest.fixture(scope="module")
def cmp_task():
    return synthetic_task("cmp", 32)


@pytest.mark.parametrize("balanced", [True, False], ids=["balanced", "flip_only"])
def test_counterfactual_labels_follow_the_swapped_value(cmp_task, balanced):
    rng = np.random.default_rng(0)
    for variable, column in (("tok1", 0), ("tok2", 1)):
        bases, sources, labels = counterfactual_pairs(cmp_task, variable, cmp_task.train_ids, 200, rng, balanced)
        assert len(labels) == 200
        assert np.isin(bases, cmp_task.train_ids).all() and np.isin(sources, cmp_task.train_ids).all()
        cf = cmp_task.values[bases].copy()
        cf[:, column] = cmp_task.values[sources][:, column]
        np.testing.assert_array_equal(labels, cmp_label_index(cf[:, 0], cf[:, 1]))
        assert (cmp_task.values[bases][:, column] != cmp_task.values[sources][:, column]).all()  # a real swap
        flipped = labels != cmp_task.label_index[bases]
        assert flipped.mean() == (0.5 if balanced else 1.0)
        assert base_answer_baseline(cmp_task, (bases, sources, labels)) == (0.5 if balanced else 0.0)


def test_source_value_baseline_shows_how_much_the_source_value_alone_predicts():
    task = synthetic_task("cmp", 100)
    rng = np.random.default_rng(0)
    for balanced, expected in ((False, 0.9), (True, 0.8)):  # the caveat the baseline exists for
        train = counterfactual_pairs(task, "tok1", task.train_ids, 4000, rng, balanced)
        test = counterfactual_pairs(task, "tok1", task.test_ids, 2000, rng, balanced)
        assert source_value_baseline(task, "tok1", train, test) > expected
    shuffled = (*test[:2], rng.permutation(test[2]))
    assert abs(source_value_baseline(task, "tok1", train, shuffled) - 0.5) < 0.05


@pytest.mark.parametrize("component", ["block_output", "block_input"])
@pytest.mark.parametrize("layer, position", [(0, 0), (1, 1)])
def test_precomputed_sources_and_label_head_give_pyvenes_own_counterfactual_logits(cmp_task, component, layer, position):
    """das_at's two shortcuts (sources' site representations computed once, stopping at the site; a head holding
    only the label rows) must not change what pyvene computes from the source prompts with the full head."""
    torch.manual_seed(0)
    hf = convert_to_hf(OLMo(tiny_model_config()).eval())
    full_head = hf.lm_head
    intervenable = rotated_intervenable(hf, layer, component)
    base, source = prompt_ids(cmp_task, range(12)), prompt_ids(cmp_task, range(100, 112))
    locations = [[[position]] * len(base)]
    with torch.no_grad():
        unit_locations = {"sources->base": (locations, locations)}
        _, reference = intervenable({"input_ids": base}, [{"input_ids": source}], unit_locations)
        reference = reference.logits[:, -1, torch.as_tensor(cmp_task.label_tokens)]
        unintervened = hf(input_ids=base).logits[:, -1, torch.as_tensor(cmp_task.label_tokens)]
        with label_head(hf, cmp_task.label_tokens):
            representations = site_representations(hf, source, layer, component, position, batch_size=5)
            shortcut = counterfactual_label_logits(intervenable, base, representations, position)
    assert representations.shape == (12, 1, 32)
    torch.testing.assert_close(shortcut, reference, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(reference, unintervened, atol=1e-4)  # the intervention did something
    assert hf.lm_head is full_head


def test_planted_direction_is_found_with_iia_near_one(cmp_task, tmp_path):
    model, planted = planted_order_model(cmp_task)
    result = das_at(convert_to_hf(model), cmp_task, layer=0, position=0, variable="tok1", cfg=DasConfig(**FAST))
    assert result["iia"] >= 0.95 and result["iia"] > result["source_value_baseline"]
    assert result["exceeds_baselines"] and result["base_answer_baseline"] == 0.5 and result["pairs"] == "balanced"
    assert abs(float(torch.tensor(result["direction"]) @ planted)) > 0.8
    save_direction(result, tmp_path / "direction")
    loaded = load_direction(tmp_path / "direction.pt")
    assert torch.allclose(loaded["direction"], torch.tensor(result["direction"])) and loaded["iia"] == result["iia"]


def test_random_model_stays_near_chance(cmp_task):
    torch.manual_seed(1)
    random_model = convert_to_hf(OLMo(tiny_model_config()).eval())
    result = das_at(random_model, cmp_task, layer=0, position=0, variable="tok1", cfg=DasConfig(**FAST))
    assert result["iia"] < 0.75
    assert not result["exceeds_baselines"]  # flagged: no better than the source value alone


def test_sweep_skips_tok2_at_position_0_and_rejects_bad_input(cmp_task):
    torch.manual_seed(0)
    hf = convert_to_hf(OLMo(tiny_model_config()).eval())
    cfg = DasConfig(layers=[0, 1], num_train_pairs=32, num_eval_pairs=32, epochs=1, batch_size=32)
    sweep = das_sweep(hf, cmp_task, cfg, progress=False)
    sites = {(r["layer"], r["position"], r["variable"]) for r in sweep["results"]}
    assert sites == {(0, 0, "tok1"), (0, 1, "tok1"), (0, 1, "tok2"), (1, 0, "tok1"), (1, 1, "tok1"), (1, 1, "tok2")}
    with pytest.raises(ValueError, match="variables"):
        DasConfig(variables=["tok3"]).validate()
    with pytest.raises(ValueError, match="pairs='random'"):
        DasConfig(pairs="random").validate()
    with pytest.raises(ValueError, match="layers"):
        das_at(hf, cmp_task, 5, 0, "tok1", cfg)
