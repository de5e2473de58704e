"""Fixtures for the analysis tests: a process group of one (gloo) and a tiny saved OLMo run."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist

from olmo_injection.config import InjectionTrainConfig

from planted_analysis_models import tiny_model_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def single_process_group():
    """A one-rank gloo process group, as OLMo's checkpointers need one to save."""
    if dist.is_initialized():
        yield
        return
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.fixture
def tiny_train_config(tmp_path) -> InjectionTrainConfig:
    """An ``InjectionTrainConfig`` for the tiny model, saving under ``tmp_path/run``."""
    cfg = InjectionTrainConfig(model=tiny_model_config(), save_folder=str(tmp_path / "run"), save_overwrite=True)
    return cfg


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
