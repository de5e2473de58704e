"""The library's ``olmo-inject`` sub-commands; ``register(subparsers)`` adds each one (see ``olmo_injection.cli``)."""

from __future__ import annotations

import argparse

from .checkpoint_safety import add_trust_checkpoint_argument
from .experiment import add_experiment_flags


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_train(subparsers)
    _register_schedule(subparsers)
    _register_tasks(subparsers)
    _register_inspect(subparsers)


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train OLMo with injected tasks (the main job)",
        description="Train OLMo with injected tasks. Extra --dotted.key=value arguments override the config. "
        "See `python -m olmo_injection.train --help` for single-process, torchrun and multi-node use.",
    )
    parser.add_argument("config", help="training config YAML (see configs/)")
    add_trust_checkpoint_argument(parser)
    add_experiment_flags(parser)
    parser.set_defaults(func=_run_train, accepts_overrides=True)


def _run_train(args: argparse.Namespace) -> int:
    from .train import run

    return run(args.config, args.overrides, args.trust_checkpoint, extend=args.extend,
               allow_config_change=args.allow_config_change, prog="olmo-inject train")


def _load_checked_config(path: str, overrides):
    from .config import InjectionTrainConfig, validate_config

    cfg = InjectionTrainConfig.load(path, overrides)
    validate_config(cfg)
    return cfg


def _register_schedule(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "schedule",
        help="print which rows of which steps receive which task instances",
        description="Audit what a run injects without running it: for OLMo steps a..b (1-based, inclusive) print "
        "step, global batch, slot in the global batch, rank and row for --world-size ranks, task, instance id "
        "and the instance's text.",
    )
    parser.add_argument("config", help="training config YAML")
    parser.add_argument("--steps", default="1:10", help="first:last OLMo step, inclusive (default 1:10)")
    parser.add_argument("--world-size", type=int, default=1, help="ranks to map slots onto (default 1)")
    parser.add_argument("--csv", help="also write the table to this CSV file")
    parser.set_defaults(func=_run_schedule, accepts_overrides=True)


def _run_schedule(args: argparse.Namespace) -> int:
    import csv

    from .schedule import InjectionSchedule, schedule_table
    from .tasks import build_tasks

    try:
        first, last = (int(x) for x in args.steps.split(":"))
    except ValueError:
        raise SystemExit(f"--steps={args.steps!r}: expected FIRST:LAST, e.g. 1:100")
    if not 1 <= first <= last:
        raise SystemExit(f"--steps={args.steps!r}: need 1 <= FIRST <= LAST")
    cfg = _load_checked_config(args.config, args.overrides)
    if args.world_size < 1 or cfg.global_train_batch_size % args.world_size:
        raise SystemExit(f"--world-size={args.world_size}: must be >= 1 and divide global_train_batch_size")
    tasks = build_tasks(cfg)
    schedule = InjectionSchedule.from_config(cfg, tasks)
    rows = schedule_table(schedule, first - 1, last, [t.name for t in tasks], world_size=args.world_size)
    by_name = {t.name: t for t in tasks}
    for row in rows:
        task = by_name[row["task"]]
        a, b = task.values[row["instance"]]
        row["text"] = task.word_strings[a] + task.word_strings[b] + task.label_strings[task.label_index[row["instance"]]]
    columns = ["step", "batch", "slot", "rank", "row", "task", "instance", "text"]
    print("\t".join(columns))
    for row in rows:
        print("\t".join(str(row[c]) for c in columns))
    print(f"# {len(rows)} instances in steps {first}..{last}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    return 0


def _register_tasks(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tasks",
        help="write the config's task files and show a few instances",
        description="Build (or load) every task of the config's injection section, write its task file to "
        "injection.task_dir (default <save_folder>/tasks) and print its path and example instances.",
    )
    parser.add_argument("config", help="training config YAML")
    parser.set_defaults(func=_run_tasks, accepts_overrides=True)


def _run_tasks(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .tasks import build_tasks, task_file_name

    cfg = _load_checked_config(args.config, args.overrides)
    task_dir = Path(cfg.injection.task_dir or Path(cfg.save_folder) / "tasks")
    for task_cfg, task in zip(cfg.injection.tasks, build_tasks(cfg)):
        path = task_cfg.file or task_dir / task_file_name(task_cfg)
        print(f"{task.name} ({task.kind}): {len(task.train_ids)} train / {len(task.test_ids)} test instances -> {path}")
        for i in task.train_ids[:3]:
            a, b = task.values[i]
            print(f"    {i}: {task.word_strings[a]}{task.word_strings[b]}{task.label_strings[task.label_index[i]]}")
    return 0


def _register_inspect(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show what a training batch held: decoded rows, injections, source file and offset",
        description="Rebuild the global batch that OLMo step --step trains on, through the training data path, "
        "and print each row: where it came from (token file and offset), its injected prefix marked with task and "
        "instance, and its decoded text. Writes nothing.",
    )
    parser.add_argument("config", help="training config YAML")
    parser.add_argument("--step", type=int, required=True, help="OLMo step, 1-based")
    parser.add_argument("--row", type=int, default=None, help="only this row (slot in the global batch, 0-based)")
    parser.add_argument("--world-size", type=int, default=1, help="ranks to map rows onto (default 1)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.set_defaults(func=_run_inspect, accepts_overrides=True)


def _run_inspect(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from .batch_inspection import format_rows, inspect_batch
    from .tasks import build_tasks

    cfg = _load_checked_config(args.config, args.overrides)
    if args.row is not None and not 0 <= args.row < cfg.global_train_batch_size:
        raise ValueError(f"--row={args.row}: must be in [0, global_train_batch_size={cfg.global_train_batch_size})")
    rows = inspect_batch(cfg, build_tasks(cfg, write=False), args.step, args.world_size)
    if args.row is not None:
        rows = [rows[args.row]]
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in rows], f, indent=1)
    return 0
