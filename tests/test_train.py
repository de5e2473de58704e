"""The training entry point end to end on the CPU: real OLMo trainer, real wandb (offline), real torch.distributed.

One uninterrupted tiny run (module fixture) is the reference for: its logged metrics read back from the wandb
offline files; the per-task step loss recomputed independently; a run stopped by SIGTERM and resumed; a
two-process torchrun run with the same global batch.

Run as a script (``torchrun ... tests/test_train.py SAVE_FOLDER [overrides]``) it trains ``configs/tiny.yaml``
with the injection recorder, for the torchrun test.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch
import torch.nn.functional as F

from olmo_injection import metric_names as mn
from olmo_injection.hooks.base import TrainingHook
from olmo_injection.metrics_record import metrics_by_step
from olmo_injection.train import (
    check_checkpoint_matches,
    check_run_settings,
    load_config,
    resolve_load_path,
    train,
)
from two_ranks import run_two_ranks

REPO = Path(__file__).parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")
TASKS = ("cmp", "add")
STEPS = 8


class InjectionRecorder(TrainingHook):
    """Records (step, global position, task, instance) of every row this rank trains on; writes JSON at close."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: List[List[int]] = []

    def pre_step(self, trainer, batch):
        for row in zip(batch["global_position"].tolist(), batch["injected_task"].tolist(), batch["injected_instance"].tolist()):
            self.rows.append([trainer.global_step, *row])

    def close(self, trainer):
        self.path.write_text(json.dumps(self.rows))


class IndependentTaskLoss(TrainingHook):
    """Before each step, recomputes every task's LABEL-token loss with a separate forward pass of the bare model."""

    def __init__(self):
        self.expected: Dict[int, Dict[str, float]] = {}
        self.reported: Dict[int, Dict[str, float]] = {}

    def pre_step(self, trainer, batch):
        expected = {}
        for t, name in enumerate(TASKS):
            rows = batch["injected_task"] == t
            if rows.any():
                with torch.no_grad():
                    logits = trainer.model(batch["input_ids"][rows]).logits
                expected[name] = F.cross_entropy(logits[:, 1], batch["input_ids"][rows, 2]).item()
        self.expected[trainer.global_step] = expected

    def post_step(self, trainer, batch):
        self.reported[trainer.global_step] = {
            name: trainer.step_metrics[mn.task_key(name, mn.TRAIN_STEP, mn.LOSS)]
            for name in TASKS
            if mn.task_key(name, mn.TRAIN_STEP, mn.LOSS) in trainer.step_metrics
        }
        return {}


