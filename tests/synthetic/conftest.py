"""Fixtures of the synthetic module's tests: tiny mixtures that train in well under a second."""

import pytest
import torch

from olmo_injection.synthetic.config import MixtureConfig, SyntheticConfig, TrainingConfig


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_config() -> SyntheticConfig:
    """K = 4 tasks of block 3 (d = 12), three widths, float64, a few steps."""
    return SyntheticConfig(
        mixture=MixtureConfig(num_tasks=4, block_dim=3, prior_exponent=1.3, spectrum_exponent=0.7),
        training=TrainingConfig(widths=(2, 5, 9), steps=25, batch_size=16, learning_rate=0.01, warmup_steps=5,
                                grad_clip=0.05, eval_every=10, dtype="float64", device="cpu", seed=3),
    ).validate()
