"""wandb run identity, mode, run id, the offline fallback, and failures that must not stop training."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from olmo_injection.config import InjectionTrainConfig
from olmo_injection.hooks.wandb_logging import (
    persistent_run_id,
    start_wandb_run,
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


def test_identity_of_the_default_config_groups_by_everything_but_the_seed():
    cfg = InjectionTrainConfig.load(CONFIGS / "default.yaml", ["seed=7"], validate_paths=False)
    identity = run_identity(cfg, 6_963_200)
    assert identity.project == "olmo-injection"
    assert identity.group == "4M-cmp_frequent-f7.800e-03_cmp_rare-f7.800e-04_cmp_rarest-f7.800e-05"
    assert identity.name == identity.group + "-s7"
    assert {"model:4M", "seed:7", "task:cmp_frequent", "task:cmp_rarest", "freq:7.8e-05"} <= set(identity.tags)
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


def test_online_start_against_an_unreachable_server_falls_back_to_offline(tmp_path, no_wandb_env, monkeypatch, caplog):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed.getsockname()[1]}")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    cfg = InjectionTrainConfig.load(CONFIGS / "tiny.yaml", [f"save_folder={tmp_path}"], validate_paths=False)
    try:
        with caplog.at_level(logging.WARNING):
            run = start_wandb_run(cfg, 403_712)
        assert run is not None and run.settings.mode == "offline"
        assert run.id == (tmp_path / "wandb_run_id").read_text().strip()  # still the job's own run id
        run.finish()
    finally:
        closed.close()
    assert [r.message for r in caplog.records if "falling back to offline" in r.message]


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
