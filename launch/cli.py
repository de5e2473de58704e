"""Sub-commands ``olmo-inject sweep ...`` and ``olmo-inject launch ...`` (registered via the entry point).

    olmo-inject sweep list configs/sweeps/gap.yaml                 # what a sweep expands to
    olmo-inject sweep show configs/sweeps/gap.yaml gap-1B-cmp-n10g10-s6198   # one run's resolved config
    olmo-inject launch slurm configs/sweeps/gap.yaml --dry-run     # print the batch scripts
    olmo-inject launch slurm configs/sweeps/gap.yaml --partition h200 --account me --time 24:00:00
    olmo-inject launch local configs/tiny.yaml --nproc-per-node 2  # torchrun on this machine

Every command takes dotted config overrides after the file (``--max_duration=100``), applied to every run.
Bad input (unknown model size, empty axis, too many GPUs per node, missing data files) stops with an error
before anything is written or submitted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List

import yaml

from olmo_injection.sweep import RunSpec, SweepConfig, expand_sweep, load_sweep

from .local import run_local, torchrun_command
from .slurm import plan_jobs, sbatch_available, submit
from .slurm_config import SlurmConfig, slurm_config_from


def register(subparsers) -> None:
    sweep = subparsers.add_parser("sweep", help="inspect what a sweep expands to")
    sweep_sub = sweep.add_subparsers(dest="sweep_command", required=True)
    ls = sweep_sub.add_parser("list", help="one line per run: name, wandb group, axis values, run folder")
    _add_common(ls)
    ls.add_argument("--json", action="store_true", help="print JSON (name, group, axes, run_dir) instead")
    ls.set_defaults(func=cmd_sweep_list, accepts_overrides=True)
    show = sweep_sub.add_parser("show", help="print one run's resolved config (YAML)")
    _add_common(show)
    show.add_argument("run", help="run name or index")
    show.set_defaults(func=cmd_sweep_show, accepts_overrides=True)

    launch = subparsers.add_parser("launch", help="train the runs of a sweep on SLURM or on this machine")
    launch_sub = launch.add_subparsers(dest="launch_command", required=True)
    slurm = launch_sub.add_parser("slurm", help="submit one SLURM array job per model size")
    _add_common(slurm)
    slurm.add_argument("--dry-run", action="store_true", help="print the batch scripts; write and submit nothing")
    slurm.add_argument("--nodes", type=int)
    slurm.add_argument("--gpus-per-node", type=int)
    slurm.add_argument("--node-gpus", type=int, help="GPUs a node of the partition has (default 8)")
    slurm.add_argument("--cpus-per-node", type=int)
    slurm.add_argument("--mem", help="memory per node, e.g. 512G; 0 = all")
    slurm.add_argument("--time", help="time limit per job, e.g. 48:00:00")
    slurm.add_argument("--partition")
    slurm.add_argument("--account")
    slurm.add_argument("--max-parallel", type=int, help="most array tasks running at once")
    slurm.add_argument("--signal-seconds", type=int, help="USR1 this long before the time limit (checkpoint)")
    slurm.add_argument("--cpu", action="store_true", default=None, help="CPU mode: no GPUs, gloo")
    slurm.add_argument("--nproc-per-node", type=int, help="processes per node (CPU mode)")
    slurm.add_argument("--python", help="interpreter on the compute nodes (default: this one)")
    slurm.set_defaults(func=cmd_launch_slurm, accepts_overrides=True)
    local = launch_sub.add_parser("local", help="train one run here with torchrun (foreground)")
    _add_common(local)
    local.add_argument("--run", help="run name or index (needed when the sweep has several runs)")
    local.add_argument("--nproc-per-node", type=int, default=1, help="training processes (default 1)")
    local.add_argument("--dry-run", action="store_true", help="print the command; write and run nothing")
    local.set_defaults(func=cmd_launch_local, accepts_overrides=True)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="sweep file (configs/sweeps/) or a plain training config")
    parser.add_argument("--runs-root", help="folder of run folders (default: slurm.runs_root, else runs/)")


def cmd_sweep_list(args) -> int:
    sweep, runs = _expand(args)
    if args.json:
        print(json.dumps([{"index": r.index, "name": r.name, "group": r.group, "axes": r.axes,
                           "run_dir": str(r.run_dir)} for r in runs], indent=1))
        return 0
    axes = list(dict.fromkeys(k for r in runs for k in r.axes))
    rows = [["#", "run", "wandb group", *axes]] + [[str(r.index), r.name, r.group, *(r.axes.get(a, "") for a in axes)] for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"{len(runs)} runs of sweep {sweep.name!r} under {runs[0].run_dir.parent}")
    return 0


def cmd_sweep_show(args) -> int:
    _, runs = _expand(args)
    print(yaml.safe_dump(_pick(runs, args.run).config, sort_keys=False), end="")
    return 0


def cmd_launch_slurm(args) -> int:
    sweep = _load(args)
    slurm = _slurm_config(sweep, args)
    runs = expand_sweep(sweep, slurm.runs_root)
    jobs = plan_jobs(sweep.name, runs, slurm)
    if args.dry_run:
        for job in jobs:
            print(f"# ---- {job.script_path} ({len(job.runs)} runs) ----")
            print(job.script)
        return 0
    problem = sbatch_available()
    if problem:
        raise ValueError(f"cannot submit to SLURM: {problem}")
    for job in jobs:
        job_id = submit(job)
        print(f"submitted array job {job_id} ({job.name}, {len(job.runs)} runs): {job.script_path}")
        for i, run in enumerate(job.runs):
            print(f"  {job_id}_{i}  {run.name}  -> {run.run_dir}")
    return 0


def cmd_launch_local(args) -> int:
    sweep, runs = _expand(args)
    if args.run is None and len(runs) > 1:
        raise ValueError(f"sweep {sweep.name!r} has {len(runs)} runs; pick one with --run NAME_OR_INDEX "
                         f"(olmo-inject sweep list {args.config})")
    run = _pick(runs, args.run if args.run is not None else "0")
    if args.dry_run:
        print(" ".join(torchrun_command(run, args.nproc_per_node)))
        return 0
    return run_local(run, args.nproc_per_node)


def _load(args) -> SweepConfig:
    sweep = load_sweep(args.config)
    sweep.overrides.update(_parse_overrides(getattr(args, "overrides", [])))
    return sweep


def _expand(args):
    sweep = _load(args)
    runs_root = args.runs_root or sweep.slurm.get("runs_root") or SlurmConfig.runs_root
    return sweep, expand_sweep(sweep, runs_root)


def _slurm_config(sweep: SweepConfig, args) -> SlurmConfig:
    """The sweep's ``slurm:`` section, then the flags that were given."""
    flags = {name: getattr(args, name) for name in (
        "runs_root", "nodes", "gpus_per_node", "node_gpus", "cpus_per_node", "mem", "time", "partition", "account",
        "max_parallel", "signal_seconds", "cpu", "nproc_per_node", "python")}
    from_file = slurm_config_from(sweep.slurm, where=f"{sweep.name}: slurm")
    return slurm_config_from({k: v for k, v in flags.items() if v is not None}, base=from_file, where="flags")


def _parse_overrides(items: List[str]) -> Dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": 1, "c": "x"}``, values parsed as YAML (numbers, booleans, lists)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r}: write --dotted.key=value")
        out[key] = yaml.safe_load(value)
    return out


def _pick(runs: List[RunSpec], which: str) -> RunSpec:
    for run in runs:
        if run.name == which or str(run.index) == str(which):
            return run
    raise ValueError(f"no run {which!r}; runs: {[r.name for r in runs]}")
