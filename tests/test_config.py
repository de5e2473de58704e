"""The config tree: OLMo's loader with our sections, list-index overrides, and validation messages."""

from pathlib import Path

import pytest

from olmo_injection.config import InjectionTrainConfig, TaskConfig, validate_config

CONFIG = str(Path(__file__).parents[1] / "configs" / "tiny.yaml")


def test_olmo_config_fact_unknown_sections_are_refused_by_plain_trainconfig():
    """docs/olmo_0_6_0.md#configuration: TrainConfig's schema is strict, so InjectionTrainConfig subclasses it."""
    from olmo.config import TrainConfig
    from olmo.exceptions import OLMoConfigurationError

    with pytest.raises(OLMoConfigurationError, match="injection"):
        TrainConfig.load(CONFIG)


def test_dotted_overrides_reach_olmo_fields_and_list_elements():
    cfg = InjectionTrainConfig.load(
        CONFIG,
        ["model.d_model=16", "injection.tasks.0.schedule.instances_per_token=1e-4", "injection.tasks.1.schedule.gap=5"],
    )
    assert cfg.model.d_model == 16
    assert cfg.injection.tasks[0].schedule.instances_per_token == 1e-4
    assert cfg.injection.tasks[1].schedule.gap == 5
    assert isinstance(cfg.injection.tasks[0], TaskConfig)


def test_override_of_a_missing_list_element_is_an_error():
    from olmo.exceptions import OLMoConfigurationError

    with pytest.raises(OLMoConfigurationError, match="injection.tasks.7"):
        InjectionTrainConfig.load(CONFIG, ["injection.tasks.7.kind=add"])


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["injection.tasks.0.kind=div"], "injection.tasks.0.kind='div': unknown task kind"),
        (["injection.tasks.1.name=cmp"], "injection.tasks.1.name='cmp'"),
        (["injection.tasks.0.schedule.instances_per_token=0.5"], "instances_per_token=0.5"),
        (["injection.tasks.0.schedule.instances_per_token=0"], "instances_per_token=0"),
        (["injection.tasks.1.schedule.n=0"], "n=0"),
        (["injection.tasks.1.schedule.gap=0"], "gap=0"),
        (["injection.tasks.1.schedule.n=9"], "n=9"),
        (["model.max_sequence_length=3"], "max_sequence_length=3"),
        (["injection.tasks.0.file=/nope.json"], "no such task file"),
        (["data.paths=[/no/such/file.npy]"], "data.paths.0='/no/such/file.npy'"),
        (["task_eval.batch_size=0"], "task_eval.batch_size=0"),
    ],
)
def test_bad_settings_name_field_and_value(overrides, match):
    cfg = InjectionTrainConfig.load(CONFIG, overrides)
    with pytest.raises(ValueError, match=match.replace("[", r"\[").replace(".", r"\.")):
        validate_config(cfg)


def test_a_task_that_cannot_see_its_train_split_once_is_named_before_training(caplog):
    """The main job's rarest task (7.8e-5 per token: 65 instances in 800 steps, 128 train instances) is meant to
    stay unlearned; the run says so before training, and says nothing of the tasks that can be learned."""
    import logging

    from olmo_injection.config import InjectionTrainConfig, validate_config

    cfg = InjectionTrainConfig.load("configs/default.yaml", ["save_folder=/nonexistent/never-written"])
    with caplog.at_level(logging.WARNING, logger="olmo_injection.config"):
        validate_config(cfg)
    messages = [r.getMessage() for r in caplog.records if "not expected to be learned" in r.getMessage()]
    assert len(messages) == 1 and messages[0].startswith("injection.tasks.2 (cmp_rarest): 63 instances")
