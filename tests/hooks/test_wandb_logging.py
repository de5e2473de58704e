"""wandb run identity, mode, run id, reading offline runs back, and failures that must not stop training."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from olmo_injection.config import InjectionTrainConfig
from olmo_injection.hooks.wandb_logging import (
    model_size_name,
    persistent_run_id,
    read_wandb_history,
    run_identity,
    wandb_mode,
)

CONFIGS = Path(__file__).parents[2] / "configs"


@pytest.fixture
def no_wandb_env(monkeypatch, tmp_path):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine example.org login x password y\n")
    monkeypatch.setenv("NETRC", str(netrc_file))
    return netrc_file


def test_model_size_names_follow_spec_table():
    assert model_size_name(6_963_200) == "4M"
    assert model_size_name(371_458_048) == "300M"
    assert model_size_name(403_712) == "0.404M"


def test_identity_of_the_default_config_groups_by_everything_but_the_seed():
    cfg = InjectionTrainConfig.load(CONFIGS / "default.yaml", ["seed=7"], validate_paths=False)
    identity = run_identity(cfg, 6_963_200)
    assert identity.project == "olmo-injection"
    assert identity.group == "4M-cmp-f2.0e-03_add-f2.0e-03"
    assert identity.name == identity.group + "-s7"
    assert {"model:4M", "seed:7", "task:cmp", "task:add", "freq:0.002"} <= set(identity.tags)
    other_seed = run_identity(InjectionTrainConfig.load(CONFIGS / "default.yaml", ["seed=8"], validate_paths=False), 6_963_200)
    assert other_seed.group == identity.group and other_seed.name != identity.name


def test_identity_of_gap_schedule_and_explicit_names():
    cfg = InjectionTrainConfig.load(
        CONFIGS / "tiny.yaml", ["wandb.group=mine", "run_name=r1"], validate_paths=False
    )
    identity = run_identity(cfg, 403_712)
    assert identity.group == "mine" and identity.name == "r1"
    assert {"gap:2", "n:1"} <= set(identity.tags)


def test_mode_is_offline_without_credentials_and_online_with(no_wandb_env, monkeypatch):
    assert wandb_mode() == "offline"
    no_wandb_env.write_text("machine api.wandb.ai login user password secret\n")
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"


def test_run_id_persists_in_the_save_folder(tmp_path):
    first = persistent_run_id(tmp_path)
    assert persistent_run_id(tmp_path) == first and len(first) >= 8


def test_offline_history_is_read_back_and_later_fragments_win(tmp_path, no_wandb_env):
    import wandb

    for values in ({1: 1.5, 2: 2.5}, {2: 20.0, 3: 30.0}):  # a run, then its resumed fragment repeating step 2
        run = wandb.init(dir=tmp_path, project="p", id="resumeme", resume="allow", mode="offline")
        for step, value in values.items():
            run.log({"task/cmp/train_step/loss": value, "n": step}, step=step)
        run.finish()
        time.sleep(1.1)  # wandb names a fragment's directory by its start second; a real resume is never that quick
    history = read_wandb_history(tmp_path / "wandb", "resumeme")
    assert {s: h["task/cmp/train_step/loss"] for s, h in history.items()} == {1: 1.5, 2: 20.0, 3: 30.0}


def test_failing_wandb_calls_from_olmo_do_not_raise(tmp_path, no_wandb_env):
    import wandb

    from olmo_injection.olmo_patches import FailSafeWandb

    proxy = FailSafeWandb(wandb)
    run = wandb.init(dir=tmp_path, project="p", mode="offline")
    assert proxy.run is run
    run.finish()
    with pytest.raises(Exception):
        wandb.log({"x": 1.0}, step=1)  # real wandb refuses to log without an active run...
    proxy.log({"x": 1.0}, step=1)  # ...the proxy swallows it
    assert proxy.run is None  # and OLMo stops calling wandb
    proxy.finish(exit_code=0, quiet=True)  # OLMo's call signature, which wandb no longer accepts
