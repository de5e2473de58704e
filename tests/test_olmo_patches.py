"""Sharded checkpoints under FSDP on the CPU (gloo): the ``olmo_patches`` that make them exact, and why.

One process: each of OLMo's sharded checkpointers the configs use (``olmo_core``, ``torch_new``) saves and
restores model, optimizer and trainer state bit for bit, before the first step and after training steps. Each
``test_upstream_*`` shows the failure a patch removes, on the upstream object it replaced; when an upgrade
fixes the upstream code that test fails, naming the patch to drop.

Two processes (slow): the training entry point on a 2-rank FSDP run, stopped by SIGTERM on one rank and
resumed from its sharded checkpoint, logs exactly the losses of an uninterrupted run, with both checkpointers.
Run as a script (``torchrun --nproc_per_node=2 tests/test_olmo_patches.py ROOT``) it does those runs.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest
import torch
import torch.nn.functional as F

import olmo.checkpoint
import olmo_core.distributed.checkpoint
from olmo.checkpoint import LocalShardedCheckpointer, build_sharded_checkpointer
from olmo.model import OLMo
from olmo.optim import AdamW, build_optimizer
from olmo.torch_util import seed_all
from olmo_injection import metric_names as mn
from olmo_injection.hooks.base import TrainingHook
from olmo_injection.olmo_patches import (
    REPLACED_UPSTREAM,
    CompleteRemoteFileSystemReader,
    apply_olmo_patches,
    init_optimizer_state_without_stepping,
    load_sharded_optimizer_state_dict_with_state_key,
)
from olmo_injection.train import check_run_settings, load_config
from two_ranks import run_two_ranks

REPO = Path(__file__).parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")
CHECKPOINTERS = ("olmo_core", "torch_new")
STOP_STEP = 3
STEPS = 8


def upstream(name: str) -> Any:
    """The upstream object a patch replaced (``module.name``)."""
    apply_olmo_patches()
    return REPLACED_UPSTREAM[name]


def fsdp_tiny(save_folder: Path, checkpointer: str, *overrides: str):
    return load_config(TINY, [f"save_folder={save_folder}", "distributed_strategy=fsdp",
                              f"sharded_checkpointer={checkpointer}", "save_interval_unsharded=null", *overrides])


def build_fsdp(cfg, seed: int) -> Tuple[torch.nn.Module, torch.optim.Optimizer]:
    """OLMo's tiny model under FSDP on the CPU, with OLMo's AdamW (weight decay 0.1) over it."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    seed_all(seed)
    model = OLMo(cfg.model)
    fsdp_model = FSDP(model, device_id=torch.device("cpu"), use_orig_params=cfg.fsdp.use_orig_params)
    model.reset_parameters()
    return fsdp_model, build_optimizer(cfg, fsdp_model)


