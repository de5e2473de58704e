"""Fixtures shared across the test tree: a tiny token file in OLMo's format and a config that reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from token_files import write_token_file

torch.set_num_threads(1)  # CI has 2 cores; tests run small models


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    return write_token_file(tmp_path / "data" / "part-0.npy", num_tokens=64 * 16 * 12)


@pytest.fixture
def make_config(tmp_path: Path, token_file: Path):
    """Factory for a small ``InjectionTrainConfig`` over ``token_file``: two tasks, one per schedule mode."""
    from olmo.config import DataConfig, ModelConfig, TokenizerConfig

    from olmo_injection.config import InjectionConfig, InjectionTrainConfig, ScheduleConfig, TaskConfig
    from olmo_injection.tasks import OLMO_TOKENIZER_FILE

    def make(*, seq_len=16, global_batch=8, world_size=1, tasks=None, seed=0, paths=None, **data_kwargs):
        if tasks is None:
            tasks = [
                TaskConfig(name="cmp", kind="cmp", seed=0,
                           schedule=ScheduleConfig(mode="frequency", instances_per_token=1 / 64)),
                TaskConfig(name="add", kind="add", seed=1, schedule=ScheduleConfig(mode="gap", n=2, gap=3, offset=1)),
            ]
        cfg = InjectionTrainConfig(
            save_folder=str(tmp_path / "run"),
            global_train_batch_size=global_batch,
            model=ModelConfig(max_sequence_length=seq_len, vocab_size=50280, embedding_size=50304,
                              eos_token_id=50279, pad_token_id=1),
            data=DataConfig(paths=[str(p) for p in (paths or [token_file])], **data_kwargs),
            tokenizer=TokenizerConfig(identifier=OLMO_TOKENIZER_FILE),
            injection=InjectionConfig(seed=seed, tasks=tasks, task_dir=str(tmp_path / "tasks")),
        )
        cfg.device_train_batch_size = global_batch // world_size
        return cfg

    return make


@pytest.fixture(scope="module")
def one_process_group():
    """A one-process gloo group, as the entry point makes without torchrun (kept if one exists already)."""
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    if created:
        dist.destroy_process_group()


@pytest.fixture
def offline_wandb(monkeypatch):
    """wandb never reaches the network, whatever credentials the machine has."""
    monkeypatch.setenv("WANDB_MODE", "offline")

