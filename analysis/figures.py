"""The paper's OLMo figures for a set of runs: each function writes ``<name>.png``, ``<name>.csv`` (the numbers
plotted) and ``<name>.json`` (the numbers plus what made them) into ``out_dir`` and returns the rows.

Figures 5, 6, 8, 9, 11, 12 read the runs' logged metrics (``RunLog``s from ``run_logs``: a save folder's
``metrics.jsonl``); figure 7 and the localisation figure read the results that ``olmo-inject analyze probe`` and
``analyze localise`` write per checkpoint. Models are named by their size from the run's config (``4M``...).
A panel with nothing to draw says why instead of showing empty axes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from olmo_injection import metric_names as M  # noqa: E402

from .run_logs import RunLog  # noqa: E402
from .run_table import model_size, run_facts, schedule_label  # noqa: E402

Rows = List[Dict[str, Any]]
Tasks = Union[str, Sequence[str]]
"""One task name, or several: with several, each run contributes every one of them it injects (a run that holds
tasks at several frequencies, or gaps, then gives one row and one line per task)."""


def run_task_pairs(runs: Sequence[RunLog], task: Tasks) -> List[Tuple[RunLog, str]]:
    """The (run, task) pairs a figure draws. One name keeps the old contract (a run without it is an error)."""
    names = [task] if isinstance(task, str) else list(task)
    if len(names) == 1:
        return [(run, names[0]) for run in runs]
    def injected(run: RunLog) -> set:
        return {t.get("name") for t in (run.config.get("injection") or {}).get("tasks") or []}

    return [(run, name) for run in runs for name in names if name in injected(run)]


def tasks_title(task: Tasks) -> str:
    """The task name(s) for a figure title."""
    return task if isinstance(task, str) else ", ".join(task)


def titled(ax, figure: str, task: Tasks, what: str) -> None:
    """``Fig. N: <task> <what>``; several task names go on a second line, so the title fits its panel."""
    if isinstance(task, str):
        ax.set_title(f"{figure}: {task} {what}")
    else:
        ax.set_title(f"{figure}: {what}\n({tasks_title(task)})", fontsize=9)


def _write(fig, rows: Rows, out_dir: Path, name: str, meta: Dict[str, Any]) -> Rows:
    """Save ``fig`` and ``rows`` as ``<name>.png/.csv/.json``; the JSON also lists the panels' messages."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}.png", dpi=120)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with (out_dir / f"{name}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / f"{name}.json").write_text(
        json.dumps({"figure": name, **meta, "messages": panel_messages(fig), "rows": rows}, indent=1, default=str))
    plt.close(fig)
    return rows


def panel_messages(fig) -> List[str]:
    """What ``show_message`` wrote in place of ``fig``'s panels (the texts of panels with hidden axes)."""
    return [text.get_text() for ax in fig.axes if not ax.axison for text in ax.texts]


def show_message(ax, text: str) -> None:
    """Replace the content of ``ax`` with ``text`` (why there is nothing to draw), axes hidden."""
    ax.clear()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9, transform=ax.transAxes)
    ax.set_axis_off()


def heat_map(ax, grid: np.ndarray, row_labels: Sequence[str], column_labels: Sequence[str], fmt: str = "{:.3g}"):
    """Draw ``grid`` [rows, columns] with each cell's value printed in it (``n/a`` for NaN); returns the image."""
    image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
    finite = grid[np.isfinite(grid)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (i, j), value in np.ndenumerate(grid):
        text = "n/a" if not np.isfinite(value) else fmt.format(value)
        colour = "black" if np.isfinite(value) and value > middle else "white"
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour if np.isfinite(value) else "grey")
    ax.set_xticks(range(len(column_labels)), list(column_labels), rotation=45)
    ax.set_yticks(range(len(row_labels)), list(row_labels))
    return image


def _last(run: RunLog, key: str) -> Optional[float]:
    _, values = run.series(key)
    return values[-1] if values else None


