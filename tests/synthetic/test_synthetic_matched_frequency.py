import numpy as np
import pytest
import torch

from olmo_injection.synthetic.matched_frequency import (injected_rare_rows, is_injection_step,
                                                        matched_frequency_sampler, realised_rare_frequency)


def test_long_run_rare_frequency_matches_the_prior_and_rare_rows_come_only_at_injections():
    prior = np.array([0.6, 0.3, 0.1])
    sampler = matched_frequency_sampler(prior, batch_size=20, rare_task=2, gap=5)
    generator = torch.Generator().manual_seed(0)
    rare, total = 0, 0
    for step in range(1, 501):
        tasks = sampler(step, generator)
        rare_here = int((tasks == 2).sum())
        assert (rare_here > 0) == is_injection_step(step, 5)
        rare, total = rare + rare_here, total + len(tasks)
    rows = injected_rare_rows(0.1, 20, 5)
    assert rows == 11                                       # round(0.1 * 5 * 20 / 0.9) = round(11.1)
    assert rare / total == pytest.approx(realised_rare_frequency(rows, 20, 5))
    assert realised_rare_frequency(rows, 20, 5) == pytest.approx(0.1, abs=0.005)


def test_a_gap_too_short_for_one_rare_row_is_refused():
    with pytest.raises(ValueError, match="gap = 1"):
        injected_rare_rows(0.0024, batch_size=64, gap=1)
