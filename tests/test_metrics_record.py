"""The run's own metrics record: append, cut back on resume, torn lines, and a run whose wandb cannot start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from olmo_injection import metric_names as mn
from olmo_injection.metrics_record import METRICS_RECORD_FILE, MetricsRecord, metrics_by_step, read_metrics_record

TINY = str(Path(__file__).parents[1] / "configs" / "tiny.yaml")


def test_lines_of_one_step_merge_and_non_finite_values_are_null(tmp_path):
    record = MetricsRecord.open(tmp_path, resume_step=None)
    record.write(1, {"train/loss": 2.0})
    record.write(1, {"eval/loss": 3.0})
    record.write(2, {"train/loss": float("nan")})
    record.close()
    assert read_metrics_record(tmp_path) == [
        {"_step": 1, "train/loss": 2.0, "eval/loss": 3.0}, {"_step": 2, "train/loss": None}]


def test_resume_cuts_the_record_back_to_the_checkpoint_step_and_drops_a_torn_line(tmp_path):
    record = MetricsRecord.open(tmp_path, resume_step=None)
    for step in range(1, 6):
        record.write(step, {"x": float(step)})
    record.close()
    with open(tmp_path / METRICS_RECORD_FILE, "a") as f:
        f.write('{"_step": 6, "x": ')  # a kill in the middle of a write
    resumed = MetricsRecord.open(tmp_path, resume_step=3)
    resumed.write(4, {"x": 40.0})
    resumed.close()
    assert {s: r["x"] for s, r in metrics_by_step(tmp_path).items()} == {1: 1.0, 2: 2.0, 3: 3.0, 4: 40.0}


def test_a_fresh_run_starts_an_empty_record(tmp_path):
    (tmp_path / METRICS_RECORD_FILE).write_text(json.dumps({"_step": 9, "x": 1.0}) + "\n")
    MetricsRecord.open(tmp_path, resume_step=None).close()
    assert read_metrics_record(tmp_path) == []


def test_a_missing_record_names_its_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / METRICS_RECORD_FILE)):
        read_metrics_record(tmp_path)


@pytest.mark.slow
def test_a_run_whose_wandb_cannot_start_records_every_metric(tmp_path, monkeypatch):
    from olmo_injection.train import load_config, train

    monkeypatch.setenv("WANDB_MODE", "offline")
    (tmp_path / "wandb").write_text("a file where wandb wants its folder\n")  # wandb cannot start at all
    result = train(load_config(TINY, [f"save_folder={tmp_path}", "max_duration=4", "eval_interval=2"]))
    assert result.final_step == 4 and result.wandb_dir is None
    rows = metrics_by_step(tmp_path)
    assert sorted(rows) == [1, 2, 3, 4]
    assert all(mn.LM_TRAIN_LOSS in rows[s] for s in rows)
    assert all(mn.task_key("cmp", mn.TEST_SPLIT, mn.ACC_LABELS) in rows[s] for s in (2, 4))
