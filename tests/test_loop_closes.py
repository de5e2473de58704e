"""The loop closes: a tiny model learns a tiny injected task, and the analyses see on its checkpoint the feature
that its step-0 checkpoint does not have.

``configs/tiny_learns.yaml`` (2 layers, 64 wide, 8-token rows, one 8-value comparison task in half the rows) is
trained through the real entry point (~1 min on two cores); then the probe and DAS run through the real
``olmo-inject analyze`` CLI on the step-0 and final checkpoints, and the learning table reads the run's record.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.learning_curves import learning_table
from olmo_injection.cli import main
from olmo_injection.train import load_config, train

pytestmark = pytest.mark.slow

CONFIG = str(Path(__file__).parents[1] / "configs" / "tiny_learns.yaml")
FINAL = 400


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory, monkeypatch_module) -> Path:
    monkeypatch_module.setenv("WANDB_MODE", "offline")
    save_folder = tmp_path_factory.mktemp("tiny_learns")
    assert train(load_config(CONFIG, [f"save_folder={save_folder}"])).final_step == FINAL
    return save_folder


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _final_result(save_folder: Path, analysis: str) -> dict:
    out = save_folder / f"analysis_{analysis}"
    assert main(["analyze", analysis, str(save_folder), "--task", "cmp", "--out", str(out)]) == 0
    results = json.loads((out / f"{analysis}.json").read_text())["results"]
    assert [r["step"] for r in results] == [0, FINAL]
    return results[-1]


def test_the_tiny_task_is_learned(learned_run):
    (row,) = learning_table(learned_run, threshold=0.9)
    assert row["final_train_acc"] >= 0.95
    assert row["final_test_acc"] >= 0.8  # it generalises to pairs it never saw
    assert row["learned_step"] is not None and row["learned_step"] > 50  # not at the first evaluation: it was learned


def test_probe_reads_the_order_value_only_after_learning(learned_run):
    result = _final_result(learned_run, "probe")
    for position in ("tok1", "tok2"):
        assert result["r2"][position] > max(0.5, result["null_r2"][position]["q95"])
        assert result["step0"]["r2"][position] <= result["step0"]["null_r2_q95"][position]


def test_das_finds_the_order_value_only_after_learning(learned_run):
    result = _final_result(learned_run, "das")
    assert result["best_exceeds_baselines"] is True
    assert result["best_iia"] > 0.9
    assert result["step0"]["best_iia"] < result["best_iia"] - 0.15
