"""``benchmarks/fit_timing.py``: steps timed through OLMo's own ``fit``, called again and again on one trainer,
continue the stream without repeating a row and save nothing; the arms are the trainers a run builds; and the CPU
benchmark runs end to end on the tiny config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from olmo_injection.hooks.base import TrainingHook
from olmo_injection.hooks.grad_interference import GradInterferenceHook
from olmo_injection.hooks.task_metrics import TaskMetricsHook
from olmo_injection.tasks import build_tasks
from olmo_injection.train import fill_runtime_fields, load_config
from olmo_injection.trainer import InjectionTrainer

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))  # the scripts import it as a sibling module

import fit_timing  # noqa: E402


class Positions(TrainingHook):
    def __init__(self):
        self.steps, self.rows = [], []

    def pre_step(self, trainer, batch):
        self.steps.append(trainer.global_step)
        self.rows += batch["global_position"].tolist()


@pytest.fixture
def cfg(tmp_path):
    cfg = load_config(str(REPO / "configs" / "tiny.yaml"),
                      [f"save_folder={tmp_path}", "max_duration=1000", *fit_timing.BENCHMARK_OVERRIDES])
    fill_runtime_fields(cfg, world_size=1)
    return cfg


def test_timed_fit_times_the_steps_asked_for_and_the_stream_goes_on(cfg, one_process_group, tmp_path):
    tasks = build_tasks(cfg)
    trainer = fit_timing.build_arm("ours", cfg, tasks, torch.device("cpu"))
    seen = Positions()
    trainer.hooks.insert(0, seen)
    first, second = fit_timing.timed_fit(trainer, 2), fit_timing.timed_fit(trainer, 3)
    assert first["wall"] > 0 and second["wall"] > 0 and second["cpu"] > 0
    assert len(trainer.train_loader.marks) == 4  # the last call's 3 timed steps + the one that ends the clock
    assert seen.steps == list(range(1, 8)) and trainer.global_step == 7
    assert seen.rows == list(range(7 * cfg.global_train_batch_size))  # every row once, in order, across calls
    assert not list((tmp_path / "ours").glob("step*"))  # nothing evaluated or saved
    trainer.close()


def test_the_arms_are_olmos_trainer_and_the_ones_a_run_builds(cfg, one_process_group, tmp_path):
    from olmo.train import Trainer

    tasks = build_tasks(cfg)
    plain = fit_timing.build_arm("plain", cfg, tasks, torch.device("cpu"))
    assert type(plain) is Trainer and not hasattr(plain, "hooks")
    neurons = tmp_path / "neurons.json"
    assert fit_timing.write_task_neurons(plain, tasks[0], neurons, 4) > 0
    assert len(json.loads(neurons.read_text())["neurons"]) == 4
    ours, grad = (fit_timing.build_arm(n, cfg, tasks, torch.device("cpu"), neurons) for n in ("ours", "ours_grad"))
    assert isinstance(ours, InjectionTrainer) and isinstance(grad, InjectionTrainer)
    assert any(isinstance(h, TaskMetricsHook) for h in ours.hooks)
    assert not any(isinstance(h, GradInterferenceHook) for h in ours.hooks)
    (hook,) = [h for h in grad.hooks if isinstance(h, GradInterferenceHook)]
    assert hook.cfg.neurons_file == str(neurons) and hook.cfg.reference_interval == fit_timing.NEVER
    assert cfg.grad_interference.enabled is False and cfg.save_folder == str(tmp_path)  # the caller's cfg untouched
    rounds = fit_timing.run_blocks({"plain": plain, "ours": ours, "ours_grad": grad}, 2, 1, 1)
    summary = fit_timing.summarise(rounds, tokens_per_block=8 * 32)
    assert [list(r) for r in rounds] == [["plain", "ours", "ours_grad"]] * 2
    assert set(summary) == {"plain", "ours", "ours_grad", "ours_over_plain", "ours_grad_over_plain"}
    assert grad.step_metrics.get("grad/cos_g_ref") is not None  # the timed arm really decomposed its gradient
    for trainer in (plain, ours, grad):
        trainer.close()


@pytest.mark.slow
def test_the_cpu_benchmark_writes_its_json(tmp_path):
    out = tmp_path / "overhead.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "train_overhead.py"), "--config", str(REPO / "configs" / "tiny.yaml"),
         "--blocks", "2", "--steps-per-block", "1", "--warmup-steps", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO, env={"PATH": "/usr/bin:/bin", "WANDB_MODE": "offline"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert len(result["blocks"]) == 2 and result["wall"]["ours_over_plain"]["median_time_ratio"] > 0
    assert result["config"]["global_train_batch_size"] == 8
