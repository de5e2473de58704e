"""The PCA order probe: R^2 near 1 when the value is linear in the residual, near 0 (or below) for noise; its
component count capped by the width and the values, and a shuffled-value null beside each R^2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.feature_presence import (
    FeaturePresenceConfig,
    component_cap,
    feature_presence,
    pca_probe_r2,
    pca_probe_r2s,
)

from planted_analysis_models import planted_order_model, synthetic_task


def _planted(rng, noise_only: bool):
    values = rng.integers(0, 100, size=2000)
    features = rng.normal(size=(2000, 64))
    if not noise_only:
        features[:, 5] += values / 3.0  # value along one direction (std ~10) beside 63 unit-noise dimensions
    return features, values


def test_planted_linear_value_gives_r2_near_one():
    features, values = _planted(np.random.default_rng(0), noise_only=False)
    assert pca_probe_r2(features, values, values, num_components=50, num_folds=5, seed=0) > 0.9


def test_noise_gives_r2_near_zero():
    features, values = _planted(np.random.default_rng(0), noise_only=True)
    assert pca_probe_r2(features, values, values, num_components=50, num_folds=5, seed=0) < 0.1


def test_token_identity_without_order_is_not_rewarded():
    """One random vector per value (a lookup table, no order): held-out values cannot be predicted."""
    rng = np.random.default_rng(0)
    table = rng.normal(size=(100, 64))
    values = rng.integers(0, 100, size=2000)
    features = table[values] + 0.01 * rng.normal(size=(2000, 64))
    assert pca_probe_r2(features, values, values, num_components=50, num_folds=5, seed=0) < 0.2


def test_many_targets_at_once_equal_one_at_a_time():
    features, values = _planted(np.random.default_rng(0), noise_only=False)
    shuffled = np.random.default_rng(1).permutation(100)[values]
    both = pca_probe_r2s(features, np.column_stack([values, shuffled]), values, 20, 5, 0)
    np.testing.assert_allclose(both, [pca_probe_r2(features, t, values, 20, 5, 0) for t in (values, shuffled)])


def test_component_cap_follows_width_and_values():
    cfg = FeaturePresenceConfig()  # 5 folds, 5 values per component
    assert component_cap(64, 100, cfg) == 16  # a training fold holds 80 values
    assert component_cap(4, 100, cfg) == 4  # the width
    assert component_cap(64, 16, cfg) == 2  # 12 values
    assert component_cap(64, 8, cfg) == 1  # 6 values
    with pytest.raises(ValueError, match="holds 4 of the task's 5 values"):
        component_cap(64, 5, cfg)
    with pytest.raises(ValueError, match="3 values have only 6 relabellings"):
        component_cap(64, 3, FeaturePresenceConfig(num_folds=2, values_per_component=1))


def test_on_the_planted_model_at_the_embedding():
    task = synthetic_task("cmp", 32)
    model, _ = planted_order_model(task, steps=1)
    cfg = FeaturePresenceConfig(residual=1, num_components=8, max_instances=1024)
    result = feature_presence(model, task, cfg)
    assert result["r2"]["tok1"] > 0.99  # residual 1 = embedding exactly (block 0 adds nothing)
    assert result["num_components_used"] == result["component_cap"] == 5  # 25 training values // 5
    assert result["null_r2"]["tok1"]["q95"] < 0.5  # relabelled values are not linear along the planted direction
    with pytest.raises(ValueError, match="num_components"):
        FeaturePresenceConfig(num_components=0).validate()
    with pytest.raises(ValueError, match="'cmp'"):
        feature_presence(model, synthetic_task("add", 8), cfg)
