"""``olmo-inject analyze ...`` end to end: a real tiny training run, then every sub-command through the real CLI.

One run of ``configs/tiny.yaml`` (module fixture: 4 steps, evaluations at 2 and 4, gradient interference on, so
every figure has data) leaves checkpoints at steps 0 and 4, task files and its metrics record. Each test runs
one sub-command with ``olmo_injection.cli.main`` (the parser ``olmo-inject`` uses, sub-commands found through the
``olmo_injection.commands`` entry point) and checks its files: present, one entry per checkpoint, finite numbers.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, List

import pytest
import torch

from analysis.das import load_direction
from olmo_injection.cli import main
from olmo_injection.neurons import load_task_neurons
from olmo_injection.train import load_config, train

pytestmark = pytest.mark.slow  # the training run and six analyses take ~30 s on one core

TINY = str(Path(__file__).parents[2] / "configs" / "tiny.yaml")
STEPS = [0, 4]  # the pre-training checkpoint and the last one
D_MODEL = 8  # configs/tiny.yaml
VALUES = 100  # values of each task (olmo_injection.tasks default)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    save_folder = tmp_path_factory.mktemp("tiny_run")
    old_mode = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = "offline"  # never the network, whatever credentials the machine has
    try:
        cfg = load_config(TINY, [f"save_folder={save_folder}", "max_duration=4", "eval_interval=2",
                                 "grad_interference.enabled=true", "grad_interference.num_task_neurons=4"])
        assert train(cfg).final_step == STEPS[-1]
    finally:
        if old_mode is None:
            os.environ.pop("WANDB_MODE", None)
        else:
            os.environ["WANDB_MODE"] = old_mode
    return save_folder


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def _analyze(*argv: str) -> None:
    assert main(["analyze", *argv]) == 0


def _per_checkpoint(path: Path, analysis: str) -> List[dict]:
    """The results of ``<analysis>.json``, checked: one per checkpoint in step order, every number finite."""
    written = json.loads(path.read_text())
    assert written["analysis"] == analysis
    assert [r["step"] for r in written["results"]] == STEPS
    numbers = list(_numbers(written))
    assert numbers and all(math.isfinite(x) for x in numbers)
    return written["results"]


def test_convert_checks_the_logits_of_every_checkpoint(run_folder, tmp_path):
    _analyze("convert", str(run_folder), "--out", str(tmp_path))
    for result in _per_checkpoint(tmp_path / "convert.json", "convert"):
        assert result["max_logit_difference"] < 1e-4


def test_das_writes_the_sweep_and_the_best_direction(run_folder, tmp_path):
    _analyze("das", str(run_folder), "--task", "cmp", "--out", str(tmp_path), "--num-train-pairs", "64",
             "--num-eval-pairs", "64", "--epochs", "1", "--batch-size", "32")
    results = _per_checkpoint(tmp_path / "das.json", "das")
    written_step0 = results[0]
    for result in results:
        assert {(r["layer"], r["position"], r["variable"]) for r in result["sweep"]} == {
            (0, 0, "tok1"), (0, 1, "tok1"), (0, 1, "tok2")}
        assert result["best_iia"] == max(r["iia"] for r in result["sweep"])
        assert all(r["pairs"] == "balanced" and r["base_answer_baseline"] == 0.5 for r in result["sweep"])
        best = next(r for r in result["sweep"] if r["iia"] == result["best_iia"])
        assert result["best_exceeds_baselines"] == (best["iia"] > best["source_value_baseline"])
        assert result["step0"]["iia"]["layer0/pos0/tok1"] == written_step0["sweep"][0]["iia"]
        direction = load_direction(Path(result["direction_file"]))["direction"]
        assert direction.shape == (D_MODEL,) and torch.isclose(direction.norm(), torch.tensor(1.0))


def test_probe_writes_r2_per_checkpoint_and_fig7_under_the_run_by_default(run_folder):
    _analyze("probe", str(run_folder), "--task", "cmp", "--num-components", str(D_MODEL))
    out = run_folder / "analysis"
    results = _per_checkpoint(out / "probe.json", "probe")
    for result in results:
        assert set(result["r2"]) == set(result["null_r2"]) == {"tok1", "tok2"}
        assert result["num_components_used"] == result["component_cap"] == D_MODEL  # min(8, 80 values // 5)
        assert result["step0"]["r2"] == results[0]["r2"]
    assert (out / "fig7_feature_presence.png").stat().st_size > 0
    rows = list(csv.DictReader((out / "fig7_feature_presence.csv").open()))
    assert [int(r["step"]) for r in rows] == STEPS
    assert all(math.isfinite(float(r["r2_tok1"])) and math.isfinite(float(r["null_r2_q95_tok1"])) for r in rows)


def test_fourier_counts_modes_over_the_frequencies_of_p(run_folder, tmp_path):
    _analyze("fourier", str(run_folder), "--task", "add", "--tau", "3", "--out", str(tmp_path))
    results = _per_checkpoint(tmp_path / "fourier.json", "fourier")
    for result in results:
        assert set(result["per_residual"]) == {"1", "2"}  # the outputs of the two blocks
        assert all(len(r["shares"]) == VALUES // 2 for r in result["per_residual"].values())
        assert result["total_modes"] == sum(len(r["modes"]) for r in result["per_residual"].values())
        assert result["total_modes_tau"] == sum(len(r["modes_tau"]) for r in result["per_residual"].values())
        assert all(r["null_threshold_ratio"] > 1 for r in result["per_residual"].values())
        assert result["step0"] == {"total_modes": results[0]["total_modes"],
                                   "total_modes_tau": results[0]["total_modes_tau"]}


def test_a_run_without_a_step0_checkpoint_says_so(run_folder, tmp_path):
    later_only = tmp_path / "later_only"
    later_only.mkdir()
    for name in ("step4-unsharded", "tasks"):
        (later_only / name).symlink_to(run_folder / name)
    _analyze("fourier", str(later_only), "--task", "add", "--out", str(tmp_path))
    written = json.loads((tmp_path / "fourier.json").read_text())
    assert [r["step0"] for r in written["results"]] == [None]
    assert "no step-0 checkpoint" in written["step0_note"]


def test_localise_writes_ablations_and_task_neuron_files(run_folder, tmp_path):
    _analyze("localise", str(run_folder), "--task", "cmp", "--out", str(tmp_path), "--num-task-neurons", "4",
             "--ablation-instances", "256", "--split", "test")
    for result in _per_checkpoint(tmp_path / "localise.json", "localise"):
        ablation = result["ablation"]
        assert len(ablation["zero_loss_increase"]) == len(ablation["mean_loss_increase"]) == 2
        assert result["task_neurons"]["neurons"] == load_task_neurons(
            tmp_path / f"task_neurons_cmp_step{result['step']}.json").neurons
    for step in STEPS:
        neurons = load_task_neurons(tmp_path / f"task_neurons_cmp_step{step}.json")
        assert len(neurons.neurons) == 4 and neurons.task == "cmp"
    assert (tmp_path / "localise_mlp_ablation_cmp.png").stat().st_size > 0
    rows = json.loads((tmp_path / "localise_mlp_ablation_cmp.json").read_text())["rows"]
    assert [(r["step"], r["layer"]) for r in rows] == [(0, 0), (0, 1), (4, 0), (4, 1)]


def test_figures_from_the_runs_metrics_record(run_folder, tmp_path):
    """The save folder's metrics.jsonl and config.yaml make every figure; the add task (one injection every
    2 steps, evaluations at 2 and 4) gives Fig. 8 one drop, the cmp task (2 instances a step) a refusal."""
    _analyze("figures", str(run_folder), "--task", "cmp", "--out", str(tmp_path / "cmp"))
    fig8 = json.loads((tmp_path / "cmp" / "fig8_retention.json").read_text())
    assert fig8["rows"] == [] and "exactly one injection" in next(iter(fig8["refused"].values()))
    assert json.loads((tmp_path / "cmp" / "fig5_phase_diagram.json").read_text())["rows"][0]["model"] == "0.404M"
    _analyze("figures", str(run_folder), "--task", "add", "--out", str(tmp_path))
    (drop,) = json.loads((tmp_path / "fig8_retention.json").read_text())["rows"]
    assert (drop["injection_step"], drop["eval_before"], drop["eval_after"]) == (3, 2, 4)
    for name in ("fig5_phase_diagram", "fig6_learning_order", "fig8_retention", "fig9_gradient_cosines",
                 "fig11_12_task_loss_vs_lm_loss_and_compute"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0, name
        rows = json.loads((tmp_path / f"{name}.json").read_text())["rows"]
        assert rows and list(csv.DictReader((tmp_path / f"{name}.csv").open())), name
        numbers = list(_numbers(rows))
        assert numbers and all(math.isfinite(x) for x in numbers), name
    fig9 = json.loads((tmp_path / "fig9_gradient_cosines.json").read_text())["rows"][0]
    assert -1 <= fig9["cos_g_injection_mean"] <= 1


def test_learning_curves_and_table_from_the_real_run(run_folder, tmp_path):
    """What the main job prints at the end, on the metrics record the tiny run wrote."""
    from analysis.learning_curves import format_learning_table, learning_curve_figure, learning_table
    from olmo_injection.metrics_record import read_metrics_record

    rows = {r["task"]: r for r in learning_table(run_folder, threshold=0.9)}
    assert set(rows) == {"cmp", "add"}
    last = read_metrics_record(run_folder)[-1]
    assert last["_step"] == STEPS[-1] and rows["cmp"]["final_step"] == STEPS[-1]
    assert rows["cmp"]["final_test_acc"] == last["task/cmp/test/acc"]
    assert rows["add"]["frequency"] == "n=1/gap=2" and rows["cmp"]["frequency"] == "7.8e-03/token"
    assert "cmp" in format_learning_table(list(rows.values()))
    curves = learning_curve_figure(run_folder, tmp_path / "learning_curves.png")
    assert {(r["task"], r["step"]) for r in curves} == {(t, s) for t in ("cmp", "add") for s in (2, 4)}


def test_bad_option_is_reported_before_any_checkpoint_is_loaded(run_folder, tmp_path, capsys):
    assert main(["analyze", "das", str(run_folder), "--task", "cmp", "--epochs", "0", "--out", str(tmp_path)]) == 2
    assert "epochs=0" in capsys.readouterr().err
    assert not (tmp_path / "das.json").exists()