def phase_diagram(runs: Sequence[RunLog], task: Tasks, out_dir: Path) -> Rows:
    """Fig. 5: final task train loss and test accuracy over model size x injection frequency."""
    rows = []
    for run, name in run_task_pairs(runs, task):
        rows.append(
            {
                **run_facts(run, name),
                "task": name,
                "train_loss": _last(run, M.task_key(name, M.TRAIN_SPLIT, M.LOSS)),
                "test_acc": _last(run, M.task_key(name, M.TEST_SPLIT, M.ACC_LABELS)),
            }
        )
    sizes = sorted({(r["params"], r["model"]) for r in rows})
    freqs = sorted({r["instances_per_token"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("train_loss", "test_acc")):
        grid = np.full((len(sizes), len(freqs)), np.nan)
        for r in rows:
            if r[metric] is not None:
                grid[sizes.index((r["params"], r["model"])), freqs.index(r["instances_per_token"])] = r[metric]
        if not np.isfinite(grid).any():
            show_message(ax, f"no run logged {metric} for task {tasks_title(task)!r}\n"
                             "(task evaluations: task_eval.enabled)")
            continue
        image = heat_map(ax, grid, [name for _, name in sizes], [f"{f:.1e}" for f in freqs])
        ax.set_xlabel("instances per token")
        ax.set_ylabel("model (parameters)")
        titled(ax, "Fig. 5", task, f"final {metric.replace('_', ' ')}")
        fig.colorbar(image, ax=ax)
    return _write(fig, rows, out_dir, "fig5_phase_diagram", {"task": task})


def first_step_reaching(run: RunLog, key: str, threshold: float) -> Optional[int]:
    """The first logged step at which ``key`` is >= ``threshold``; None if it never is."""
    for step, value in zip(*run.series(key)):
        if value >= threshold:
            return step
    return None


def learning_order(runs: Sequence[RunLog], task: Tasks, out_dir: Path, threshold: float = 0.9) -> Rows:
    """Fig. 6: when the injected task and its natural-text reference are learned, and the gap effect.

    Left: test accuracy of the task and reference accuracy over steps. Right: final task test loss against the
    gap (gap-mode runs), one line per model size. Rows: first step each accuracy reaches ``threshold``.
    """
    rows = []
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    drawn = 0
    for run, name in run_task_pairs(runs, task):
        task_acc = M.task_key(name, M.TEST_SPLIT, M.ACC_LABELS)
        ref_acc = M.task_key(name, M.REFERENCE, M.ACC_LABELS)
        facts = run_facts(run, name)
        rows.append(
            {
                **facts,
                "task": name,
                "task_learned_step": first_step_reaching(run, task_acc, threshold),
                "reference_learned_step": first_step_reaching(run, ref_acc, threshold),
                "final_test_loss": _last(run, M.task_key(name, M.TEST_SPLIT, M.LOSS)),
            }
        )
        label = f"{facts['model']} {schedule_label(run.config, name)}" + ("" if isinstance(task, str) else f" {name}")
        for key, style, what in ((task_acc, "-", "task"), (ref_acc, "--", "reference")):
            steps, values = run.series(key)
            if steps:
                left.plot(steps, values, style, label=f"{label} {what}")
                drawn += 1
    if drawn:
        left.axhline(threshold, color="grey", lw=0.5)
        left.set_xlabel("step")
        left.set_ylabel("accuracy")
        titled(left, "Fig. 6a", task, "test and reference accuracy")
        left.legend(fontsize=6)
    else:
        show_message(left, f"no run logged test or reference accuracy of {tasks_title(task)}")
    gap_rows = [r for r in rows if r["gap"] is not None and r["final_test_loss"] is not None]
    for model in sorted({(r["params"], r["model"]) for r in gap_rows}):
        points = sorted((r["gap"], r["final_test_loss"]) for r in gap_rows if (r["params"], r["model"]) == model)
        right.plot(*zip(*points), "o-", label=model[1])
    if gap_rows:
        right.set_xscale("log")
        right.set_xlabel("gap (batches between injections)")
        right.set_ylabel("final task test loss")
        titled(right, "Fig. 6b", task, "final test loss vs gap")
        right.legend(fontsize=6)
    else:
        show_message(right, f"no gap-mode run of task {tasks_title(task)!r} with a test loss among these {len(runs)} run(s):\n"
                            "the gap panel needs runs with schedule mode 'gap'")
    return _write(fig, rows, out_dir, "fig6_learning_order", {"task": task, "threshold": threshold})


def feature_presence_over_checkpoints(results: Sequence[Dict[str, Any]], out_dir: Path) -> Rows:
    """Fig. 7: probe R^2 per position against the checkpoint step, with the shuffled-value null (a band from its
    mean to its 95th percentile) and a zero line; ``results`` are rows with ``run``, ``step``, ``r2``
    (``{"tok1": ..}``) and ``null_r2`` (``{"tok1": {"mean": .., "q95": ..}}``) as ``olmo-inject analyze probe``
    writes them."""
    rows = []
    for r in results:
        row = {"run": r["run"], "step": r["step"], "num_components": r.get("num_components_used")}
        for position, value in r["r2"].items():
            row[f"r2_{position}"] = value
            null = (r.get("null_r2") or {}).get(position) or {}
            row[f"null_r2_mean_{position}"] = null.get("mean")
            row[f"null_r2_q95_{position}"] = null.get("q95")
        rows.append(row)
    fig, ax = plt.subplots(figsize=(6, 4))
    if not rows:
        show_message(ax, "no probe results")
    for run in sorted({r["run"] for r in rows}):
        mine = sorted((r for r in rows if r["run"] == run), key=lambda r: r["step"])
        for position in [k[3:] for k in mine[0] if k.startswith("r2_")]:
            line, = ax.plot([r["step"] for r in mine], [r[f"r2_{position}"] for r in mine], "o-",
                            label=f"{run} {position}")
            means, q95s = ([r[f"null_r2_{which}_{position}"] for r in mine] for which in ("mean", "q95"))
            if all(v is not None for v in means + q95s):
                ax.fill_between([r["step"] for r in mine], means, q95s, color=line.get_color(), alpha=0.2,
                                label=f"{run} {position} null (mean to 95th pct)")
    if rows:
        ax.axhline(0, color="black", lw=0.7)
        components = sorted({r["num_components"] for r in rows if r["num_components"] is not None})
        ax.set_xlabel("step")
        ax.set_ylabel(f"order probe R^2 ({'/'.join(map(str, components)) or '?'} PCs)")
        ax.set_title("Fig. 7: value readable from the first layer (grouped CV)")
        ax.legend(fontsize=6)
    return _write(fig, rows, out_dir, "fig7_feature_presence", {})


def injection_intervals(run: RunLog, task: str) -> Rows:
    """Consecutive task evaluations of ``run`` and the injections of ``task`` between them.

    The evaluation logged at step s follows the update of step s, so injections at steps ``before < s <= after``
    act between the evaluations at ``before`` and ``after``. One row per pair of consecutive evaluations:
    ``before_step``, ``after_step``, ``injection_steps``, ``loss_before``, ``loss_after``, and ``complete``:
    False when the cumulative ``instances_seen`` says the interval held instances that no logged step shows
    (training steps logged sparsely), so its injection count is unknown.
    """
    steps, losses = run.series(M.task_key(task, M.TEST_SPLIT, M.LOSS))
    injected = [s for s, n in zip(*run.series(M.task_key(task, M.TRAIN_STEP, M.INJECTED_THIS_STEP))) if n]
    counts = dict(zip(*run.series(M.task_key(task, M.TRAIN_STEP, M.INJECTED_THIS_STEP))))
    seen = dict(zip(*run.series(M.task_key(task, M.TRAIN_STEP, M.INSTANCES_SEEN))))
    rows = []
    for (before, loss_before), (after, loss_after) in zip(zip(steps, losses), zip(steps[1:], losses[1:])):
        inside = [s for s in injected if before < s <= after]
        complete = True
        if before in seen and after in seen:
            complete = seen[after] - seen[before] == sum(counts[s] for s in inside)
        rows.append({"before_step": before, "after_step": after, "injection_steps": inside,
                     "loss_before": loss_before, "loss_after": loss_after, "complete": complete})
    return rows


def retention(runs: Sequence[RunLog], task: Tasks, out_dir: Path) -> Rows:
    """Fig. 8: the drop of the task's test loss across each injection and how much of it is lost again.

    A drop is measured only across an evaluation interval holding exactly one injection of the task (the
    evaluation just before it minus the one just after it); ``rebound`` is the loss at the last evaluation
    before the next injection minus the loss just after this one (positive: forgotten). Under a frequency
    schedule with several injections per evaluation interval no drop can be attributed to one injection: such
    runs are refused, with the reason, in the figure and in the JSON's ``refused``.
    Left: drop against the injection's step; right: the test loss over steps with the injections marked.
    """
    rows, refused = [], {}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for run, name in run_task_pairs(runs, task):
        key = run.name if isinstance(task, str) else f"{run.name} {name}"
        intervals = injection_intervals(run, name)
        single = [i for i, r in enumerate(intervals) if len(r["injection_steps"]) == 1 and r["complete"]]
        if not intervals:
            refused[key] = f"fewer than two evaluations of {M.task_key(name, M.TEST_SPLIT, M.LOSS)}"
            continue
        if not single:
            most = max(len(r["injection_steps"]) for r in intervals)
            refused[key] = (
                f"no evaluation interval holds exactly one injection (up to {most} per interval, "
                f"{schedule_label(run.config, name)}): Fig. 8 needs gap-mode injections with evaluations between them"
            )
            continue
        facts = run_facts(run, name)
        mine = []
        for index in single:
            interval = intervals[index]
            later = next((r for r in intervals[index + 1:] if r["injection_steps"]), None)
            # The loss at the last evaluation before the next injection (or at the run's last evaluation).
            last_before_next = (later["loss_before"] if later else intervals[-1]["loss_after"])
            mine.append({"run": run.name, "task": name, "model": facts["model"],
                         "injection_step": interval["injection_steps"][0],
                         "eval_before": interval["before_step"], "eval_after": interval["after_step"],
                         "loss_before": interval["loss_before"], "loss_after": interval["loss_after"],
                         "loss_drop": interval["loss_before"] - interval["loss_after"],
                         "rebound": last_before_next - interval["loss_after"]})
        rows += mine
        label = f"{facts['model']} {schedule_label(run.config, name)}" + ("" if isinstance(task, str) else f" {name}")
        left.plot([r["injection_step"] for r in mine], [r["loss_drop"] for r in mine], "o-", label=label)
        line, = right.plot(*run.series(M.task_key(name, M.TEST_SPLIT, M.LOSS)), lw=0.8, label=label)
        for r in mine:
            right.axvline(r["injection_step"], color=line.get_color(), lw=0.3, alpha=0.6)
    if rows:
        left.axhline(0, color="grey", lw=0.5)
        left.set_xlabel("injection step")
        left.set_ylabel("task test-loss drop across the injection")
        titled(left, "Fig. 8", task, "drop per injection")
        left.legend(fontsize=6)
        right.set_xlabel("step")
        right.set_ylabel("task test loss")
        right.set_title("test loss; vertical lines: injections")
        right.legend(fontsize=6)
    else:
        show_message(left, "refused:\n" + "\n".join(f"{name}: {why}" for name, why in refused.items()))
        show_message(right, "no run with an injection between two evaluations")
    return _write(fig, rows, out_dir, "fig8_retention", {"task": task, "refused": refused})


def gradient_cosines(runs: Sequence[RunLog], out_dir: Path) -> Rows:
    """Fig. 9: cos(g, g_r), cos(g_t, g_r), cos(g_nt, g_r) over steps; rows: mean and std at injection steps
    (``grad/injected`` true) and elsewhere, per run (None, with a ``note``, for a run that logged none)."""
    keys = {"g": M.GRAD_COS_G_REF, "t": M.GRAD_COS_T_REF, "nt": M.GRAD_COS_NT_REF}
    rows = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    drawn = False
    for run in runs:
        injected = {s for s, f in zip(*run.series(M.GRAD_INJECTED)) if f}
        row: Dict[str, Any] = {"run": run.name, "model": model_size(run.config["model"])}
        for ax, (short, key) in zip(axes, keys.items()):
            steps, values = run.series(key)
            if steps:
                ax.plot(steps, values, lw=0.7, label=f"{row['model']} {run.name}")
                drawn = True
            for where, chosen in (("injection", [v for s, v in zip(steps, values) if s in injected]),
                                  ("other", [v for s, v in zip(steps, values) if s not in injected])):
                row[f"cos_{short}_{where}_mean"] = float(np.mean(chosen)) if chosen else None
                row[f"cos_{short}_{where}_std"] = float(np.std(chosen)) if chosen else None
        if not run.series(M.GRAD_COS_G_REF)[0]:
            row["note"] = "no grad/cos_* logged: gradient interference was off (grad_interference.enabled)"
        rows.append(row)
    if drawn:
        for ax, key in zip(axes, keys.values()):
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_title(f"Fig. 9: {key}")
            ax.set_xlabel("step")
        axes[0].set_ylabel("cosine with the reference gradient")
        axes[0].legend(fontsize=6)
    else:
        for ax in axes[1:]:
            ax.set_axis_off()
        show_message(axes[0], f"none of the {len(runs)} run(s) logged grad/cos_*:\ngradient interference was off "
                              "(set grad_interference.enabled: true)")
    return _write(fig, rows, out_dir, "fig9_gradient_cosines", {})


def task_loss_vs_lm_loss_and_compute(runs: Sequence[RunLog], task: Tasks, out_dir: Path) -> Rows:
    """Figs. 11 and 12: task test loss against the LM training loss at the same step, and against the estimated
    compute 6 N D (N parameters, D tokens seen = step x tokens per step)."""
    task_loss_key = M.task_key(tasks_title(task), M.TEST_SPLIT, M.LOSS)
    rows = []
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for run, name in run_task_pairs(runs, task):
        facts = run_facts(run, name)
        lm = dict(zip(*run.series(M.LM_TRAIN_LOSS)))
        mine = [
            {
                "run": run.name,
                "task": name,
                "model": facts["model"],
                "step": step,
                "task_loss": loss,
                "lm_loss": lm.get(step),
                "compute_flops": 6.0 * facts["params"] * step * facts["tokens_per_step"],
            }
            for step, loss in zip(*run.series(M.task_key(name, M.TEST_SPLIT, M.LOSS)))
        ]
        rows += mine
        label = f"{facts['model']} {schedule_label(run.config, name)}" + ("" if isinstance(task, str) else f" {name}")
        paired = [r for r in mine if r["lm_loss"] is not None]
        if paired:
            left.plot([r["lm_loss"] for r in paired], [r["task_loss"] for r in paired], ".-", label=label)
        positive = [r for r in mine if r["compute_flops"] > 0]
        if positive:
            right.plot([r["compute_flops"] for r in positive], [r["task_loss"] for r in positive], ".-", label=label)
    for ax, xlabel, title, has_lines in ((left, "LM train loss", "Fig. 11: task loss vs LM loss", left.lines),
                                         (right, "compute 6ND (FLOPs)", "Fig. 12: task loss vs compute", right.lines)):
        if not has_lines:
            show_message(ax, f"no run logged {task_loss_key}" + (f" with {M.LM_TRAIN_LOSS}" if ax is left else ""))
            continue
        ax.set_xlabel(xlabel)
        ax.set_ylabel("task test loss")
        ax.set_title(f"{title} ({tasks_title(task)})", fontsize=10 if isinstance(task, str) else 8)
        ax.legend(fontsize=6)
    if left.lines:
        left.invert_xaxis()
    if right.lines:
        right.set_xscale("log")
    return _write(fig, rows, out_dir, "fig11_12_task_loss_vs_lm_loss_and_compute", {"task": task})


def mlp_ablation_over_checkpoints(results: Sequence[Dict[str, Any]], task: str, out_dir: Path) -> Rows:
    """The ``analyze localise`` figure: task-loss increase (nats) when each block's MLP output is zeroed (left)
    or mean-replaced (right), one heat-map row per checkpoint, the value printed in each cell. ``results`` are
    ``analyze localise``'s rows (``step`` and ``ablation`` from ``mlp_ablation``)."""
    ordered = sorted(results, key=lambda r: r["step"])
    rows = [
        {"run": r.get("run"), "step": r["step"], "clean_loss": r["ablation"]["clean_loss"], "layer": layer,
         "zero_loss_increase": r["ablation"]["zero_loss_increase"][layer],
         "mean_loss_increase": r["ablation"]["mean_loss_increase"][layer]}
        for r in ordered for layer in range(len(r["ablation"]["zero_loss_increase"]))
    ]
    fig, axes = plt.subplots(1, 2, figsize=(12, 2.5 + 0.6 * max(1, len(ordered))))
    for ax, ablation in zip(axes, ("zero", "mean")):
        if not ordered:
            show_message(ax, "no localisation results")
            continue
        grid = np.array([r["ablation"][f"{ablation}_loss_increase"] for r in ordered], dtype=float)
        labels = [f"step {r['step']} (clean {r['ablation']['clean_loss']:.2f})" for r in ordered]
        image = heat_map(ax, grid, labels, [str(layer) for layer in range(grid.shape[1])])
        ax.set_xlabel("block whose MLP output is ablated")
        ax.set_title(f"{task}: task-loss increase, {ablation} ablation (nats)")
        fig.colorbar(image, ax=ax)
    return _write(fig, rows, out_dir, f"localise_mlp_ablation_{task}", {"task": task})


def all_log_figures(runs: Sequence[RunLog], task: Tasks, out_dir: Path) -> Dict[str, Rows]:
    """Every figure that needs only the runs' logs (5, 6, 8, 9, 11/12), for one task name or several."""
    return {
        "fig5": phase_diagram(runs, task, out_dir),
        "fig6": learning_order(runs, task, out_dir),
        "fig8": retention(runs, task, out_dir),
        "fig9": gradient_cosines(runs, out_dir),
        "fig11_12": task_loss_vs_lm_loss_and_compute(runs, task, out_dir),
    }
