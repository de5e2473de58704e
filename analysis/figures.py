"""The paper's OLMo figures for a set of runs: each function writes ``<name>.png``, ``<name>.csv`` (the numbers
plotted) and ``<name>.json`` (the numbers plus what made them) into ``out_dir`` and returns the rows.

Figures 5, 6, 8, 9, 11, 12 read the runs' logged metrics (``RunLog``s from ``wandb_logs``); figure 7 reads the
feature-presence results that ``olmo-inject analyze probe`` writes per checkpoint.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from olmo_injection import metric_names as M  # noqa: E402

from .run_table import run_facts  # noqa: E402
from .wandb_logs import RunLog  # noqa: E402

Rows = List[Dict[str, Any]]


def _write(fig, rows: Rows, out_dir: Path, name: str, meta: Dict[str, Any]) -> Rows:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}.png", dpi=120)
    plt.close(fig)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with (out_dir / f"{name}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / f"{name}.json").write_text(json.dumps({"figure": name, **meta, "rows": rows}, indent=1, default=str))
    return rows


def _last(run: RunLog, key: str) -> Optional[float]:
    _, values = run.series(key)
    return values[-1] if values else None


def phase_diagram(runs: Sequence[RunLog], task: str, out_dir: Path) -> Rows:
    """Fig. 5: final task train loss and test accuracy over model size x injection frequency."""
    rows = []
    for run in runs:
        rows.append(
            {
                **run_facts(run, task),
                "train_loss": _last(run, M.task_key(task, M.TRAIN_SPLIT, M.LOSS)),
                "test_acc": _last(run, M.task_key(task, M.TEST_SPLIT, M.ACC_LABELS)),
            }
        )
    sizes = sorted({r["params"] for r in rows})
    freqs = sorted({r["instances_per_token"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("train_loss", "test_acc")):
        grid = np.full((len(sizes), len(freqs)), np.nan)
        for r in rows:
            if r[metric] is not None:
                grid[sizes.index(r["params"]), freqs.index(r["instances_per_token"])] = r[metric]
        image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(freqs)), [f"{f:.1e}" for f in freqs], rotation=45)
        ax.set_yticks(range(len(sizes)), [f"{s / 1e6:.0f}M" for s in sizes])
        ax.set_xlabel("instances per token")
        ax.set_ylabel("parameters")
        ax.set_title(f"{task}: {metric}")
        fig.colorbar(image, ax=ax)
    return _write(fig, rows, out_dir, "fig5_phase_diagram", {"task": task})


def _first_step_reaching(run: RunLog, key: str, threshold: float) -> Optional[int]:
    for step, value in zip(*run.series(key)):
        if value >= threshold:
            return step
    return None


def learning_order(runs: Sequence[RunLog], task: str, out_dir: Path, threshold: float = 0.9) -> Rows:
    """Fig. 6: when the injected task and its natural-text reference are learned, and the gap effect.

    Left: test accuracy of the task and reference accuracy over steps. Right: final task test loss against the
    gap (gap-mode runs), one line per model size. Rows: first step each accuracy reaches ``threshold``.
    """
    task_acc = M.task_key(task, M.TEST_SPLIT, M.ACC_LABELS)
    ref_acc = M.task_key(task, M.REFERENCE, M.ACC_LABELS)
    test_loss = M.task_key(task, M.TEST_SPLIT, M.LOSS)
    rows = []
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for run in runs:
        facts = run_facts(run, task)
        rows.append(
            {
                **facts,
                "task_learned_step": _first_step_reaching(run, task_acc, threshold),
                "reference_learned_step": _first_step_reaching(run, ref_acc, threshold),
                "final_test_loss": _last(run, test_loss),
            }
        )
        left.plot(*run.series(task_acc), label=f"{run.name} task")
        left.plot(*run.series(ref_acc), "--", label=f"{run.name} reference")
    left.axhline(threshold, color="grey", lw=0.5)
    left.set_xlabel("step")
    left.set_ylabel("accuracy")
    left.legend(fontsize=6)
    gap_rows = [r for r in rows if r["gap"] is not None and r["final_test_loss"] is not None]
    for size in sorted({r["params"] for r in gap_rows}):
        points = sorted((r["gap"], r["final_test_loss"]) for r in gap_rows if r["params"] == size)
        right.plot(*zip(*points), "o-", label=f"{size / 1e6:.0f}M")
    right.set_xscale("log")
    right.set_xlabel("gap N (N instances every N batches)")
    right.set_ylabel("final task test loss")
    if gap_rows:  # runs without a gap schedule leave this panel empty
        right.legend(fontsize=6)
    return _write(fig, rows, out_dir, "fig6_learning_order", {"task": task, "threshold": threshold})


def feature_presence_over_checkpoints(results: Sequence[Dict[str, Any]], out_dir: Path) -> Rows:
    """Fig. 7: probe R^2 per position against the checkpoint step; ``results`` are rows with ``run``, ``step``
    and ``r2`` (``{"tok1": .., "tok2": ..}``) as ``olmo-inject analyze probe`` writes them."""
    rows = [{"run": r["run"], "step": r["step"], **{f"r2_{k}": v for k, v in r["r2"].items()}} for r in results]
    fig, ax = plt.subplots(figsize=(5, 4))
    for run in sorted({r["run"] for r in rows}):
        mine = sorted((r for r in rows if r["run"] == run), key=lambda r: r["step"])
        for key in [k for k in mine[0] if k.startswith("r2_")]:
            ax.plot([r["step"] for r in mine], [r[key] for r in mine], "o-", label=f"{run} {key[3:]}")
    ax.set_xlabel("step")
    ax.set_ylabel("order probe R^2 (top-50 PCs)")
    ax.legend(fontsize=6)
    return _write(fig, rows, out_dir, "fig7_feature_presence", {})


def _injection_steps(run: RunLog, task: str) -> List[int]:
    steps, flags = run.series(M.task_key(task, M.TRAIN_STEP, M.INJECTED_THIS_STEP))
    return [s for s, f in zip(steps, flags) if f]


def retention(runs: Sequence[RunLog], task: str, out_dir: Path) -> Rows:
    """Fig. 8: the drop of the task's test loss across each injection (last value at or before the injection
    step minus the first value after it), against the injection's step."""
    key = M.task_key(task, M.TEST_SPLIT, M.LOSS)
    rows = []
    fig, ax = plt.subplots(figsize=(5, 4))
    for run in runs:
        steps, losses = (np.asarray(a, dtype=float) for a in run.series(key))
        mine = []
        for step in _injection_steps(run, task):
            before, after = np.flatnonzero(steps <= step), np.flatnonzero(steps > step)
            if len(before) and len(after):
                drop = losses[before[-1]] - losses[after[0]]
                mine.append({"run": run.name, "injection_step": step, "loss_drop": float(drop)})
        rows += mine
        ax.plot([r["injection_step"] for r in mine], [r["loss_drop"] for r in mine], "o-", label=run.name)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("injection step")
    ax.set_ylabel("task test-loss drop across the injection")
    ax.legend(fontsize=6)
    return _write(fig, rows, out_dir, "fig8_retention", {"task": task})


