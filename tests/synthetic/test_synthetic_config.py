import pytest

from olmo_injection.synthetic.config import (DEFAULT_WIDTHS, MixtureConfig, SyntheticConfig, TrainingConfig,
                                             log_width_grid, with_overrides)


def test_defaults_follow_the_spec():
    config = SyntheticConfig().validate()
    assert (config.mixture.num_tasks, config.mixture.block_dim, config.mixture.ambient_dim) == (32, 16, 512)
    assert (config.mixture.prior_exponent, config.mixture.spectrum_exponent) == (1.5, 1.0)
    assert config.metrics.frequent_mass == 0.9
    assert DEFAULT_WIDTHS[0] == 4 and DEFAULT_WIDTHS[-1] == 512 and len(DEFAULT_WIDTHS) == 16


def test_log_grid_is_increasing_and_hits_the_ends():
    grid = log_width_grid(2, 100, 9)
    assert grid[0] == 2 and grid[-1] == 100 and list(grid) == sorted(set(grid))


@pytest.mark.parametrize("override, field", [
    ("training.widths=4,600", "training.widths"),          # wider than d = 512
    ("training.widths=8,4", "training.widths"),            # not increasing
    ("training.steps=0", "training.steps"),
    ("training.learning_rate=-1", "training.learning_rate"),
    ("training.dtype=float16", "training.dtype"),
    ("training.grad_clip=0", "training.grad_clip"),
    ("mixture.num_tasks=0", "mixture.num_tasks"),
    ("mixture.spectrum_normalisation=max", "mixture.spectrum_normalisation"),
    ("mixture.prior_exponent=-1", "mixture.prior_exponent"),
    ("metrics.frequent_mass=1.5", "metrics.frequent_mass"),
])
def test_bad_values_raise_value_error_naming_the_field(override, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        with_overrides(SyntheticConfig(), [override]).validate()


def test_overrides_parse_by_declared_type():
    config = with_overrides(SyntheticConfig(), ["training.widths=3,7", "mixture.spectrum_exponent_rarest=0.5",
                                                "training.steps=12", "training.dtype=float64"])
    assert config.training.widths == (3, 7) and config.training.steps == 12
    assert config.mixture.spectrum_exponent_rarest == 0.5 and config.training.dtype == "float64"
    assert with_overrides(config, ["mixture.spectrum_exponent_rarest=none"]).mixture.spectrum_exponent_rarest is None


@pytest.mark.parametrize("override", ["training.nope=1", "training.steps=many", "training=3", "steps"])
def test_bad_overrides_raise_value_error_naming_the_override(override):
    with pytest.raises(ValueError, match="override"):
        with_overrides(SyntheticConfig(), [override])


def test_validate_returns_self_and_accepts_a_good_custom_config():
    config = SyntheticConfig(mixture=MixtureConfig(num_tasks=2, block_dim=2), training=TrainingConfig(widths=(1, 4)))
    assert config.validate() is config