def train_steps(model: torch.nn.Module, optim: torch.optim.Optimizer, steps: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        input_ids = torch.randint(100, 50000, (2, 16), generator=generator)
        logits = model(input_ids).logits
        F.cross_entropy(logits[:, :-1].flatten(0, 1), input_ids[:, 1:].flatten()).backward()
        optim.step()
        optim.zero_grad(set_to_none=True)


def parameters(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_identical(actual: Any, expected: Any, where: str = "") -> None:
    """Nested dicts/lists of tensors and plain values, equal bit for bit."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and actual.dtype == expected.dtype, where
        assert torch.equal(actual, expected), where
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), (where, actual.keys(), expected.keys())
        for key in expected:
            assert_identical(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_identical(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, (where, actual, expected)


def identical(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def save_then_restore_fresh(cfg, folder: Path, steps: int, trainer_state: Dict[str, Any] | None = None):
    """Train ``steps`` steps, save a sharded checkpoint, restore it into a fresh model and optimizer.

    Returns (trained model, its optimizer, its parameters before saving, restored model, restored optimizer,
    restored trainer state).
    """
    model, optim = build_fsdp(cfg, seed=1)
    train_steps(model, optim, steps, seed=10)
    before_save = parameters(model)
    checkpointer = build_sharded_checkpointer(cfg)
    checkpointer.save_checkpoint(folder, model, optim, trainer_state or {})
    fresh_model, fresh_optim = build_fsdp(cfg, seed=2)
    trainer_state = checkpointer.restore_checkpoint(folder, fresh_model, fresh_optim)
    return model, optim, before_save, fresh_model, fresh_optim, trainer_state


@pytest.mark.parametrize("steps", [0, 2], ids=["before-first-step", "after-2-steps"])
@pytest.mark.parametrize("checkpointer", CHECKPOINTERS)
def test_sharded_checkpoint_restores_model_optimizer_and_trainer_state_exactly(one_process_group, tmp_path, checkpointer, steps):
    apply_olmo_patches()
    cfg = fsdp_tiny(tmp_path / "run", checkpointer)
    saved_state = {"global_step": steps, "rng": {"torch": torch.get_rng_state()}}
    model, optim, before_save, restored, restored_optim, trainer_state = save_then_restore_fresh(
        cfg, tmp_path / "ckpt", steps, copy.deepcopy(saved_state)
    )

    assert_identical(parameters(model), before_save, "saving changed the model")
    assert_identical(parameters(restored), before_save, "restored model")
    assert_identical(restored_optim.state_dict(), optim.state_dict(), "restored optimizer")
    assert_identical(trainer_state, saved_state, "restored trainer state")
    # The next step is the same from the restored state as from the saved one.
    train_steps(model, optim, 1, seed=11)
    train_steps(restored, restored_optim, 1, seed=11)
    assert_identical(parameters(restored), parameters(model), "model one step after restoring")
    assert_identical(restored_optim.state_dict(), optim.state_dict(), "optimizer one step after restoring")


def test_upstream_olmo_reader_misses_two_abstract_storage_reader_methods():
    # If this fails, torch or OLMo changed: CompleteRemoteFileSystemReader may be unnecessary.
    original = upstream("olmo.checkpoint.RemoteFileSystemReader")
    assert original.__abstractmethods__ == {"reset", "validate_checkpoint_id"}
    with pytest.raises(TypeError, match="abstract"):
        original("/nowhere")
    assert CompleteRemoteFileSystemReader.__bases__ == (original,)
    assert olmo.checkpoint.RemoteFileSystemReader is CompleteRemoteFileSystemReader
    assert CompleteRemoteFileSystemReader("/nowhere/").path == "/nowhere"
    # OLMo's torch_new restore finds both replaced names at call time.
    names = olmo.checkpoint.load_fsdp_model_and_optim_state.__code__.co_names
    assert {"RemoteFileSystemReader", "load_sharded_optimizer_state_dict"} <= set(names)
    assert 'optim_state["optim"]["state"]' in inspect.getsource(olmo.checkpoint.load_fsdp_model_and_optim_state)


def test_upstream_torch_new_restore_of_an_unstepped_optimizer_has_no_state_key(one_process_group, tmp_path, monkeypatch):
    # If this fails, torch now keeps the empty ``state``: load_sharded_optimizer_state_dict_with_state_key can go.
    apply_olmo_patches()
    monkeypatch.setattr(olmo.checkpoint, "load_sharded_optimizer_state_dict",
                        upstream("olmo.checkpoint.load_sharded_optimizer_state_dict"))
    with pytest.raises(KeyError, match="state"):
        save_then_restore_fresh(fsdp_tiny(tmp_path / "run", "torch_new"), tmp_path / "ckpt", steps=0)
    assert olmo.checkpoint.load_sharded_optimizer_state_dict is not load_sharded_optimizer_state_dict_with_state_key


@pytest.mark.parametrize("steps", [0, 2], ids=["save-changes-weights", "restore-changes-weights"])
def test_upstream_olmo_core_checkpoint_steps_a_fresh_optimizer(one_process_group, tmp_path, monkeypatch, steps):
    # If this fails, olmo_core no longer steps the optimizer: init_optimizer_state_without_stepping can go.
    apply_olmo_patches()
    monkeypatch.setattr(olmo_core.distributed.checkpoint, "init_optimizer_state",
                        upstream("olmo_core.distributed.checkpoint.init_optimizer_state"))
    model, _, before_save, restored, _, _ = save_then_restore_fresh(fsdp_tiny(tmp_path / "run", "olmo_core"), tmp_path / "ckpt", steps)
    # With no optimizer state yet, saving (step 0) decays the live weights; restoring into a fresh optimizer
    # (every resume) decays the weights just restored.
    assert identical(parameters(model), before_save) == (steps > 0)
    assert not identical(parameters(restored), before_save)


def test_upstream_olmo_core_init_optimizer_state_takes_a_weight_decay_step():
    # If this fails, olmo_core no longer steps the optimizer: init_optimizer_state_without_stepping can go.
    weight = torch.nn.Parameter(torch.randn(4, 4, generator=torch.Generator().manual_seed(0)))
    optim = AdamW([weight], lr=1e-2, weight_decay=0.1)
    before = weight.detach().clone()
    upstream("olmo_core.distributed.checkpoint.init_optimizer_state")(optim)
    assert torch.equal(weight.detach(), before * (1 - 1e-2 * 0.1))
    assert optim.state[weight]["step"].item() == 1
    for function in (olmo_core.distributed.checkpoint.save_model_and_optim_state,
                     olmo_core.distributed.checkpoint.load_model_and_optim_state):
        assert "init_optimizer_state" in inspect.unwrap(function).__code__.co_names
    assert olmo_core.distributed.checkpoint.init_optimizer_state is init_optimizer_state_without_stepping


def test_init_without_stepping_keeps_weights_and_makes_the_first_step_that_of_a_fresh_optimizer():
    def make():
        weight = torch.nn.Parameter(torch.randn(4, 4, generator=torch.Generator().manual_seed(0)))
        return weight, AdamW([weight], lr=1e-2, weight_decay=0.1)

    initialised, initialised_optim = make()
    init_optimizer_state_without_stepping(initialised_optim)
    assert torch.equal(initialised.detach(), make()[0].detach())
    assert initialised_optim.state[initialised]["step"].item() == 0
    assert initialised_optim.param_groups[0]["lr"] == 1e-2 and initialised.grad is None

    fresh, fresh_optim = make()
    for weight, optim in ((initialised, initialised_optim), (fresh, fresh_optim)):
        weight.grad = torch.full_like(weight, 0.5)
        optim.step()
    assert torch.equal(initialised.detach(), fresh.detach())
    assert_identical(initialised_optim.state_dict(), fresh_optim.state_dict())


def test_upstream_local_checkpointer_cannot_save_with_this_torch(one_process_group, tmp_path):
    cfg = fsdp_tiny(tmp_path / "run", "local")
    model, _ = build_fsdp(cfg, seed=1)
    with pytest.raises(NotImplementedError):
        LocalShardedCheckpointer(cfg)._fsdp_handles(model)
    with pytest.raises(ValueError, match="sharded_checkpointer=local: not supported"):
        check_run_settings(cfg, 1, torch.device("cuda"))
    with pytest.raises(ValueError, match="load_path_sharded_checkpointer=local: not supported"):
        check_run_settings(fsdp_tiny(tmp_path / "run", "olmo_core", "load_path_sharded_checkpointer=local"), 1, torch.device("cuda"))
    check_run_settings(fsdp_tiny(tmp_path / "run", "olmo_core"), 1, torch.device("cuda"))


@pytest.mark.slow
def test_two_rank_fsdp_run_stopped_by_sigterm_resumes_to_identical_losses(tmp_path):
    from olmo_injection.metrics_record import metrics_by_step

    run_two_ranks(__file__, str(tmp_path), timeout_s=600)

    def history(folder: Path) -> Dict[int, Dict[str, float]]:
        return metrics_by_step(folder)

    reference = history(tmp_path / "reference")
    assert sorted(reference) == list(range(1, STEPS + 1))
    for checkpointer in CHECKPOINTERS:
        folder = tmp_path / checkpointer
        for rank in (0, 1):
            runs = json.loads((folder / f"runs-rank{rank}.json").read_text())
            assert runs == [
                {"start_step": 0, "final_step": STOP_STEP, "signal": int(signal.SIGTERM) if rank == 0 else None},
                {"start_step": STOP_STEP, "final_step": STEPS, "signal": None},
            ], (checkpointer, rank)
        assert sorted(p.name for p in folder.glob("step*")) == ["step0", f"step{STOP_STEP}", "step4", f"step{STEPS}"]
        resumed = history(folder)
        assert sorted(resumed) == sorted(reference)
        compared = 0
        for step, row in reference.items():
            for key, value in row.items():
                if key.startswith((*mn.TRAINING_NAMESPACES, "eval/")):
                    assert resumed[step][key] == value, (checkpointer, step, key)
                    compared += 1
        assert compared > 10 * STEPS


class RecordRun(TrainingHook):
    """Appends ``{start_step, final_step, signal}`` of each run to a JSON list; sends SIGTERM after ``sigterm_at``."""

    def __init__(self, path: Path, sigterm_at: int | None = None):
        self.path, self.sigterm_at = path, sigterm_at
        self.start_step = -1

    def on_train_start(self, trainer):
        self.start_step = trainer.global_step

    def post_step(self, trainer, batch):
        if trainer.global_step == self.sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return {}

    def write(self, result) -> None:
        runs = json.loads(self.path.read_text()) if self.path.is_file() else []
        runs.append({"start_step": self.start_step, "final_step": result.final_step, "signal": result.stopped_by_signal})
        self.path.write_text(json.dumps(runs))


def main(root: Path) -> None:
    """Per rank: an uninterrupted run, then for each checkpointer a run SIGTERMed (on rank 0 only) and resumed."""
    from olmo.torch_util import get_global_rank

    from olmo_injection.train import init_distributed, train

    torch.set_num_threads(1)
    init_distributed()
    rank = get_global_rank()
    train(fsdp_tiny(root / "reference", "olmo_core"))
    for checkpointer in CHECKPOINTERS:
        for sigterm_at in (STOP_STEP if rank == 0 else None, None):
            record = RecordRun(root / checkpointer / f"runs-rank{rank}.json", sigterm_at)
            result = train(fsdp_tiny(root / checkpointer, checkpointer), extra_hooks=[record])
            record.write(result)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
