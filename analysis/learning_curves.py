"""How each injected task of one run was learned: its curves against step, and a table of the outcome.

Both read the run's save folder (``config.yaml`` for the tasks and their schedules, ``metrics.jsonl`` for the
task evaluations ``task/<task>/{test,train}/{loss,acc}``), so they work on a finished or a running run.

    rows = learning_curve_figure(save_folder, save_folder / "learning_curves.png")
    print(format_learning_table(learning_table(save_folder, threshold=0.9)))
"""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window
import matplotlib.pyplot as plt  # noqa: E402

from olmo_injection import metric_names as M  # noqa: E402
from olmo_injection.task_kinds import task_kind  # noqa: E402

from .figures import first_step_reaching, panel_messages, show_message  # noqa: E402
from .run_logs import RunLog, read_run_folder  # noqa: E402
from .run_table import instances_per_token, schedule_label  # noqa: E402

Rows = List[Dict[str, Any]]
PathLike = Union[str, Path]


def _tasks(run: RunLog) -> List[Dict[str, Any]]:
    tasks = (run.config.get("injection") or {}).get("tasks") or []
    if not tasks:
        raise ValueError(f"run {run.name!r}: its config.yaml injects no task (injection.tasks is empty)")
    return tasks


def chance_accuracy(task: Dict[str, Any]) -> float:
    """Accuracy of guessing among the task's labels (a task mapping of a run's config.yaml): one over the number
    of labels its kind gives it (cmp: 2; a kind with a modulus: the modulus, which defaults to the number of values)."""
    kind = task_kind(task.get("kind", "cmp"))
    num_values = int(task.get("num_values") or 100)
    return 1.0 / kind.num_labels(num_values, kind.modulus(num_values, task.get("modulus")))


def _label(run: RunLog, task: Dict[str, Any]) -> str:
    return f"{task['name']} ({task.get('kind')}, {schedule_label(run.config, task['name'])})"


def learning_curve_figure(save_folder: PathLike, out_png: PathLike) -> Rows:
    """Draw task test loss (left) and test accuracy (right, chance dotted) against step, one line per task
    labelled with its kind and frequency, into ``out_png``; the numbers go to the ``.csv`` and ``.json`` beside
    it (the JSON with the tasks' config, the legend and any panel's message). Returns one row per task and
    evaluation step: ``task``, ``step``, ``test_loss``, ``test_acc``, ``train_acc`` (None where not logged).
    ValueError naming the file when the folder has no run."""
    run = read_run_folder(save_folder)
    out_png = Path(out_png)
    rows: Rows = []
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for task in _tasks(run):
        name = task["name"]
        keys = {"test_loss": M.task_key(name, M.TEST_SPLIT, M.LOSS),
                "test_acc": M.task_key(name, M.TEST_SPLIT, M.ACC_LABELS),
                "train_acc": M.task_key(name, M.TRAIN_SPLIT, M.ACC_LABELS)}
        by_step: Dict[int, Dict[str, Any]] = {}
        for column, key in keys.items():
            for step, value in zip(*run.series(key)):
                by_step.setdefault(step, {"task": name, "step": step, **dict.fromkeys(keys)})[column] = value
        rows += [by_step[step] for step in sorted(by_step)]
        label = _label(run, task)
        for ax, key in ((loss_ax, keys["test_loss"]), (acc_ax, keys["test_acc"])):
            steps, values = run.series(key)
            if steps:
                line, = ax.plot(steps, values, "o-", ms=3, label=label)
                if ax is acc_ax:
                    ax.axhline(chance_accuracy(task), color=line.get_color(), ls=":", lw=0.8)
    for ax, what in ((loss_ax, "test loss (nats)"), (acc_ax, "test accuracy (dotted: chance)")):
        if not ax.lines:
            show_message(ax, f"no task evaluations in {Path(save_folder) / 'metrics.jsonl'} yet\n"
                             "(they are logged every eval_interval steps)")
            continue
        ax.set_xlabel("step")
        ax.set_ylabel(what)
        ax.legend(fontsize=7)
    # The run name (tasks and schedules included) spans both panels, wrapped: it can be long for a sweep's run.
    fig.suptitle("\n".join(textwrap.wrap(run.name, 110)), fontsize=9)
    loss_ax.set_title("task loss")
    acc_ax.set_title("task test accuracy")
    if acc_ax.lines:
        acc_ax.set_ylim(-0.02, 1.02)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    messages = panel_messages(fig)
    legend = [line.get_label() for line in acc_ax.lines if not line.get_label().startswith("_")]
    plt.close(fig)
    with out_png.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["task", "step", "test_loss", "test_acc", "train_acc"])
        writer.writeheader()
        writer.writerows(rows)
    out_png.with_suffix(".json").write_text(json.dumps(
        {"figure": "learning_curves", "save_folder": str(save_folder), "tasks": _tasks(run), "legend": legend,
         "messages": messages, "rows": rows},
        indent=1, default=str))
    return rows


def learning_table(save_folder: PathLike, threshold: float = 0.9) -> Rows:
    """One row per injected task: ``task``, ``kind``, ``frequency`` (``7.8e-03/token`` or ``n=1/gap=10``),
    ``instances_per_token``, ``final_step`` (of the last test evaluation), ``final_test_acc``,
    ``final_test_loss`` (nats), ``final_train_acc``, ``learned_step``: the first evaluated step at which test
    accuracy reached ``threshold`` (None if never). None where the run logged nothing yet."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold}: must be in (0, 1] (a test accuracy)")
    run = read_run_folder(save_folder)
    rows = []
    for task in _tasks(run):
        name = task["name"]
        acc_key = M.task_key(name, M.TEST_SPLIT, M.ACC_LABELS)
        steps, accuracies = run.series(acc_key)
        rows.append({
            "task": name,
            "kind": task.get("kind"),
            "frequency": schedule_label(run.config, name),
            "instances_per_token": instances_per_token(run.config, name),
            "final_step": steps[-1] if steps else None,
            "final_test_acc": accuracies[-1] if accuracies else None,
            "final_test_loss": _last(run, M.task_key(name, M.TEST_SPLIT, M.LOSS)),
            "final_train_acc": _last(run, M.task_key(name, M.TRAIN_SPLIT, M.ACC_LABELS)),
            "learned_step": first_step_reaching(run, acc_key, threshold),
            "threshold": threshold,
        })
    return rows


def _last(run: RunLog, key: str) -> Optional[float]:
    _, values = run.series(key)
    return values[-1] if values else None


def format_learning_table(rows: Rows) -> str:
    """``learning_table``'s rows as an aligned text table (``-`` where a value is missing, ``never``
    for a task not learned)."""
    if not rows:
        return "(no injected tasks)"
    threshold = rows[0].get("threshold")
    header = ["task", "kind", "frequency", "at step", "test acc", "test loss", "train acc",
              f"learned (acc >= {threshold:g})" if threshold is not None else "learned"]

    def number(value: Optional[float], fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [[r["task"], str(r["kind"]), r["frequency"], number(r["final_step"], "d"),
              number(r["final_test_acc"], ".3f"), number(r["final_test_loss"], ".3f"),
              number(r["final_train_acc"], ".3f"),
              "never" if r["learned_step"] is None else f"step {r['learned_step']}"] for r in rows]
    widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]
    render = lambda row: "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()  # noqa: E731
    return "\n".join([render(header), render(["-" * w for w in widths])] + [render(row) for row in lines])