def gradient_cosines(runs: Sequence[RunLog], out_dir: Path) -> Rows:
    """Fig. 9: cos(g, g_r), cos(g_t, g_r), cos(g_nt, g_r) over steps; rows: mean and std at injection steps
    (``grad/injected`` true) and elsewhere, per run."""
    keys = {"g": M.GRAD_COS_G_REF, "t": M.GRAD_COS_T_REF, "nt": M.GRAD_COS_NT_REF}
    rows = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for run in runs:
        injected = {s for s, f in zip(*run.series(M.GRAD_INJECTED)) if f}
        row: Dict[str, Any] = {"run": run.name}
        for ax, (short, key) in zip(axes, keys.items()):
            steps, values = run.series(key)
            ax.plot(steps, values, lw=0.7, label=run.name)
            ax.set_title(key)
            ax.set_xlabel("step")
            for where, chosen in (("injection", [v for s, v in zip(steps, values) if s in injected]),
                                  ("other", [v for s, v in zip(steps, values) if s not in injected])):
                row[f"cos_{short}_{where}_mean"] = float(np.mean(chosen)) if chosen else None
                row[f"cos_{short}_{where}_std"] = float(np.std(chosen)) if chosen else None
        rows.append(row)
    axes[0].legend(fontsize=6)
    return _write(fig, rows, out_dir, "fig9_gradient_cosines", {})


def task_loss_vs_lm_loss_and_compute(runs: Sequence[RunLog], task: str, out_dir: Path) -> Rows:
    """Figs. 11 and 12: task test loss against the LM training loss at the same step, and against the estimated
    compute 6 N D (N parameters, D tokens seen = step x tokens per step)."""
    task_loss_key = M.task_key(task, M.TEST_SPLIT, M.LOSS)
    rows = []
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for run in runs:
        facts = run_facts(run, task)
        lm = dict(zip(*run.series(M.LM_TRAIN_LOSS)))
        mine = [
            {
                "run": run.name,
                "step": step,
                "task_loss": loss,
                "lm_loss": lm.get(step),
                "compute_flops": 6.0 * facts["params"] * step * facts["tokens_per_step"],
            }
            for step, loss in zip(*run.series(task_loss_key))
        ]
        rows += mine
        paired = [r for r in mine if r["lm_loss"] is not None]
        left.plot([r["lm_loss"] for r in paired], [r["task_loss"] for r in paired], ".-", label=run.name)
        right.plot([r["compute_flops"] for r in mine], [r["task_loss"] for r in mine], ".-", label=run.name)
    left.invert_xaxis()
    left.set_xlabel("LM train loss")
    right.set_xscale("log")
    right.set_xlabel("compute 6ND (FLOPs)")
    for ax in (left, right):
        ax.set_ylabel("task test loss")
        ax.legend(fontsize=6)
    return _write(fig, rows, out_dir, "fig11_12_task_loss_vs_lm_loss_and_compute", {"task": task})


def all_log_figures(runs: Sequence[RunLog], task: str, out_dir: Path) -> Dict[str, Rows]:
    """Every figure that needs only the runs' logs (5, 6, 8, 9, 11/12)."""
    return {
        "fig5": phase_diagram(runs, task, out_dir),
        "fig6": learning_order(runs, task, out_dir),
        "fig8": retention(runs, task, out_dir),
        "fig9": gradient_cosines(runs, out_dir),
        "fig11_12": task_loss_vs_lm_loss_and_compute(runs, task, out_dir),
    }