class SignalAtStep(TrainingHook):
    """Sends ``signum`` to this process after step ``step``, as ``kill``/SLURM would."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def post_step(self, trainer, batch):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
        return {}


@pytest.fixture(scope="module", autouse=True)
def offline_wandb():
    """Tests never touch the network, whatever credentials the machine has."""
    old = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = "offline"
    yield
    if old is None:
        del os.environ["WANDB_MODE"]
    else:
        os.environ["WANDB_MODE"] = old


def tiny(save_folder: Path, *overrides: str):
    return load_config(TINY, [f"save_folder={save_folder}", *overrides])


def history_of(save_folder: Path) -> Dict[int, Dict[str, float]]:
    """The run's own metrics record, by step."""
    return metrics_by_step(save_folder)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The uninterrupted tiny run: 8 steps, evaluations and checkpoints at 4 and 8."""
    save_folder = tmp_path_factory.mktemp("reference")
    recorder = InjectionRecorder(save_folder / "injections-rank0.json")
    task_loss = IndependentTaskLoss()
    result = train(tiny(save_folder), extra_hooks=[recorder, task_loss])
    return save_folder, result, history_of(save_folder), recorder.rows, task_loss


def test_run_logs_finite_metrics_to_its_metrics_record(reference_run):
    save_folder, result, history, _, _ = reference_run
    assert result.final_step == STEPS and result.stopped_by_signal is None
    assert sorted(history) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        for key in (mn.LM_TRAIN_LOSS, *(mn.task_key(t, mn.TRAIN_STEP, mn.INSTANCES_SEEN) for t in TASKS)):
            assert math.isfinite(history[step][key]), (step, key)
    eval_keys = ["eval/validation/CrossEntropyLoss"] + [
        mn.task_key(t, split, metric)
        for t in TASKS
        for split in (mn.TRAIN_SPLIT, mn.TEST_SPLIT, mn.REFERENCE)
        for metric in (mn.LOSS, mn.ACC_LABELS, mn.ACC_VOCAB)
    ]
    for step in (4, 8):
        for key in eval_keys:
            assert math.isfinite(history[step][key]), (step, key)
    # cmp: 2 instances every batch (7.8125e-3 * 256 tokens); add: 1 every 2nd batch from batch 0.
    assert history[STEPS][mn.task_key("cmp", mn.TRAIN_STEP, mn.INSTANCES_SEEN)] == 2 * STEPS
    assert history[STEPS][mn.task_key("add", mn.TRAIN_STEP, mn.INSTANCES_SEEN)] == STEPS // 2
    assert (save_folder / f"step{STEPS}-unsharded" / "model.pt").is_file()
    assert (save_folder / "config.yaml").is_file()


def test_logged_instances_match_the_injected_rows(reference_run):
    _, _, history, rows, _ = reference_run
    for t, name in enumerate(TASKS):
        for step in range(1, STEPS + 1):
            injected = sum(1 for s, _, task, _ in rows if s == step and task == t)
            assert history[step][mn.task_key(name, mn.TRAIN_STEP, mn.INJECTED_THIS_STEP)] == injected


def test_step_task_loss_equals_independent_recomputation(reference_run):
    _, _, _, _, task_loss = reference_run
    compared = 0
    for step, expected in task_loss.expected.items():
        assert task_loss.reported[step].keys() == expected.keys()
        for name, value in expected.items():
            assert task_loss.reported[step][name] == pytest.approx(value, rel=1e-5)
            compared += 1
    assert compared >= STEPS + STEPS // 2  # every cmp step and every add step


@pytest.mark.slow
def test_run_stopped_by_sigterm_resumes_to_the_same_metrics(reference_run, tmp_path):
    _, _, reference, _, _ = reference_run
    first = train(tiny(tmp_path), extra_hooks=[SignalAtStep(3, signal.SIGTERM)])
    assert first.stopped_by_signal == signal.SIGTERM and first.final_step == 3
    assert sorted(p.name for p in tmp_path.glob("step*")) == ["step0-unsharded", "step3-unsharded"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored

    second = train(tiny(tmp_path))  # the same command again: resumes from step 3
    assert second.final_step == STEPS
    assert (tmp_path / "step0-unsharded" / "model.pt").is_file()  # earlier checkpoints left intact
    resumed = history_of(tmp_path)
    assert sorted(resumed) == sorted(reference)
    for step, row in reference.items():
        for key, value in row.items():
            if key.startswith((*mn.TRAINING_NAMESPACES, "eval/")):
                assert resumed[step][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (step, key)


@pytest.mark.slow
def test_two_process_torchrun_sees_the_same_instances_and_losses(reference_run, tmp_path):
    _, _, reference, single_rows, _ = reference_run
    stop = 4
    run_two_ranks(__file__, str(tmp_path), f"stop_at={stop}", timeout_s=600)

    rows = sorted(r for rank in (0, 1) for r in json.loads((tmp_path / f"injections-rank{rank}.json").read_text()))
    assert rows == sorted(r for r in single_rows if r[0] <= stop)
    two = history_of(tmp_path)
    assert sorted(two) == list(range(1, stop + 1))
    for step in range(1, stop + 1):
        for key, value in two[step].items():
            # OLMo's validation evaluator shards its subset by rank, so only the training and task metrics compare.
            if key.startswith(mn.TRAINING_NAMESPACES):
                assert value == pytest.approx(reference[step][key], rel=1e-4), (step, key)
    assert mn.task_key("cmp", mn.TEST_SPLIT, mn.LOSS) in two[stop]


def test_bad_inputs_fail_before_training(reference_run, tmp_path):
    save_folder = reference_run[0]
    with pytest.raises(ValueError, match="model.d_model: checkpoint 8, config 16"):
        check_checkpoint_matches(tiny(tmp_path, "model.d_model=16"), str(save_folder / f"step{STEPS}-unsharded"))
    with pytest.raises(ValueError, match="already holds checkpoints"):
        resolve_load_path(tiny(save_folder, "try_load_latest_save=false"))
    assert resolve_load_path(tiny(save_folder)) == str(save_folder / f"step{STEPS}-unsharded")
    with pytest.raises(ValueError, match="precision=amp_bf16: FSDP on the CPU needs precision=fp32"):
        check_run_settings(tiny(tmp_path, "distributed_strategy=fsdp", "precision=amp_bf16"), 1, torch.device("cpu"))
    with pytest.raises(ValueError, match="evaluators.0.data.paths.0='/nonexistent.npy'"):
        check_run_settings(tiny(tmp_path, "evaluators.0.data.paths=[/nonexistent.npy]"), 1, torch.device("cpu"))
    with pytest.raises(ValueError, match="global_train_batch_size=8: must be divisible by the world size 3"):
        check_run_settings(tiny(tmp_path), 3, torch.device("cpu"))
    with pytest.raises(ValueError, match="data.paths.0='/nonexistent.npy'"):
        tiny(tmp_path, "data.paths=[/nonexistent.npy]")
    from olmo.exceptions import OLMoConfigurationError

    with pytest.raises(OLMoConfigurationError, match="missing.yaml' does not exist"):
        load_config(str(tmp_path / "missing.yaml"), [])
    with pytest.raises(OLMoConfigurationError, match="no_such_field"):
        tiny(tmp_path, "model.no_such_field=1")


def test_train_command_dry_run_prints_the_resolved_config(tmp_path, capsys):
    import argparse

    from olmo_injection import commands

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command", required=True))
    args, unknown = parser.parse_known_args(["train", TINY, f"--save_folder={tmp_path}", "--dry_run", "--model.d_model=16"])
    assert args.accepts_overrides
    args.overrides = [u.lstrip("-") for u in unknown]  # as olmo_injection.cli does
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "d_model: 16" in out and "instances_per_token: 0.0078125" in out
    assert not (tmp_path / "config.yaml").exists()  # nothing built


if __name__ == "__main__":  # torchrun entry for the two-process test
    from olmo.torch_util import get_global_rank

    from olmo_injection.train import init_distributed

    torch.set_num_threads(1)
    folder = Path(sys.argv[1])
    init_distributed()
    train(tiny(folder, *sys.argv[2:]), extra_hooks=[InjectionRecorder(folder / f"injections-rank{get_global_rank()}.json")])


@pytest.mark.slow
def test_kill_9_loses_no_metric_logged_before_the_checkpoint_and_the_resume_records_each_step_once(
    reference_run, tmp_path
):
    import subprocess
    import time

    _, _, reference, _, _ = reference_run
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen([sys.executable, "-m", "olmo_injection.train", TINY, f"--save_folder={tmp_path}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while not (tmp_path / "step4-unsharded" / "train.pt").is_file() and proc.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # no handler runs: the record must already hold what was logged
        proc.wait()
    killed = metrics_by_step(tmp_path)
    assert set(range(1, 5)) <= set(killed)
    for step in range(1, 5):
        assert killed[step][mn.LM_TRAIN_LOSS] == pytest.approx(reference[step][mn.LM_TRAIN_LOSS], rel=1e-6)

    assert train(tiny(tmp_path)).final_step == STEPS  # resumes from step 4
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_lines = [row["_step"] for row in lines if mn.LM_TRAIN_LOSS in row]
    assert train_lines == list(range(1, STEPS + 1))  # each step once, in order: none lost, none repeated
    resumed = metrics_by_step(tmp_path)
    for step in range(1, STEPS + 1):
        assert resumed[step][mn.LM_TRAIN_LOSS] == pytest.approx(reference[step][mn.LM_TRAIN_LOSS], rel=1e-6)
