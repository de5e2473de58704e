"""SLURM job arrays for the runs of a sweep: build the batch scripts, check them, submit them.

One array job per model size (sizes can ask for different resources, ``slurm.per_model``); array task ``i``
trains run ``i`` of that job's list. Each job: ``srun`` starts ``torchrun`` once per node, which rendezvous
(c10d) on the first node and starts one training process per GPU. Before the time limit SLURM sends USR1;
the script forwards it to training, which checkpoints, and then requeues the job; the requeued job runs the
same command, which resumes from the latest checkpoint in the run's ``save_folder``.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from olmo_injection.sweep import RunSpec, write_run_config

from .slurm_config import SlurmConfig
from .template import render

TEMPLATE = "train.sbatch"
SLURM_DIR = "slurm"  # <runs_root>/<sweep>/slurm: the batch scripts and SLURM's first lines of output

# Defaults for NCCL on multi-node GPU jobs; `slurm.env` entries override them.
NCCL_ENV = {
    "NCCL_DEBUG": "WARN",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",  # a hung collective fails the job instead of blocking it forever
}


@dataclass(frozen=True)
class ArrayJob:
    """One batch script: the runs it trains, the resources they share."""

    name: str
    """SLURM job name: ``<sweep>`` or ``<sweep>-<model>``."""

    runs: List[RunSpec]
    """Array task ``i`` trains ``runs[i]``."""

    slurm: SlurmConfig
    """Resources for every task of the array."""

    script_path: Path
    """Where the script is written: ``<runs_root>/<sweep>/slurm/<name>.sbatch``."""

    script: str
    """The rendered batch script."""


def plan_jobs(sweep_name: str, runs: Sequence[RunSpec], slurm: SlurmConfig) -> List[ArrayJob]:
    """Group ``runs`` into array jobs by model size and render their scripts; checks resources against configs.

    Raises ``ValueError`` if a run's global batch cannot be split over the job's processes.
    """
    if not runs:
        raise ValueError(f"sweep {sweep_name!r} has no runs")
    groups: dict = {}
    for run in runs:
        groups.setdefault(run.axes.get("model"), []).append(run)
    sweep_dir = runs[0].run_dir.parent
    jobs = []
    for model, group in groups.items():
        resources = slurm.for_model(model)
        for run in group:
            batch = run.config.get("global_train_batch_size")
            if batch is not None and batch % resources.world_size != 0:
                raise ValueError(
                    f"run {run.name!r}: global_train_batch_size={batch} is not divisible by the "
                    f"{resources.nodes} nodes x {resources.processes_per_node} processes = {resources.world_size} "
                    "ranks of its job; change slurm.nodes / gpus_per_node"
                )
        name = sweep_name if len(groups) == 1 or model is None else f"{sweep_name}-{model}"
        script_path = sweep_dir / SLURM_DIR / f"{name}.sbatch"
        jobs.append(ArrayJob(name, group, resources, script_path, batch_script(name, group, resources, sweep_dir)))
    return jobs


def batch_script(job_name: str, runs: Sequence[RunSpec], slurm: SlurmConfig, sweep_dir: Path) -> str:
    """The sbatch script training ``runs`` as an array job."""
    resource_lines = []
    if not slurm.cpu:
        resource_lines.append(f"#SBATCH --gpus-per-node={slurm.gpus_per_node}")
    if slurm.partition:
        resource_lines.append(f"#SBATCH --partition={slurm.partition}")
    if slurm.account:
        resource_lines.append(f"#SBATCH --account={slurm.account}")
    resource_lines += [f"#SBATCH {arg}" for arg in slurm.sbatch_args]
    env = {} if slurm.cpu else dict(NCCL_ENV)
    env.update(slurm.env)
    array = f"0-{len(runs) - 1}" + (f"%{slurm.max_parallel}" if slurm.max_parallel else "")
    return render(TEMPLATE, {
        "sweep": sweep_dir.name,
        "num_runs": len(runs),
        "job_name": job_name,
        "array": array,
        "nodes": slurm.nodes,
        "cpus_per_node": slurm.cpus_per_node,
        "mem": slurm.mem,
        "time": slurm.time,
        "resource_lines": "\n".join(resource_lines),
        "slurm_log_dir": shlex.quote(str(sweep_dir / SLURM_DIR)),
        "signal_seconds": slurm.signal_seconds,
        "run_dirs": "\n".join(f"  {shlex.quote(str(run.run_dir))}  # array task {i}" for i, run in enumerate(runs)),
        "setup": "\n".join(slurm.setup),
        "env": "\n".join(f"export {key}={shlex.quote(str(value))}" for key, value in env.items()),
        "omp_threads": max(1, slurm.cpus_per_node // slurm.processes_per_node),
        "srun_gpus": "" if slurm.cpu else f"--gpus-per-node={slurm.gpus_per_node} ",
        "python": shlex.quote(slurm.python),
        "nproc_per_node": slurm.processes_per_node,
    })


def submit(job: ArrayJob, sbatch: str = "sbatch") -> str:
    """Write the runs' configs and the script, then ``sbatch`` it; returns the array job id.

    Raises ``RuntimeError`` with sbatch's message if SLURM rejects the script.
    """
    for run in job.runs:
        write_run_config(run)
        (run.run_dir / "logs").mkdir(parents=True, exist_ok=True)
    job.script_path.parent.mkdir(parents=True, exist_ok=True)
    job.script_path.write_text(job.script)
    result = subprocess.run([sbatch, "--parsable", str(job.script_path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"sbatch rejected {job.script_path}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip().split(";")[0]


def sbatch_available(sbatch: str = "sbatch") -> Optional[str]:
    """None if ``sbatch`` can be run, else why not (for a clear error before any file is written)."""
    try:
        subprocess.run([sbatch, "--version"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"cannot run {sbatch!r}: {exc}"
    return None
