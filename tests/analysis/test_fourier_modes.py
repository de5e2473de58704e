"""Fourier modes: planted frequencies are detected (Nyquist included for even P), noise gives none."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from olmo.model import OLMo

from analysis.fourier_modes import FourierConfig, fourier_basis, fourier_modes, detected_modes, uniform_shares

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


def test_counts_over_layers_of_a_model():
    task = synthetic_task("add", 16)
    torch.manual_seed(0)
    result = fourier_modes(OLMo(tiny_model_config()).eval(), task, FourierConfig())
    assert set(result["per_residual"]) == {"1", "2"}
    assert result["total_modes"] == sum(len(v["modes"]) for v in result["per_residual"].values())
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
