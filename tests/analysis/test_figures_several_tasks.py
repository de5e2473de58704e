"""`analyze figures --task A B`: a run that injects several tasks (configs/default.yaml: three frequencies in one
run) gives one row per task it injects, so Fig. 5 fills one column per frequency and Fig. 6 one line per task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.run_logs import read_run_folder
from olmo_injection import metric_names as M
from olmo_injection.cli import main
from olmo_injection.config import InjectionConfig, InjectionTrainConfig, ScheduleConfig, TaskConfig
from olmo_injection.metrics_record import MetricsRecord

from planted_analysis_models import tiny_model_config

GLOBAL_BATCH, SEQ_LEN, STEPS = 8, 16, 6
FINAL_ACC = {"cmp_frequent": 0.95, "cmp_rare": 0.6}
RATE = {"cmp_frequent": 2 / (GLOBAL_BATCH * SEQ_LEN), "cmp_rare": 0.25 / (GLOBAL_BATCH * SEQ_LEN)}


def write_two_task_run(folder: Path) -> Path:
    tasks = [TaskConfig(name=name, kind="cmp", seed=i, schedule=ScheduleConfig(mode="frequency",
                                                                               instances_per_token=RATE[name]))
             for i, name in enumerate(FINAL_ACC)]
    cfg = InjectionTrainConfig(model=tiny_model_config(d_model=16, mlp_hidden_size=64, max_sequence_length=SEQ_LEN),
                               save_folder=str(folder), global_train_batch_size=GLOBAL_BATCH, run_name="two",
                               injection=InjectionConfig(tasks=tasks))
    folder.mkdir(parents=True)
    cfg.save(folder / "config.yaml")
    record = MetricsRecord.open(folder, resume_step=None)
    for step in range(1, STEPS + 1):
        record.write(step, {M.task_key(name, split, metric): value
                            for name, acc in FINAL_ACC.items()
                            for split, metric, value in ((M.TEST_SPLIT, M.ACC_LABELS, acc * step / STEPS),
                                                         (M.TEST_SPLIT, M.LOSS, 1.0 - acc * step / STEPS),
                                                         (M.TRAIN_SPLIT, M.LOSS, 0.5))})
    record.close()
    return folder


def test_several_tasks_give_one_row_each(tmp_path):
    run = write_two_task_run(tmp_path / "two")
    out = tmp_path / "figures"
    assert main(["analyze", "figures", str(run), "--task", "cmp_frequent", "cmp_rare", "--out", str(out)]) == 0
    fig5 = json.loads((out / "fig5_phase_diagram.json").read_text())["rows"]
    assert {r["task"]: r["test_acc"] for r in fig5} == pytest.approx(FINAL_ACC)
    assert {r["task"]: r["instances_per_token"] for r in fig5} == pytest.approx(RATE)
    fig6 = json.loads((out / "fig6_learning_order.json").read_text())["rows"]
    assert {r["task"]: r["task_learned_step"] for r in fig6} == {"cmp_frequent": STEPS, "cmp_rare": None}
    # One name keeps the one-task contract: the same run, one row.
    assert main(["analyze", "figures", str(run), "--task", "cmp_rare", "--out", str(tmp_path / "one")]) == 0
    one = json.loads((tmp_path / "one" / "fig5_phase_diagram.json").read_text())["rows"]
    assert [r["test_acc"] for r in one] == pytest.approx([FINAL_ACC["cmp_rare"]]) and read_run_folder(run).name == "two"
