"""Every experiment command runs end to end on a tiny mixture and writes its CSV, JSON (with config) and PNG."""

import argparse
import json

import numpy as np
import pytest

from olmo_injection.synthetic import cli
from olmo_injection.synthetic.experiments.phase_diagram import measured_critical_index, predicted_critical_index

TINY = ["mixture.num_tasks=4", "mixture.block_dim=2", "training.steps=12", "training.batch_size=16",
        "training.eval_every=6", "training.device=cpu"]


def run_cli(argv, overrides):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args, unknown = parser.parse_known_args(argv)
    args.overrides = overrides
    return cli.main(args)


@pytest.mark.parametrize("name, extra, overrides", [
    ("phase-diagram", [], ["training.widths=1,3,8"]),
    ("complexity", [], ["training.widths=2,8"]),
    ("residual-control", [], ["training.widths=1,3,8"]),
    ("beta-sweep", ["--betas", "1.0,2.0"], ["training.widths=2,8"]),
    ("retention", ["--gaps", "3,6"], ["training.widths=2,6", "training.batch_size=8"]),
    ("rank-one", [], ["training.widths=1,2,3", "mixture.block_dim=1"]),
    ("long-horizon", [], ["training.widths=2,8"]),
])
def test_experiment_writes_results_with_config_and_figure(tmp_path, name, extra, overrides):
    stem = {"beta-sweep": "beta_sweep"}.get(name, name.replace("-", "_"))
    assert run_cli(["synthetic", name, "--out", str(tmp_path), "--no-progress", *extra], TINY + overrides) == 0
    record = json.loads((tmp_path / f"{stem}.json").read_text())
    assert record["config"]["mixture"]["num_tasks"] == 4 and record["summary"]
    assert (tmp_path / f"{stem}.csv").stat().st_size > 0
    assert (tmp_path / f"{stem}.png").stat().st_size > 0
    if name == "phase-diagram":  # the same runs also give Fig. 3
        assert (tmp_path / "residual_control.png").stat().st_size > 0


def test_one_neuron_decay_matches_prediction(tmp_path):
    assert run_cli(["synthetic", "one-neuron", "--out", str(tmp_path), "--gaps", "5,20"], []) == 0
    summary = json.loads((tmp_path / "one_neuron.json").read_text())["summary"]
    for gap in ("5", "20"):
        measured, predicted = (summary["per_gap"][gap][k] for k in ("measured_decay_over_gap", "predicted_decay_over_gap"))
        assert measured == pytest.approx(predicted, rel=0.05)


def test_records_write_undefined_values_as_json_null(tmp_path):
    from olmo_injection.synthetic.experiments.records import write_records

    write_records(tmp_path, "r", {"a": 1}, {"s": np.array([0.5, np.nan]), "x": np.float64("nan")}, [{"v": np.nan}])
    assert json.loads((tmp_path / "r.json").read_text())["summary"] == {"s": [0.5, None], "x": None}


def test_bad_override_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="training.widths"):
        run_cli(["synthetic", "phase-diagram", "--out", str(tmp_path)], TINY + ["training.widths=9,3"])
    assert not list(tmp_path.iterdir())


def test_critical_width_readout_by_hand():
    loss = np.array([[1.0, 1.0], [0.4, 1.0], [0.9, 0.3], [0.2, 0.2]])   # task 1 dips at row 1, rises, then stays low
    np.testing.assert_array_equal(measured_critical_index(loss, np.array([0.5, 0.5])), [3, 2])
    np.testing.assert_array_equal(measured_critical_index(loss, np.array([0.1, 0.1])), [4, 4])
    np.testing.assert_array_equal(predicted_critical_index(np.array([4, 8, 16]), np.array([3, 8, 9, 40])), [0, 1, 2, 3])


def test_the_module_stands_alone_without_olmo_or_the_trainer():
    import subprocess
    import sys

    code = ("import sys, olmo_injection.synthetic.cli, olmo_injection.synthetic.training; "
            "from olmo_injection.synthetic.experiments import phase_diagram, residual_control, retention, "
            "rank_one, long_horizon, one_neuron; "
            "print([m for m in sys.modules if m.split('.')[0] in ('olmo', 'wandb', 'pyvene', 'transformers') "
            "or m in ('olmo_injection.config', 'olmo_injection.hooks')])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_injection_trace_takes_the_peak_after_the_injection_step_and_the_decay_from_it():
    from olmo_injection.synthetic.experiments.retention import injection_trace, peak_offsets, summarise_trace

    gap = 10
    steps = [0, 9, 10, 11, 12, 14, 18, 19]
    assert set(peak_offsets(gap)) == {0, 1, 2, 4, 8}
    signal = np.array([[0.0], [0.0], [0.1], [0.3], [0.5], [0.4], [0.2], [0.1]])  # peaks 2 steps after step 10
    trace = injection_trace(steps, signal, gap)
    assert trace["steps"].tolist() == [10]
    stats = summarise_trace(trace)
    assert stats["mean_rise_per_injection"][0] == pytest.approx(0.1)
    assert stats["mean_rise_to_peak"][0] == pytest.approx(0.5)
    assert stats["mean_change_from_peak_to_next_injection"][0] == pytest.approx(-0.4)
