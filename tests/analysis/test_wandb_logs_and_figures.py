"""The offline-run reader gives back what real wandb (offline mode) logged, and the figures are built from it."""

from __future__ import annotations

import csv
import json

import pytest
import wandb

from analysis import figures
from analysis.run_table import model_params
from analysis.wandb_logs import find_offline_runs, read_offline_run
from olmo_injection import metric_names as M

from planted_analysis_models import tiny_model_config


def _log_run(folder, name, d_model, instances_per_token, gap=None, steps=6):
    schedule = {"mode": "gap", "n": gap, "gap": gap} if gap else {"instances_per_token": instances_per_token}
    config = {
        "model": {"d_model": d_model, "n_layers": 2, "n_heads": 4, "mlp_hidden_size": 4 * d_model,
                  "vocab_size": 128, "embedding_size": 128, "weight_tying": False, "max_sequence_length": 16},
        "global_train_batch_size": 8,
        "injection": {"tasks": [{"name": "cmp", "kind": "cmp", "schedule": schedule}]},
    }
    run = wandb.init(project="analysis-test", dir=str(folder), name=name, config=config, mode="offline")
    for step in range(steps):
        run.log(
            {
                M.task_key("cmp", M.TEST_SPLIT, M.LOSS): 1.0 / (step + 1),
                M.task_key("cmp", M.TRAIN_SPLIT, M.LOSS): 0.5 / (step + 1),
                M.task_key("cmp", M.TEST_SPLIT, M.ACC_LABELS): step / steps,
                M.task_key("cmp", M.REFERENCE, M.ACC_LABELS): min(1.0, 2 * step / steps),
                M.task_key("cmp", M.TRAIN_STEP, M.INJECTED_THIS_STEP): float(step % 2 == 0),
                M.LM_TRAIN_LOSS: 5.0 - step,
                M.GRAD_COS_G_REF: 0.1 * step, M.GRAD_COS_T_REF: 0.2, M.GRAD_COS_NT_REF: -0.1,
                M.GRAD_INJECTED: float(step % 2 == 0),
            },
            step=step * 10,
        )
    run.finish()


@pytest.fixture(scope="module")
def logged_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    _log_run(folder, "small", 16, 1e-3)
    _log_run(folder, "large", 32, 1e-4)
    _log_run(folder, "gap10", 16, None, gap=10)
    return folder


def test_reader_returns_what_was_logged(logged_runs):
    runs = {r.name: r for r in map(read_offline_run, find_offline_runs(logged_runs))}
    assert set(runs) == {"small", "large", "gap10"}
    steps, losses = runs["small"].series(M.task_key("cmp", M.TEST_SPLIT, M.LOSS))
    assert steps == [0, 10, 20, 30, 40, 50]
    assert losses == pytest.approx([1.0 / (s + 1) for s in range(6)])
    assert runs["large"].config["model"]["d_model"] == 32
    assert runs["gap10"].config["injection"]["tasks"][0]["schedule"]["gap"] == 10


def test_all_log_figures_write_png_csv_json(logged_runs, tmp_path):
    runs = [read_offline_run(p) for p in find_offline_runs(logged_runs)]
    out = figures.all_log_figures(runs, "cmp", tmp_path)
    for name in ("fig5_phase_diagram", "fig6_learning_order", "fig8_retention", "fig9_gradient_cosines",
                 "fig11_12_task_loss_vs_lm_loss_and_compute"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0
        assert json.loads((tmp_path / f"{name}.json").read_text())["rows"]
        assert list(csv.DictReader((tmp_path / f"{name}.csv").open()))
    # Injections at steps 0, 20, 40; the loss falls 1/(k+1) -> 1/(k+2) across each.
    drops = [r["loss_drop"] for r in out["fig8"] if r["run"] == "small"]
    assert drops == pytest.approx([1 - 1 / 2, 1 / 3 - 1 / 4, 1 / 5 - 1 / 6])
    fig9 = {r["run"]: r for r in out["fig9"]}
    assert fig9["small"]["cos_g_injection_mean"] == pytest.approx(0.2)  # steps 0, 20, 40 -> 0, .2, .4
    fig6 = {r["run"]: r for r in out["fig6"]}
    assert fig6["small"]["reference_learned_step"] == 30 and fig6["small"]["task_learned_step"] is None
    gap_row = next(r for r in out["fig5"] if r["run"] == "gap10")
    assert gap_row["instances_per_token"] == pytest.approx(10 / (10 * 8 * 16))


def test_parameter_count_matches_olmo():
    from olmo.model import OLMo

    cfg = tiny_model_config()
    logged = {k: getattr(cfg, k) for k in ("d_model", "n_layers", "n_heads", "mlp_hidden_size", "vocab_size",
                                           "embedding_size", "weight_tying")}
    assert model_params(logged) == OLMo(cfg).num_params()
    paper_4m = dict(d_model=64, n_layers=8, n_heads=8, mlp_hidden_size=512, vocab_size=50280,
                    embedding_size=50304, weight_tying=False)
    assert model_params(paper_4m) == 6_963_200
