"""Runs are read from their save folders (``config.yaml`` + ``metrics.jsonl``, written by the project's own
config and metrics-record classes), and the figures built from them are right: model names from the config,
values in heat-map cells, Fig. 8 across single injections only, and a message wherever a panel has no data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from olmo.model import OLMo

from analysis import figures
from analysis.run_logs import find_run_folders, read_run_folder
from analysis.run_table import model_params, model_size
from olmo_injection import metric_names as M
from olmo_injection.cli import main
from olmo_injection.config import InjectionConfig, InjectionTrainConfig, ScheduleConfig, TaskConfig
from olmo_injection.metrics_record import MetricsRecord

from planted_analysis_models import tiny_model_config

GLOBAL_BATCH, SEQ_LEN = 8, 16
STEPS = 30
EVAL_EVERY = 2
GAP_INJECTIONS = [5, 15, 25]  # n=1, gap=10, offset=4: batches 4, 14, 24 are trained at steps 5, 15, 25


def _gap_loss(step: int) -> float:
    """Test loss of the gap run: falls by 0.5 at each injection, then rises 0.01 a step (forgetting)."""
    done = [s for s in GAP_INJECTIONS if s <= step]
    return 3.0 - 0.5 * len(done) + 0.01 * (step - (done[-1] if done else 0))


def write_run(folder: Path, name: str, d_model: int, schedule: ScheduleConfig, grad: bool = True) -> Path:
    """A save folder as `olmo-inject train` leaves it: the config saved by InjectionTrainConfig, the metrics
    by MetricsRecord (training metrics every step, task evaluations every EVAL_EVERY steps, as separate lines)."""
    save_folder = folder / name
    save_folder.mkdir(parents=True)
    cfg = InjectionTrainConfig(
        model=tiny_model_config(d_model=d_model, mlp_hidden_size=4 * d_model, max_sequence_length=SEQ_LEN),
        save_folder=str(save_folder), global_train_batch_size=GLOBAL_BATCH, run_name=name,
        injection=InjectionConfig(tasks=[TaskConfig(name="cmp", kind="cmp", schedule=schedule)]),
    )
    cfg.save(save_folder / "config.yaml")
    record = MetricsRecord.open(save_folder, resume_step=None)
    for step in range(1, STEPS + 1):
        if schedule.mode == "gap":
            injected = float(step in GAP_INJECTIONS)
            loss = _gap_loss(step)
        else:
            injected, loss = 2.0, 2.0 / step
        seen = sum(2.0 if schedule.mode != "gap" else float(s in GAP_INJECTIONS) for s in range(1, step + 1))
        train = {M.task_key("cmp", M.TRAIN_STEP, M.INJECTED_THIS_STEP): injected,
                 M.task_key("cmp", M.TRAIN_STEP, M.INSTANCES_SEEN): seen, M.LM_TRAIN_LOSS: 5.0 - step / 10}
        if grad:
            train.update({M.GRAD_COS_G_REF: 0.01 * step, M.GRAD_COS_T_REF: 0.2, M.GRAD_COS_NT_REF: -0.1,
                          M.GRAD_INJECTED: injected})
        record.write(step, train)
        if step % EVAL_EVERY == 0:
            record.write(step, {M.task_key("cmp", M.TEST_SPLIT, M.LOSS): loss,
                                M.task_key("cmp", M.TRAIN_SPLIT, M.LOSS): loss / 2,
                                M.task_key("cmp", M.TEST_SPLIT, M.ACC_LABELS): step / STEPS,
                                M.task_key("cmp", M.REFERENCE, M.ACC_LABELS): min(1.0, 2 * step / STEPS)})
    record.close()
    return save_folder


FREQUENT = ScheduleConfig(mode="frequency", instances_per_token=2 / (GLOBAL_BATCH * SEQ_LEN))
GAP10 = ScheduleConfig(mode="gap", n=1, gap=10, offset=4)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sweep")
    write_run(folder, "small", 16, FREQUENT)
    write_run(folder / "nested", "large", 32, FREQUENT, grad=False)
    write_run(folder, "gap10", 16, GAP10)
    (folder / "small" / "step4-unsharded").mkdir()  # a checkpoint directory holds a config.yaml too
    (folder / "small" / "step4-unsharded" / "config.yaml").write_text("model: {}\n")
    return folder


def test_reader_returns_what_was_logged(sweep):
    runs = {r.name: r for r in map(read_run_folder, find_run_folders(sweep))}
    assert set(runs) == {"small", "large", "gap10"}
    steps, losses = runs["gap10"].series(M.task_key("cmp", M.TEST_SPLIT, M.LOSS))
    assert steps == list(range(2, STEPS + 1, 2))
    assert losses == pytest.approx([_gap_loss(s) for s in steps])
    assert [row["_step"] for row in runs["small"].history] == list(range(1, STEPS + 1))  # lines merged per step
    assert runs["large"].config["model"]["d_model"] == 32
    assert runs["gap10"].config["injection"]["tasks"][0]["schedule"]["gap"] == 10
    assert runs["small"].summary[M.task_key("cmp", M.TEST_SPLIT, M.ACC_LABELS)] == 1.0


def test_a_folder_without_a_run_is_named(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("model: {d_model: 8}\n")
    with pytest.raises(ValueError, match="metrics.jsonl: no metrics record"):
        read_run_folder(tmp_path)
    assert main(["analyze", "figures", str(tmp_path), "--task", "cmp", "--out", str(tmp_path / "f")]) == 2
    assert "holds no save folder (config.yaml + metrics.jsonl)" in capsys.readouterr().err


def test_model_size_is_counted_by_olmo_and_named_from_the_ladder():
    with_biases = tiny_model_config(include_bias=True, layer_norm_with_affine=True, weight_tying=True)
    logged = {k: v for k, v in vars(with_biases).items()}
    assert model_params(logged) == OLMo(with_biases).num_params()  # biases and affine norms counted
    paper_4m = tiny_model_config(d_model=64, n_layers=8, n_heads=8, mlp_hidden_size=512, vocab_size=50280,
                                 embedding_size=50304, max_sequence_length=4096)
    assert model_params(vars(paper_4m)) == 6_963_200 and model_size(vars(paper_4m)) == "4M"


def test_heat_map_prints_each_value_in_its_cell():
    fig, ax = plt.subplots()
    figures.heat_map(ax, np.array([[0.5, np.nan], [0.12345, 2.0]]), ["a", "b"], ["x", "y"])
    assert sorted(t.get_text() for t in ax.texts) == ["0.123", "0.5", "2", "n/a"]
    plt.close(fig)


def test_all_log_figures_write_png_csv_json(sweep, tmp_path):
    runs = [read_run_folder(p) for p in find_run_folders(sweep)]
    out = figures.all_log_figures(runs, "cmp", tmp_path)
    for name in ("fig5_phase_diagram", "fig6_learning_order", "fig8_retention", "fig9_gradient_cosines",
                 "fig11_12_task_loss_vs_lm_loss_and_compute"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0
        assert json.loads((tmp_path / f"{name}.json").read_text())["rows"]
        assert list(csv.DictReader((tmp_path / f"{name}.csv").open()))
    fig5 = {r["run"]: r for r in out["fig5"]}
    assert fig5["gap10"]["instances_per_token"] == pytest.approx(1 / (10 * GLOBAL_BATCH * SEQ_LEN))
    assert fig5["small"]["model"] == model_size(read_run_folder(sweep / "small").config["model"])
    fig6 = {r["run"]: r for r in out["fig6"]}
    assert fig6["small"]["reference_learned_step"] == 14 and fig6["small"]["task_learned_step"] == 28
    fig9 = {r["run"]: r for r in out["fig9"]}
    assert fig9["small"]["cos_g_injection_mean"] == pytest.approx(0.155)  # every step is an injection step
    assert fig9["large"]["cos_g_injection_mean"] is None and "gradient interference was off" in fig9["large"]["note"]


def test_retention_measures_each_single_injection_and_refuses_frequency_runs(sweep, tmp_path):
    runs = [read_run_folder(p) for p in find_run_folders(sweep)]
    rows = figures.retention(runs, "cmp", tmp_path)
    assert [r["injection_step"] for r in rows] == GAP_INJECTIONS and {r["run"] for r in rows} == {"gap10"}
    for r in rows:  # the evaluations just before and just after the injection's update
        assert (r["eval_before"], r["eval_after"]) == (r["injection_step"] - 1, r["injection_step"] + 1)
        assert r["loss_drop"] == pytest.approx(_gap_loss(r["eval_before"]) - _gap_loss(r["eval_after"]))
    # Forgetting until the evaluation before the next injection: 0.01 a step over 8 steps (6 -> 14, 16 -> 24).
    assert [r["rebound"] for r in rows[:2]] == pytest.approx([0.08, 0.08])
    refused = json.loads((tmp_path / "fig8_retention.json").read_text())["refused"]
    assert set(refused) == {"small", "large"} and "exactly one injection" in refused["small"]


def test_empty_panels_say_why(sweep, tmp_path):
    frequency_only = [read_run_folder(sweep / "small"), read_run_folder(sweep / "nested" / "large")]
    figures.learning_order(frequency_only, "cmp", tmp_path)
    (message,) = json.loads((tmp_path / "fig6_learning_order.json").read_text())["messages"]
    assert "no gap-mode run" in message
    figures.gradient_cosines(frequency_only[1:], tmp_path)
    (message,) = json.loads((tmp_path / "fig9_gradient_cosines.json").read_text())["messages"]
    assert "gradient interference was off" in message
    figures.retention(frequency_only, "cmp", tmp_path)
    messages = json.loads((tmp_path / "fig8_retention.json").read_text())["messages"]
    assert any("refused" in m for m in messages)
    figures.gradient_cosines([read_run_folder(sweep / "small")], tmp_path)  # with data: no message
    assert json.loads((tmp_path / "fig9_gradient_cosines.json").read_text())["messages"] == []


def test_figures_command_reads_save_folders(sweep, tmp_path):
    assert main(["analyze", "figures", str(sweep), "--task", "cmp", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "fig5_phase_diagram.json").read_text())["rows"]
    assert sorted(r["run"] for r in rows) == ["gap10", "large", "small"]
