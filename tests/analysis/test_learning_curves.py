"""The main job's closing figure and table, on a save folder written by the project's own config and metrics
record: one line per task labelled with its frequency, and per task its final numbers and when it was learned."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from analysis.learning_curves import format_learning_table, learning_curve_figure, learning_table
from olmo_injection import metric_names as M
from olmo_injection.config import InjectionConfig, InjectionTrainConfig, ScheduleConfig, TaskConfig
from olmo_injection.metrics_record import MetricsRecord

from planted_analysis_models import tiny_model_config

TASKS = {  # name -> (schedule, test accuracy at step s of 1..10)
    "frequent": (ScheduleConfig(mode="frequency", instances_per_token=7.8e-3), lambda s: min(1.0, 0.5 + s / 10)),
    "rare": (ScheduleConfig(mode="frequency", instances_per_token=7.8e-5), lambda s: 0.5),
    "gapped": (ScheduleConfig(mode="gap", n=2, gap=5), lambda s: 0.1 * s),
}


@pytest.fixture
def save_folder(tmp_path) -> Path:
    cfg = InjectionTrainConfig(
        model=tiny_model_config(), save_folder=str(tmp_path), global_train_batch_size=8,
        injection=InjectionConfig(tasks=[TaskConfig(name=name, kind="cmp" if name != "gapped" else "add",
                                                    schedule=schedule) for name, (schedule, _) in TASKS.items()]),
    )
    cfg.save(tmp_path / "config.yaml")
    record = MetricsRecord.open(tmp_path, resume_step=None)
    for step in range(1, 11):
        record.write(step, {M.LM_TRAIN_LOSS: 5.0})
        if step % 2 == 0:
            for name, (_, accuracy) in TASKS.items():
                record.write(step, {M.task_key(name, M.TEST_SPLIT, M.ACC_LABELS): accuracy(step),
                                    M.task_key(name, M.TEST_SPLIT, M.LOSS): 1.0 - accuracy(step) / 2,
                                    M.task_key(name, M.TRAIN_SPLIT, M.ACC_LABELS): 1.0})
    record.close()
    return tmp_path


def test_table_gives_final_numbers_and_the_step_each_task_was_learned(save_folder):
    rows = {r["task"]: r for r in learning_table(save_folder, threshold=0.9)}
    assert rows["frequent"]["learned_step"] == 4 and rows["rare"]["learned_step"] is None
    assert rows["gapped"]["learned_step"] == 10
    assert rows["frequent"]["frequency"] == "7.8e-03/token" and rows["gapped"]["frequency"] == "n=2/gap=5"
    assert rows["gapped"]["instances_per_token"] == pytest.approx(2 / (5 * 8 * 16))
    assert rows["gapped"]["kind"] == "add"
    assert rows["rare"]["final_step"] == 10 and rows["rare"]["final_test_acc"] == 0.5
    assert rows["rare"]["final_test_loss"] == pytest.approx(0.75) and rows["rare"]["final_train_acc"] == 1.0
    text = format_learning_table(list(rows.values()))
    lines = text.splitlines()
    assert "learned (acc >= 0.9)" in lines[0] and len(lines) == 2 + len(TASKS)
    assert "never" in next(line for line in lines if line.startswith("rare"))
    assert "step 4" in next(line for line in lines if line.startswith("frequent"))
    with pytest.raises(ValueError, match="threshold=1.5"):
        learning_table(save_folder, threshold=1.5)


def test_figure_has_one_line_per_task_labelled_with_its_frequency(save_folder, tmp_path):
    out = tmp_path / "figs" / "learning_curves.png"
    rows = learning_curve_figure(save_folder, out)
    assert out.stat().st_size > 0
    assert {(r["task"], r["step"]) for r in rows} == {(t, s) for t in TASKS for s in range(2, 11, 2)}
    assert next(r for r in rows if r["task"] == "frequent" and r["step"] == 4)["test_acc"] == pytest.approx(0.9)
    assert list(csv.DictReader(out.with_suffix(".csv").open()))[0].keys() >= {"task", "step", "test_acc"}
    written = json.loads(out.with_suffix(".json").read_text())
    assert [t["name"] for t in written["tasks"]] == list(TASKS) and written["messages"] == []
    assert written["legend"] == ["frequent (cmp, 7.8e-03/token)", "rare (cmp, 7.8e-05/token)",
                                 "gapped (add, n=2/gap=5)"]


def test_a_run_without_evaluations_yet_draws_a_message(save_folder, tmp_path):
    (save_folder / "metrics.jsonl").write_text(json.dumps({"_step": 1, M.LM_TRAIN_LOSS: 5.0}) + "\n")
    assert learning_curve_figure(save_folder, tmp_path / "curves.png") == []
    messages = json.loads((tmp_path / "curves.json").read_text())["messages"]
    assert len(messages) == 2 and all("no task evaluations" in m for m in messages)
    assert all(r["final_test_acc"] is None and r["learned_step"] is None for r in learning_table(save_folder))
    (save_folder / "metrics.jsonl").unlink()
    with pytest.raises(ValueError, match="no metrics record"):
        learning_table(save_folder)
