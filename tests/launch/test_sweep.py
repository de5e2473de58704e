"""Sweep expansion (``olmo_injection.sweep``): run names, groups, composed configs, and bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from olmo_injection.config import InjectionTrainConfig
from olmo_injection.sweep import expand_sweep, load_sweep, write_run_config

from launch_testing import REPO, TINY_CONFIG

MODELS = REPO / "configs" / "models"
BASE = [REPO / "configs" / "base" / "olmo_7b_0724.yaml", REPO / "configs" / "base" / "dolma_v1_7.yaml"]


def write_sweep(tmp_path: Path, sweep: dict, slurm: dict = None, name: str = "sweep.yaml") -> Path:
    """A sweep file over the tiny config with a fixed ``data.seed`` (unless ``sweep`` names its own base)."""
    data_seed = tmp_path / "data_seed.yaml"
    data_seed.write_text(yaml.safe_dump({"data": {"seed": 5}}))
    body = {"sweep": {"base": [str(TINY_CONFIG), str(data_seed)], "model_dir": str(MODELS), **sweep}}
    if slurm is not None:
        body["slurm"] = slurm
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body))
    return path


def expand(tmp_path: Path, **sweep):
    return expand_sweep(load_sweep(write_sweep(tmp_path, {"name": "s", **sweep})), tmp_path / "runs")


def test_product_of_axes_in_nesting_order_with_deterministic_names_and_groups(tmp_path):
    runs = expand(tmp_path, models=["4M", "20M"], tasks=["cmp", ["cmp", "add"]],
                  frequencies=[1e-3], gaps=[3, {"n": 2, "gap": 5}], seeds=[1, 2])
    assert len(runs) == 2 * 2 * 3 * 2
    assert [r.index for r in runs] == list(range(24))
    assert runs[0].name == "s-4M-cmp-f1.000e-03-s1"
    assert runs[1].name == "s-4M-cmp-f1.000e-03-s2"
    assert runs[2].name == "s-4M-cmp-n3g3-s1"
    assert runs[4].name == "s-4M-cmp-n2g5-s1"
    assert runs[6].name == "s-4M-cmp+add-f1.000e-03-s1"
    assert runs[12].name == "s-20M-cmp-f1.000e-03-s1"
    # The seeds of one setting share a wandb group; nothing else does.
    assert runs[0].group == runs[1].group == "s-4M-cmp-f1.000e-03"
    assert len({r.group for r in runs}) == 12
    assert runs[0].axes == {"model": "4M", "tasks": "cmp", "schedule": "f1.000e-03", "seed": "1"}
    again = expand(tmp_path, models=["4M", "20M"], tasks=["cmp", ["cmp", "add"]],
                   frequencies=[1e-3], gaps=[3, {"n": 2, "gap": 5}], seeds=[1, 2])
    assert [(r.name, r.group, r.config) for r in again] == [(r.name, r.group, r.config) for r in runs]


def test_run_config_composes_base_model_tasks_schedule_seed_and_naming(tmp_path):
    runs = expand(tmp_path, models=["20M"], tasks=[["cmp", {"kind": "add", "name": "add7", "seed": 7}]],
                  gaps=[{"n": 3, "gap": 4}], seeds=[11], overrides={"max_duration": 3, "task_eval.batch_size": 16})
    (run,) = runs
    cfg = run.config
    assert {k: cfg["model"][k] for k in ("d_model", "n_layers", "n_heads", "mlp_hidden_size")} == {
        "d_model": 192, "n_layers": 16, "n_heads": 8, "mlp_hidden_size": 1536}
    assert cfg["model"]["max_sequence_length"] == 32  # the rest of the model section is the base's
    assert [t["name"] for t in cfg["injection"]["tasks"]] == ["cmp", "add7"]
    assert cfg["injection"]["tasks"][1]["seed"] == 7
    assert all(t["schedule"] == {"mode": "gap", "n": 3, "gap": 4, "offset": 0} for t in cfg["injection"]["tasks"])
    assert cfg["seed"] == 11 and cfg["injection"]["seed"] == 11
    assert cfg["max_duration"] == 3 and cfg["task_eval"]["batch_size"] == 16
    assert cfg["run_name"] == run.name
    assert cfg["save_folder"] == str(tmp_path / "runs" / "s" / run.name / "checkpoints")
    assert cfg["wandb"]["name"] == run.name and cfg["wandb"]["group"] == run.group
    assert "sweep:s" in cfg["wandb"]["tags"]
    assert isinstance(cfg["data"]["paths"], list) and "${" not in str(cfg)  # resolved


def test_data_order_settings_are_the_same_for_every_model_and_seed(tmp_path):
    """data.seed and the file list fix the global order; the seeds axis must not move them."""
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"data": {"seed": 123}}))
    sweep = {"name": "s", "base": [str(TINY_CONFIG), str(tmp_path / "base.yaml")], "models": ["4M", "20M"],
             "seeds": [1, 2, 3]}
    runs = expand_sweep(load_sweep(write_sweep(tmp_path, sweep)), tmp_path / "runs")
    assert {r.config["data"]["seed"] for r in runs} == {123}
    assert len({tuple(r.config["data"]["paths"]) for r in runs}) == 1
    assert {r.config["global_train_batch_size"] for r in runs} == {8}


def test_seeds_axis_without_fixed_data_seed_is_an_error(tmp_path):
    sweep = {"name": "s", "base": [str(TINY_CONFIG)], "seeds": [1, 2]}
    with pytest.raises(ValueError, match="data.seed"):
        expand_sweep(load_sweep(write_sweep(tmp_path, sweep)), tmp_path / "runs")


def test_written_run_config_is_what_training_loads(tmp_path):
    (run,) = expand(tmp_path, models=["4M"], frequencies=[2e-3])
    path = write_run_config(run)
    assert path == tmp_path / "runs" / "s" / run.name / "run.yaml"
    cfg = InjectionTrainConfig.load(path)
    assert cfg.run_name == run.name and cfg.model.d_model == 64
    assert [t.schedule.instances_per_token for t in cfg.injection.tasks] == [2e-3, 2e-3]
    assert cfg.save_folder == run.config["save_folder"]


def test_plain_config_is_a_sweep_of_one_run_named_after_the_file(tmp_path):
    runs = expand_sweep(load_sweep(TINY_CONFIG), tmp_path)
    assert [r.name for r in runs] == ["tiny"]
    assert runs[0].config["save_folder"] == str(tmp_path / "tiny" / "tiny" / "checkpoints")
    assert len(runs[0].config["injection"]["tasks"]) == 2


def test_dolma_root_is_read_from_the_environment_and_a_missing_local_root_is_an_error(tmp_path, monkeypatch):
    sweep = {"name": "d", "base": [str(p) for p in BASE], "models": ["4M"], "tasks": ["cmp"], "gaps": [1]}
    path = write_sweep(tmp_path, sweep)
    monkeypatch.delenv("DOLMA_ROOT", raising=False)
    (run,) = expand_sweep(load_sweep(path), tmp_path / "runs")
    paths = run.config["data"]["paths"]
    assert len(paths) == 1033 and all(p.startswith("https://olmo-data.org/preprocessed/") for p in paths)

    mirror = tmp_path / "mirror"
    monkeypatch.setenv("DOLMA_ROOT", str(mirror))
    with pytest.raises(ValueError, match=r"data\.paths\.0=.*mirror/preprocessed/.*no such data file"):
        expand_sweep(load_sweep(path), tmp_path / "runs")
    for p in paths:  # a local mirror of the bucket (sparse stand-ins holding one 4096-token sequence each)
        local = mirror / p.removeprefix("https://olmo-data.org/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.touch()
        os.truncate(local, 2 * 4096)
    (local_run,) = expand_sweep(load_sweep(path), tmp_path / "runs")
    assert local_run.config["data"]["paths"][0] == str(mirror / "preprocessed" / paths[0].split("preprocessed/")[1])


@pytest.mark.parametrize(
    "sweep, message",
    [
        ({"models": ["7B"]}, r"unknown model size '7B'; known in .*\['1B', '20M', '300M', '4B', '4M'\]"),
        ({"frequencies": []}, r"sweep.frequencies=\[\] has no values"),
        ({"seeds": []}, r"sweep.seeds=\[\] has no values"),
        ({"models": []}, r"sweep.models=\[\] has no values"),
        ({"modles": ["4M"]}, r"unknown keys sweep.\['modles'\]"),
        ({"frequencies": [0.5]}, r"run 's-f5.000e-01': .*instances_per_token=0.5"),
        ({"frequencies": [3.0001e-3, 3.0002e-3]}, r"identical run names"),
        ({"gaps": [0]}, r"n and gap must be >= 1"),
        ({"tasks": ["cmp"], "overrides": {"injection.tasks.0.kind": "div"}}, r"kind='div'"),
        ({"tasks": ["div"]}, r"sweep.tasks kind='div': unknown task kind"),
        ({"overrides": {"no_such_option": 1}}, r"invalid config: .*no_such_option"),
    ],
)
def test_bad_sweeps_fail_with_a_message_naming_the_problem(tmp_path, sweep, message):
    with pytest.raises(ValueError, match=message):
        expand(tmp_path, **sweep)


def test_frequency_axis_without_tasks_is_an_error(tmp_path):
    (tmp_path / "no_tasks.yaml").write_text(yaml.safe_dump({"injection": {"tasks": []}}))
    sweep = {"name": "s", "base": [str(TINY_CONFIG), str(tmp_path / "no_tasks.yaml")], "frequencies": [1e-3]}
    with pytest.raises(ValueError, match="no injection.tasks"):
        expand_sweep(load_sweep(write_sweep(tmp_path, sweep)), tmp_path / "runs")
