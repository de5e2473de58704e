"""Signal metrics: random baseline, gauge invariance, exact population loss, Theorem 4."""

import numpy as np
import pytest
import torch

from olmo_injection.synthetic.metrics import (corrected_signal, frequent_gradient_norm, frequent_residual,
                                              projector_diagonal, row_space_basis, task_losses, task_signal)
from olmo_injection.synthetic.student import init_width

NUM_TASKS, BLOCK = 4, 3
D = NUM_TASKS * BLOCK
SPECTRA = torch.tensor([[1.0, 0.5, 0.25], [0.8, 0.4, 0.1], [0.3, 0.3, 0.3], [2.0, 0.1, 0.05]], dtype=torch.float64)


def random_encoder(width, seed):
    return torch.randn(width, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def signal_of(encoder):
    return task_signal(projector_diagonal(row_space_basis(encoder)), SPECTRA)


@pytest.mark.parametrize("width", [2, 5, 9])
def test_signal_of_a_random_subspace_averages_n_over_d(width):
    samples = torch.stack([signal_of(random_encoder(width, seed)) for seed in range(600)])
    np.testing.assert_allclose(samples.mean(dim=0).numpy(), width / D, atol=0.02)
    corrected = torch.stack([corrected_signal(s, width, D) for s in samples]).mean(dim=0)
    np.testing.assert_allclose(corrected.numpy(), 0.0, atol=0.04)


def test_signal_is_gauge_invariant_and_loss_invariant_with_the_inverse_gauge_on_decoders():
    encoder = random_encoder(5, 0)
    gauge = torch.randn(5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 3 * torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(signal_of(gauge @ encoder), signal_of(encoder))
    decoders = torch.randn(NUM_TASKS, BLOCK, 5, dtype=torch.float64)
    torch.testing.assert_close(task_losses(gauge @ encoder, decoders @ torch.linalg.inv(gauge), SPECTRA),
                               task_losses(encoder, decoders, SPECTRA))


def test_full_capture_and_rank_deficient_encoders():
    block_one = torch.zeros(3, D, dtype=torch.float64)
    block_one[:, 3:6] = torch.eye(3)                      # spans exactly task 2's block
    signal = signal_of(block_one)
    torch.testing.assert_close(signal, torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64))
    assert corrected_signal(signal, 3, D)[1] == pytest.approx(1.0)
    repeated = torch.cat([block_one, block_one[:1]])      # a duplicated row: rank 3, not 4
    torch.testing.assert_close(signal_of(repeated), signal)


def test_corrected_signal_is_undefined_at_full_width():
    # N = d: every subspace is the whole space, s_k = 1 for any encoder, so s~ carries no information.
    assert torch.isnan(corrected_signal(signal_of(random_encoder(D, 0)), D, D)).all()


def test_population_loss_is_the_expectation_of_the_probe_loss():
    encoder, decoders = init_width(6, D, NUM_TASKS, BLOCK, seed=4, dtype=torch.float64)
    exact = task_losses(encoder, decoders, SPECTRA)
    x = torch.randn(200_000, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for k in range(NUM_TASKS):
        target = x[:, k * BLOCK:(k + 1) * BLOCK] * SPECTRA[k].sqrt()
        probe = (x @ encoder.T @ decoders[k].T - target).pow(2).sum(dim=1).mean()
        assert probe.item() == pytest.approx(exact[k].item(), rel=0.02)


def test_optimal_decoder_loss_is_trace_times_one_minus_signal():
    encoder = random_encoder(5, 2)
    optimal = torch.stack([torch.diag_embed(SPECTRA[k].sqrt()) @ encoder[:, k * BLOCK:(k + 1) * BLOCK].T
                           @ torch.linalg.inv(encoder @ encoder.T) for k in range(NUM_TASKS)])
    torch.testing.assert_close(task_losses(encoder, optimal, SPECTRA), SPECTRA.sum(dim=1) * (1 - signal_of(encoder)))


def test_theorem4_bound_holds_and_both_vanish_on_the_frequent_eigenspace():
    weights = (torch.tensor([0.5, 0.3, 0.0, 0.0])[:, None] * SPECTRA).reshape(-1)
    for seed in range(20):
        basis = row_space_basis(random_encoder(4, seed))
        residual = frequent_residual(projector_diagonal(basis), weights)
        assert frequent_gradient_norm(basis, weights) <= 2 * torch.sqrt(weights.max() * residual) + 1e-12
    support = torch.eye(D, dtype=torch.float64)[:, weights > 0]   # spans every frequent direction
    assert frequent_residual(projector_diagonal(support), weights) == pytest.approx(0.0, abs=1e-12)
    assert frequent_gradient_norm(support, weights) == pytest.approx(0.0, abs=1e-12)
