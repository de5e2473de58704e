"""InjectionTrainer's few overrides and the OLMo 0.6.0 behaviour they and ``olmo_patches`` rely on.

Each ``test_upstream_*`` pins one fact about installed code; if an upgrade changes it, the test names what to
revisit. The end-to-end behaviour (hooks called, signals, resume) is tested in ``tests/test_train.py``.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import wandb
from olmo import train as olmo_train
from olmo.train import Trainer

from olmo_injection.olmo_patches import (
    FailSafeWandb,
    apply_olmo_patches,
    cuda_rng_state_without_cuda,
)
from olmo_injection.trainer import InjectionTrainer


def test_trainer_overrides_only_the_documented_methods():
    generated = {"__init__", "__repr__", "__eq__"}  # written by @dataclass, not by us
    overridden = {
        name for name, value in vars(InjectionTrainer).items()
        if callable(value) and name in vars(Trainer) and name not in generated
    }
    assert overridden == {
        "__post_init__", "fit", "train_step", "model_forward", "eval", "save_checkpoint", "check_if_cancelled",
        "trainer_state_dict", "close",
    }


def test_upstream_fit_logs_through_the_module_level_wandb_name():
    source = inspect.getsource(Trainer.fit)
    assert "wandb.log(metrics, step=self.global_step)" in source and "wandb.run is not None" in source
    apply_olmo_patches()
    assert isinstance(olmo_train.wandb, FailSafeWandb)
    assert olmo_train.wandb.Settings is wandb.Settings  # everything else is the real module


def test_upstream_close_passes_quiet_which_wandb_no_longer_accepts():
    # If either half changes, FailSafeWandb.finish's removal of ``quiet`` can go.
    assert "wandb.finish(exit_code=exit_code, quiet=True)" in inspect.getsource(Trainer.close)
    assert "quiet" not in inspect.signature(wandb.finish).parameters


@pytest.mark.skipif(torch.cuda.is_available(), reason="the patch only acts on a CPU-only torch")
def test_upstream_trainer_state_saves_the_cuda_rng_which_cpu_torch_cannot_read():
    assert "torch.cuda.get_rng_state()" in inspect.getsource(Trainer.trainer_state_dict)
    with pytest.raises(Exception):
        torch.cuda.get_rng_state()
    original = torch.cuda.get_rng_state
    with cuda_rng_state_without_cuda():
        assert torch.cuda.get_rng_state().numel() == 0
    assert torch.cuda.get_rng_state is original


def test_upstream_cancel_check_and_forward_call_sites():
    fit = inspect.getsource(Trainer.fit)
    assert "self.global_step % self.cfg.canceled_check_interval == 0" in fit
    assert "self.check_if_cancelled()" in fit
    # Training and evaluation both reach the model through model_forward; the hook tells them apart.
    assert "self.model_forward(" in inspect.getsource(Trainer.train_micro_batch)
    assert "self.model_forward(" in inspect.getsource(Trainer.eval_batch)
    # Extra per-row batch fields survive the micro-batch split as long as they are tensors.
    assert "isinstance(value, torch.Tensor)" in inspect.getsource(Trainer.split_batch)


def test_a_signal_stops_the_run_at_the_next_cancel_check_and_configs_read_as_loaded(tmp_path):
    """A stop is agreed at OLMo's own cancel checks only (no reduction in the steps between), and the trainer
    leaves the config as loaded: every saved config.yaml has the interval the user asked for."""
    import signal

    import yaml

    from olmo_injection.train import load_config, train
    from test_train import SignalAtStep

    cfg = load_config("configs/tiny.yaml", [f"save_folder={tmp_path}", "max_duration=8", "save_interval=100",
                                            "save_interval_unsharded=100", "eval_interval=100",
                                            "canceled_check_interval=3", "wandb=null"])
    result = train(cfg, extra_hooks=[SignalAtStep(4, signal.SIGTERM)])
    assert result.stopped_by_signal == signal.SIGTERM and result.final_step == 6  # the check after step 4
    assert cfg.canceled_check_interval == 3
    for saved in [tmp_path / "config.yaml", *tmp_path.glob("step*/config.yaml")]:
        assert yaml.safe_load(saved.read_text())["canceled_check_interval"] == 3, saved
    assert (tmp_path / "step6-unsharded").is_dir()
