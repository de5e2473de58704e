"""Theory functions against brute-force eigendecomposition and hand-worked small cases."""

import numpy as np
import pytest

from olmo_injection.synthetic.config import MixtureConfig
from olmo_injection.synthetic.mixture import task_prior, task_spectra
from olmo_injection.synthetic.theory import (OneNeuronToy, critical_width, frequent_eigenvalues, frequent_set,
                                             min_width_for_features, optimal_frequent_residual,
                                             predicted_normalised_loss, predicted_task_loss, prop6_critical_width,
                                             residual_gradient_bound, retained_features, utilities)


def mixture_matrix(prior, spectra, tasks=None):
    """M = sum_k pi_k C_k built densely, C_k = B_k Lambda_k B_k^T on block k."""
    num_tasks, block = spectra.shape
    diagonal = np.zeros(num_tasks * block)
    for k in (range(num_tasks) if tasks is None else tasks):
        diagonal[k * block:(k + 1) * block] = prior[k] * spectra[k]
    return np.diag(diagonal)


# No two utilities tie for these exponents, so the top-N eigenspace is unique.
UNTIED = MixtureConfig(num_tasks=5, block_dim=4, prior_exponent=1.3, spectrum_exponent=0.7)


def test_utilities_are_the_eigenvalues_of_the_mixture_covariance():
    prior, spectra = task_prior(UNTIED), task_spectra(UNTIED)
    eigenvalues = np.linalg.eigvalsh(mixture_matrix(prior, spectra))
    np.testing.assert_allclose(np.sort(utilities(prior, spectra).ravel()), np.sort(eigenvalues), rtol=1e-12)


@pytest.mark.parametrize("width", [1, 3, 7, 12, 19, 20])
def test_theorem3_per_task_loss_matches_the_brute_force_optimum(width):
    prior, spectra = task_prior(UNTIED), task_spectra(UNTIED)
    _, vectors = np.linalg.eigh(mixture_matrix(prior, spectra))
    top = vectors[:, ::-1][:, :width]                       # top-N eigenspace of M
    projector = top @ top.T
    block = UNTIED.block_dim
    brute = []
    for k in range(UNTIED.num_tasks):
        c_k = np.zeros((20, 20))
        c_k[k * block:(k + 1) * block, k * block:(k + 1) * block] = np.diag(spectra[k])
        brute.append(np.trace(c_k) - np.trace(projector @ c_k))  # loss with the optimal decoder
    retained = retained_features(utilities(prior, spectra), [width])
    np.testing.assert_allclose(predicted_task_loss(spectra, retained)[0], brute, atol=1e-12)
    assert retained.sum() == width


def test_hand_worked_two_tasks():
    # K = 2, m = 2, beta = 0 (pi = 1/2 each), alpha = 1, lambda = (1, 1/2): utilities (1/2, 1/4) for both tasks.
    config = MixtureConfig(num_tasks=2, block_dim=2, prior_exponent=0.0, spectrum_exponent=1.0,
                           spectrum_normalisation="leading")
    prior, spectra = task_prior(config), task_spectra(config)
    utility = utilities(prior, spectra)
    np.testing.assert_allclose(utility, [[0.5, 0.25], [0.5, 0.25]])
    retained = retained_features(utility, [1, 2, 3, 4])
    np.testing.assert_array_equal(retained, [[1, 0], [1, 1], [2, 1], [2, 2]])  # ties go to the frequent task
    np.testing.assert_allclose(predicted_task_loss(spectra, retained), [[0.5, 1.5], [0.5, 0.5], [0, 0.5], [0, 0]])
    np.testing.assert_allclose(predicted_normalised_loss(spectra, retained)[2], [0, 1 / 3])
    np.testing.assert_array_equal(critical_width(utility), [1, 2])
    assert min_width_for_features(utility, 1) == 2 and min_width_for_features(utility, 2) == 4
    with pytest.raises(ValueError, match="features_per_task"):
        min_width_for_features(utility, 3)


def test_exactly_equal_utilities_tie_despite_rounding():
    # beta = 1.5, alpha = 1: pi_1 lambda_{1,8} = pi_4 lambda_{4,1} exactly; the frequent task must win the tie.
    config = MixtureConfig(num_tasks=4, block_dim=8, prior_exponent=1.5, spectrum_exponent=1.0)
    utility = utilities(task_prior(config), task_spectra(config))
    assert utility[0, 7] == pytest.approx(utility[3, 0], rel=1e-12)
    order_width = min_width_for_features(utility, 8)  # needs task 1's 8th feature, which beats task 4's 1st
    retained = retained_features(utility, [order_width])[0]
    assert retained[0] == 8


def test_critical_width_of_rank_one_tasks_is_the_task_index():
    config = MixtureConfig(num_tasks=12, block_dim=1, prior_exponent=1.5)
    utility = utilities(task_prior(config), task_spectra(config))
    np.testing.assert_array_equal(critical_width(utility), np.arange(1, 13))


def test_frequent_set_is_the_smallest_top_prior_set_reaching_the_mass():
    prior = np.array([0.5, 0.3, 0.2])
    np.testing.assert_array_equal(frequent_set(prior, 0.8), [0, 1])
    np.testing.assert_array_equal(frequent_set(prior, 0.81), [0, 1, 2])
    np.testing.assert_array_equal(frequent_set(prior, 0.4), [0])
    # The paper's count for beta = 1.5, K = 32 at 0.9 of the mass.
    assert frequent_set(task_prior(MixtureConfig()), 0.9).size == 12


def test_prop6_critical_width_and_optimal_residual_by_hand():
    utility = np.array([[0.4, 0.2], [0.3, 0.1], [0.05, 0.01]])
    frequent = np.array([0, 1])
    np.testing.assert_allclose(frequent_eigenvalues(utility, frequent), [0.4, 0.3, 0.2, 0.1])
    assert prop6_critical_width(utility, frequent, 0.05) == 5   # below every frequent utility
    assert prop6_critical_width(utility, frequent, 0.25) == 3   # mu_3 = 0.2 <= 0.25
    np.testing.assert_allclose(optimal_frequent_residual(utility, frequent, [0, 1, 2, 4, 9]), [1.0, 0.6, 0.3, 0, 0])
    np.testing.assert_allclose(residual_gradient_bound(0.4, np.array([0.1])), [2 * np.sqrt(0.04)])


def test_one_neuron_gap_decay_matches_simulation_near_the_common_solution():
    toy = OneNeuronToy(common_strength=1.0, rare_strength=0.5, learning_rate=0.01)
    alignment = toy.simulate(theta0=1e-3, gap=30, observations=3)
    after_rare, before_next = alignment[1], alignment[31]
    assert before_next / after_rare == pytest.approx(toy.gap_decay_factor(30), rel=1e-4)
    assert toy.mean_drift(0.3, rare_probability=0.1) < 0      # common utility wins: towards theta = 0
    assert toy.mean_drift(0.3, rare_probability=0.9) > 0      # rare utility wins: away from the common task
