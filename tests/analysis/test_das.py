"""DAS with real pyvene finds a planted 1-D order encoding and finds nothing in a random model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from olmo.model import OLMo

from analysis.das import DasConfig, counterfactual_pairs, das_at, das_sweep, load_direction, save_direction
from analysis.hf_conversion import convert_to_hf
from analysis.task_prompts import cmp_label_index

from .planted_models import planted_order_model, synthetic_task, tiny_model_config

FAST = dict(num_train_pairs=512, num_eval_pairs=256, epochs=4, batch_size=64, learning_rate=1e-2)


@pytest.fixture(scope="module")
def cmp_task():
    return synthetic_task("cmp", 32)


def test_counterfactual_labels_follow_the_swapped_value(cmp_task):
    rng = np.random.default_rng(0)
    for variable, column in (("tok1", 0), ("tok2", 1)):
        bases, sources, labels = counterfactual_pairs(cmp_task, variable, cmp_task.train_ids, 200, rng)
        assert np.isin(bases, cmp_task.train_ids).all() and np.isin(sources, cmp_task.train_ids).all()
        cf = cmp_task.values[bases].copy()
        cf[:, column] = cmp_task.values[sources][:, column]
        np.testing.assert_array_equal(labels, cmp_label_index(cf[:, 0], cf[:, 1]))
        assert (labels != cmp_task.label_index[bases]).all()  # only pairs whose answer the swap changes


def test_planted_direction_is_found_with_iia_near_one(cmp_task, tmp_path):
    model, planted = planted_order_model(cmp_task)
    result = das_at(convert_to_hf(model), cmp_task, layer=0, position=0, variable="tok1", cfg=DasConfig(**FAST))
    assert result["iia"] >= 0.95
    assert abs(float(torch.tensor(result["direction"]) @ planted)) > 0.8
    save_direction(result, tmp_path / "direction")
    loaded = load_direction(tmp_path / "direction.pt")
    assert torch.allclose(loaded["direction"], torch.tensor(result["direction"])) and loaded["iia"] == result["iia"]


def test_random_model_stays_near_chance(cmp_task):
    torch.manual_seed(1)
    random_model = convert_to_hf(OLMo(tiny_model_config()).eval())
    result = das_at(random_model, cmp_task, layer=0, position=0, variable="tok1", cfg=DasConfig(**FAST))
    assert result["iia"] < 0.75


def test_sweep_skips_tok2_at_position_0_and_rejects_bad_input(cmp_task):
    torch.manual_seed(0)
    hf = convert_to_hf(OLMo(tiny_model_config()).eval())
    cfg = DasConfig(layers=[0, 1], num_train_pairs=32, num_eval_pairs=32, epochs=1, batch_size=32)
    sweep = das_sweep(hf, cmp_task, cfg, progress=False)
    sites = {(r["layer"], r["position"], r["variable"]) for r in sweep["results"]}
    assert sites == {(0, 0, "tok1"), (0, 1, "tok1"), (0, 1, "tok2"), (1, 0, "tok1"), (1, 1, "tok1"), (1, 1, "tok2")}
    with pytest.raises(ValueError, match="variables"):
        DasConfig(variables=["tok3"]).validate()
    with pytest.raises(ValueError, match="layers"):
        das_at(hf, cmp_task, 5, 0, "tok1", cfg)
