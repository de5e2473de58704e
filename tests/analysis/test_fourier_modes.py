"""Fourier modes: planted frequencies are detected (Nyquist included for even P), noise gives none, and the
value-relabelling null rejects the Fourier structure a network that computes nothing already has."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from olmo.model import OLMo

from analysis.fourier_modes import (
    FourierConfig,
    class_means,
    detected_modes,
    fourier_basis,
    fourier_modes,
    modes_against_null,
    relabelling_null,
    uniform_shares,
)

from planted_analysis_models import synthetic_task, tiny_model_config


def test_basis_is_orthonormal_and_counts_nyquist_once():
    basis, freqs = fourier_basis(100)
    assert basis.shape == (99, 100)
    np.testing.assert_allclose(basis @ basis.T, np.eye(99), atol=1e-10)
    np.testing.assert_allclose(basis.sum(axis=1), 0, atol=1e-9)  # orthogonal to the constant
    assert (freqs == 50).sum() == 1 and (freqs == 1).sum() == 2
    assert uniform_shares(100).sum() == pytest.approx(1.0)


def test_planted_frequencies_are_detected():
    rng = np.random.default_rng(0)
    c = np.arange(100)
    means = 0.05 * rng.normal(size=(100, 64)) + 3.0  # offset: row-centring must remove it
    for k, column in ((3, 0), (17, 1), (50, 2)):
        means[:, column] += np.cos(2 * np.pi * k * c / 100 + 0.3 * column)
    np.testing.assert_array_equal(detected_modes(means, tau=3.0), [3, 17, 50])


def test_noise_has_no_modes():
    rng = np.random.default_rng(0)
    assert detected_modes(rng.normal(size=(100, 192)), tau=3.0).size == 0


def _grid_features(num_values: int, column_of_a_and_b, seed: int = 0):
    a, b = np.divmod(np.arange(num_values**2), num_values)
    return column_of_a_and_b(a, b, np.random.default_rng(seed)), np.stack([a, b], axis=1)


def _against_null(features, values, modulus, cfg=FourierConfig()):
    null = relabelling_null({"x": features}, values, lambda a, b: (a + b) % modulus, modulus, cfg.null_permutations,
                            np.random.default_rng(1))
    return modes_against_null(class_means(features, values.sum(axis=1) % modulus, modulus), null["x"], cfg)


def test_random_products_fool_tau_but_not_the_relabelling_null():
    """A random network's second-order term e(a) * e(b): its class means over (a + b) mod P are a convolution of
    the random embedding table with itself, so some frequencies stand out by chance."""
    features, values = _grid_features(100, lambda a, b, rng: (lambda e: e[a] * e[b])(rng.normal(size=(100, 8))))
    result = _against_null(features, values, 100)
    assert result["modes_tau"] and result["modes"] == []
    assert result["null_threshold_ratio"] > 3.0  # the null's tail is what tau = 3 ignores


def test_a_planted_frequency_stands_out_of_the_null():
    def planted(a, b, rng):
        x = rng.normal(size=(len(a), 16))
        x[:, 0] += 3 * np.cos(2 * np.pi * 7 * (a + b) / 100)
        return x

    features, values = _grid_features(100, planted)
    assert _against_null(features, values, 100)["modes"] == [7]


def test_a_null_the_task_cannot_support_is_refused():
    torch.manual_seed(0)
    model = OLMo(tiny_model_config()).eval()
    with pytest.raises(ValueError, match="4 values have only 24 relabellings"):
        fourier_modes(model, synthetic_task("add", 4), FourierConfig())
    with pytest.raises(ValueError, match="null_permutations=50"):
        FourierConfig(null_permutations=50).validate()  # the 0.99 quantile needs 100


def test_counts_over_layers_of_a_model():
    task = synthetic_task("add", 16)
    torch.manual_seed(0)
    result = fourier_modes(OLMo(tiny_model_config()).eval(), task, FourierConfig())
    assert set(result["per_residual"]) == {"1", "2"}
    assert result["total_modes"] == sum(len(v["modes"]) for v in result["per_residual"].values())
    assert result["total_modes_tau"] == sum(len(v["modes_tau"]) for v in result["per_residual"].values())
    assert all(len(v["shares"]) == 8 for v in result["per_residual"].values())
    with pytest.raises(ValueError, match="tau"):
        FourierConfig(tau=0).validate()


def test_residual_streams_match_olmo_forward_hidden_states():
    from analysis.residual_stream import residual_streams

    torch.manual_seed(0)
    model = OLMo(tiny_model_config()).eval()
    ids = torch.randint(0, 120, (5, 6))
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states  # input of every block, then ln_f output
    residuals = residual_streams(model, ids, [0, 1, 5], batch_size=2)
    assert residuals.shape == (3, 5, 3, 32)
    for layer in range(2):
        torch.testing.assert_close(residuals[layer], hidden[layer][:, [0, 1, 5]])
