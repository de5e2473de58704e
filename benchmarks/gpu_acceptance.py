"""GPU acceptance on one H200 in one command (``bash benchmarks/gpu_acceptance.sh``), within an 8-minute budget.

    bash benchmarks/gpu_acceptance.sh                                  # everything, defaults below
    bash benchmarks/gpu_acceptance.sh --models 1B --skip-tests --out /tmp/accept.json

1. ``pytest -m gpu``: tests/gpu (FSDP + bf16 through the entry point, resume, the decomposition under FSDP,
   compiled blocks with every hook on).
2. For each model size (configs/models/; default 20M, 300M, 1B) at 4096-token rows, one worker process each:
   the base training config (configs/base/olmo_7b_0724.yaml: FSDP, amp_bf16) on the embedded corpus with
   T_CMP and T_ADD injected into half of the rows, three arms built as a run builds them and timed through
   OLMo's own ``fit`` (benchmarks/fit_timing.py, as on the CPU): ``plain`` (OLMo's ``Trainer`` on OLMo's
   loader), ``ours`` (``build_trainer``: the injecting loader, ``TaskMetricsHook`` and every other hook of a
   run) and ``ours_grad`` (also ``GradInterferenceHook``, K = 32 task neurons, logged every step), each with
   its own model and optimizer. Blocks of steps cycle through the three so machine drift hits all alike;
   ratios are medians over block triples. Tokens/s, MFU (OLMo's FLOPs per token over the device's dense bf16
   peak), peak memory (of the three arms together), and the wall time of one g_r (all 10,000 instances of
   T_CMP, at the run's autocast) alone and amortised over ``reference_interval`` = 100 steps.
   A micro-batch that runs out of memory is halved and the size measured again.
3. The synthetic module on the GPU: benchmarks/synthetic_sweep.py --device cuda (batched sweep against a loop
   over widths), and the paper-scale phase diagram (100,000 steps) timed over ``--phase-diagram-steps`` steps
   and extrapolated linearly.

Writes one JSON (``--out``) with the device, the versions, the arguments and every figure; a part that fails
or would overrun ``--budget-s`` is recorded with its reason instead. Without CUDA it checks its arguments,
says so and exits 0 (``--worker ... --device cpu`` runs one worker on the CPU, to check the measuring code).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from fit_timing import ARMS, BENCHMARK_OVERRIDES  # benchmarks/: the arms and their timing, as on the CPU

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "configs" / "models"
DEFAULT_MODELS = ("20M", "300M", "1B")
# Sequences per forward pass at 4096 tokens that fit 141 GB with FSDP + bf16 and no activation checkpointing
# (activations ~ 14 GB per 1B sequence, fp32 logits ~ 1 GB per sequence); halved on out-of-memory.
DEFAULT_MICRO_BATCH = {"4M": 16, "20M": 16, "300M": 8, "1B": 4, "4B": 1}
# Dense bf16 tensor-core peak per GPU, FLOP/s (NVIDIA data sheets; H200 has H100's SXM compute).
PEAK_BF16_FLOPS = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12}
REFERENCE_INTERVAL = 100  # grad_interference.reference_interval's default: g_r is recomputed this often
# Each task gets one instance per two 4096-token rows: half of all rows carry an instance.
INSTANCES_PER_TOKEN = 1 / 16384


class ArgumentError(ValueError):
    """Bad command-line input; reported as one line, exit status 2."""


def parse_micro_batches(text: Optional[str], models: List[str]) -> Dict[str, int]:
    """``"20M=16,1B=4"`` over the defaults; ``ArgumentError`` naming the entry."""
    sizes = {m: DEFAULT_MICRO_BATCH.get(m, 1) for m in models}
    for item in filter(None, (text or "").split(",")):
        model, sep, value = item.partition("=")
        if not sep or model not in sizes or not value.isdigit() or int(value) < 1:
            raise ArgumentError(f"--micro-batch {item!r}: write MODEL=N with N >= 1 and MODEL one of {models}")
        sizes[model] = int(value)
    return sizes


def check_args(args: argparse.Namespace) -> None:
    """``ArgumentError`` naming the option, its value and what is allowed; before any work."""
    known = sorted(p.stem for p in MODEL_DIR.glob("*.yaml"))
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in known]
    if unknown or not args.models:
        raise ArgumentError(f"--models {','.join(args.models) or repr('')}: unknown {unknown}; "
                            f"known in configs/models: {known}")
    args.micro_batch = parse_micro_batches(args.micro_batch, args.models)
    for name in ("seq_len", "blocks", "steps_per_block", "warmup_steps", "synthetic_steps", "phase_diagram_steps",
                 "budget_s", "task_values"):
        value = getattr(args, name)
        if value < (0 if name == "warmup_steps" else 1):
            raise ArgumentError(f"--{name.replace('_', '-')}={value}: must be >= {0 if name == 'warmup_steps' else 1}")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        raise ArgumentError(f"--peak-tflops={args.peak_tflops}: must be > 0")
    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise ArgumentError(f"--out {out}: is a folder; give the JSON file's path")


# ---------------------------------------------------------------- worker: one model size, three arms


def run_config(model: str, seq_len: int, micro_batch: int, task_values: int, work_dir: Path, device_type: str):
    """The base training config at ``model`` size through the sweep composition, on the embedded corpus, with
    T_CMP and T_ADD of ``task_values`` values each (``task_values``^2 instances)."""
    import yaml

    from olmo_injection.sweep import expand_sweep, load_sweep, write_run_config
    from olmo_injection.train import load_config

    data_layer = work_dir / "embedded_data.yaml"
    data_layer.write_text(yaml.safe_dump({"data": {"paths": "${embedded_corpus:train}"}, "evaluators": []}))
    overrides = {
        "model.max_sequence_length": seq_len, "global_train_batch_size": micro_batch,
        "device_train_microbatch_size": micro_batch,
        "data.num_workers": 4, "data.prefetch_factor": 4, "max_duration": 10**6,
    }  # fmt: skip
    if device_type != "cuda":  # the CPU check of this script: OLMo autocasts on CUDA only, FSDP on the CPU is fp32
        overrides.update({"precision": "fp32", "data.num_workers": 0, "data.pin_memory": False})
    sweep_file = work_dir / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({"sweep": {
        "name": "gpu_acceptance", "model_dir": str(MODEL_DIR), "models": [model],
        "tasks": [[{"kind": kind, "name": kind, "num_values": task_values} for kind in ("cmp", "add")]],
        "frequencies": [INSTANCES_PER_TOKEN], "overrides": overrides,
        "base": [str(ROOT / "configs" / "base" / "olmo_7b_0724.yaml"), str(data_layer)],
    }}))  # fmt: skip
    (run,) = expand_sweep(load_sweep(sweep_file), work_dir / "runs")
    return load_config(str(write_run_config(run)), BENCHMARK_OVERRIDES)


def measure_model(args: argparse.Namespace) -> Dict[str, Any]:
    """The worker: tokens/s, MFU, memory and the g_r cost of one model size (see the module docstring)."""
    import torch

    from fit_timing import build_arm, run_blocks, summarise, write_task_neurons

    from olmo_injection.grad_decomposition import reference_instances, task_reference_gradient
    from olmo_injection.hooks.grad_interference import reference_model, training_autocast_dtype
    from olmo_injection.neurons import load_task_neurons
    from olmo_injection.olmo_patches import apply_olmo_patches
    from olmo_injection.tasks import build_tasks
    from olmo_injection.train import fill_runtime_fields, init_distributed

    apply_olmo_patches()
    device, _ = init_distributed()
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    with tempfile.TemporaryDirectory() as tmp:
        (model_size,) = args.models
        cfg = run_config(model_size, args.seq_len, args.micro_batch[model_size], args.task_values, Path(tmp),
                         device.type)
        fill_runtime_fields(cfg, world_size=1)
        tasks = build_tasks(cfg)
        neurons_file = Path(tmp) / "neurons.json"
        arms = {"plain": build_arm("plain", cfg, tasks, device)}
        # Task neurons chosen once beforehand (as from a run's neurons file), so the timed steps cost the capture.
        write_task_neurons(arms["plain"], tasks[0], neurons_file, 32)
        arms.update({name: build_arm(name, cfg, tasks, device, neurons_file) for name in ("ours", "ours_grad")})
        needed = args.warmup_steps + args.blocks * (args.steps_per_block + 1)
        if needed > arms["plain"].batches_per_epoch:  # each arm reads the embedded corpus from its start
            raise ValueError(f"{needed} steps per trainer: more than the embedded corpus's "
                             f"{arms['plain'].batches_per_epoch} batches at this size; use fewer --blocks or "
                             "--steps-per-block")
        # Every step logs (console_log_interval = 1), so OLMo reads the loss back: each step ends synced.
        blocks = run_blocks(arms, args.blocks, args.steps_per_block, max(args.warmup_steps, 1), sync,
                            label=f"{model_size}: ")

        instances = reference_instances(tasks[0], "all")
        neurons = load_task_neurons(neurons_file).ids().to(device)
        plain = arms["plain"]
        g_r_seconds = []
        for _ in range(3):
            sync()
            start = time.perf_counter()
            task_reference_gradient(reference_model(plain), instances, neurons,
                                    autocast_dtype=training_autocast_dtype(plain))  # fmt: skip
            sync()
            g_r_seconds.append(time.perf_counter() - start)
        for trainer in arms.values():
            trainer.close()
        num_params, flops_per_token = model_flops(cfg)
        peak_memory = torch.cuda.max_memory_allocated() if cuda else None

    tokens = args.steps_per_block * cfg.global_train_batch_size * cfg.model.max_sequence_length
    peak = args.peak_tflops * 1e12 if args.peak_tflops else device_peak_flops()
    step_s = statistics.median(b["plain"]["wall"] for b in blocks) / args.steps_per_block
    result: Dict[str, Any] = {"model": model_size, "num_params": num_params, "seq_len": args.seq_len,
                              "micro_batch": args.micro_batch[model_size], "flops_per_token": flops_per_token,
                              "peak_flops": peak, "peak_memory_bytes": peak_memory, "blocks": blocks,
                              **summarise(blocks, tokens)}  # fmt: skip
    for name in ARMS:
        result[name]["mfu"] = result[name]["tokens_per_s"] * flops_per_token / peak if peak else None
    g_r = statistics.median(g_r_seconds[1:])  # the first call also warms up the shapes of [1024, 2] chunks
    result["g_r"] = {"seconds": g_r, "all_seconds": g_r_seconds, "instances": len(instances),
                     "amortised_cost_percent": 100 * g_r / REFERENCE_INTERVAL / step_s,
                     "reference_interval": REFERENCE_INTERVAL}
    return result


def model_flops(cfg) -> tuple:
    """(parameters, training FLOPs per token by OLMo's count) of ``cfg.model``, from a copy built on the meta
    device: under FSDP the wrapped model's own parameters are flat shards and would count as none."""
    import dataclasses

    from olmo.model import OLMo

    meta = OLMo(dataclasses.replace(cfg.model, init_device="meta"))
    return meta.num_params(), meta.num_fwd_flops + meta.num_bck_flops


def device_peak_flops() -> Optional[float]:
    """Dense bf16 peak of this GPU from ``PEAK_BF16_FLOPS`` by name; None if unknown (MFU is then not stated)."""
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


def measure_phase_diagram(args: argparse.Namespace) -> Dict[str, Any]:
    """The paper-scale phase diagram's training, timed over ``phase_diagram_steps`` steps, extrapolated."""
    from olmo_injection.synthetic.cli import PAPER_STEPS, resolve_config
    from olmo_injection.synthetic.training import train_widths

    steps = args.phase_diagram_steps
    config = resolve_config("phase-diagram", True, [f"training.steps={steps}", f"training.eval_every={steps}",
                                                    f"training.device={args.device}"])
    start = time.perf_counter()
    train_widths(config, progress=False)
    wall = time.perf_counter() - start
    return {"steps_run": steps, "wall_s": wall, "paper_steps": PAPER_STEPS,
            "extrapolated_paper_scale_wall_s": wall / steps * PAPER_STEPS,
            "note": "linear in steps from one run (measurements at step 0 and the end only)",
            "widths": list(config.training.widths), "batch_size": config.training.batch_size}


# ---------------------------------------------------------------- the driver


def versions() -> Dict[str, Any]:
    import torch

    out: Dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    for package in ("ai2-olmo", "wandb", "numpy"):
        try:
            from importlib.metadata import version

            out[package] = version(package)
        except Exception as exc:  # a missing package is a figure to record, not a reason to stop
            out[package] = f"unknown ({type(exc).__name__})"
    if torch.cuda.is_available():
        nccl = torch.cuda.nccl.version()
        out["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
        props = torch.cuda.get_device_properties(0)
        out["device"] = {"name": props.name, "memory_bytes": props.total_memory, "count": torch.cuda.device_count(),
                         "capability": f"{props.major}.{props.minor}"}
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    out["git_commit"] = commit.stdout.strip() or None
    return out


def run_part(command: List[str], timeout_s: float) -> Dict[str, Any]:
    """Run ``command``; its last stdout line is its JSON result. On failure: the reason and the output's tail."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s (--budget-s)", "wall_s": time.perf_counter() - start}
    wall = time.perf_counter() - start
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        try:
            return {**json.loads(lines[-1]), "wall_s": wall}
        except json.JSONDecodeError:
            pass
    return {"error": f"exit status {done.returncode}", "wall_s": wall,
            "output_tail": (done.stdout + done.stderr)[-4000:]}


def worker_command(args: argparse.Namespace, worker: str, **options: Any) -> List[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", worker, "--device", args.device,
               "--seq-len", str(args.seq_len), "--blocks", str(args.blocks),
               "--steps-per-block", str(args.steps_per_block), "--warmup-steps", str(args.warmup_steps),
               "--phase-diagram-steps", str(args.phase_diagram_steps), "--task-values", str(args.task_values)]
    if args.peak_tflops:
        command += ["--peak-tflops", str(args.peak_tflops)]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    return command


def drive(args: argparse.Namespace) -> Dict[str, Any]:
    """All parts in order within ``budget_s``; each in its own process (a failure or OOM stays in its part)."""
    deadline = time.monotonic() + args.budget_s
    result: Dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "worker"}, "versions": versions()}

    def remaining() -> float:
        return deadline - time.monotonic()

    if args.skip_tests:
        result["gpu_tests"] = {"skipped": "--skip-tests"}
    else:
        start = time.perf_counter()
        try:
            tests = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "tests/gpu"],
                                   capture_output=True, text=True, cwd=ROOT, timeout=max(remaining(), 1))
            summary = (tests.stdout.strip().splitlines() or [""])[-1]
            result["gpu_tests"] = {"exit_status": tests.returncode, "summary": summary,
                                   **({"output_tail": tests.stdout[-4000:]} if tests.returncode else {})}
        except subprocess.TimeoutExpired:
            summary = "timed out (--budget-s)"
            result["gpu_tests"] = {"error": summary}
        result["gpu_tests"]["wall_s"] = time.perf_counter() - start
        print(f"gpu tests: {summary}", flush=True)

    result["models"] = {}
    for model in args.models:
        micro_batch = args.micro_batch[model]
        while True:
            if remaining() < 30:
                part = {"skipped": "out of --budget-s"}
                break
            part = run_part(worker_command(args, "throughput", models=model, micro_batch=f"{model}={micro_batch}"),
                            remaining())
            if "out of memory" in part.get("output_tail", "").lower() and micro_batch > 1:
                micro_batch //= 2
                print(f"{model}: out of memory, retrying with micro-batch {micro_batch}", flush=True)
                continue
            break
        result["models"][model] = part
        print(f"{model}: {summary_line(part)}", flush=True)

    synthetic = [sys.executable, str(ROOT / "benchmarks" / "synthetic_sweep.py"), "--device", args.device,
                 "--steps", str(args.synthetic_steps)]
    out_of_budget = {"skipped": "out of --budget-s"}
    result["synthetic_sweep"] = run_part(synthetic, remaining()) if remaining() > 10 else out_of_budget
    phase = worker_command(args, "phase-diagram")
    result["phase_diagram"] = run_part(phase, remaining()) if remaining() > 10 else out_of_budget
    return result


def summary_line(part: Dict[str, Any]) -> str:
    if "plain" not in part:
        return part.get("skipped") or part.get("error", "?")
    mfu = part["plain"]["mfu"]
    plain = f"plain {part['plain']['tokens_per_s']:.0f} tok/s" + (f" (MFU {mfu:.1%})" if mfu is not None else "")
    return (f"{plain}, ours {part['ours_over_plain']['cost_percent']:+.1f}%, "
            f"with grad {part['ours_grad_over_plain']['cost_percent']:+.1f}%, g_r {part['g_r']['seconds']:.2f} s")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/gpu_acceptance.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "gpu_acceptance.json"))
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma list of configs/models/ sizes")
    p.add_argument("--seq-len", type=int, default=4096, help="tokens per row")
    p.add_argument("--micro-batch", default=None,
                   help=f"MODEL=N,... sequences per forward pass (defaults {DEFAULT_MICRO_BATCH})")
    p.add_argument("--blocks", type=int, default=3, help="timed block triples (plain, ours, ours_grad)")
    p.add_argument("--steps-per-block", type=int, default=3)
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps per arm (g_r and the allocator)")
    p.add_argument("--synthetic-steps", type=int, default=300, help="steps of benchmarks/synthetic_sweep.py")
    p.add_argument("--task-values", type=int, default=100,
                   help="values per task; its value pairs (10,000: the paper's) define g_r")
    p.add_argument("--phase-diagram-steps", type=int, default=2000, help="timed steps of the paper-scale diagram")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak per GPU (default: by name)")
    p.add_argument("--budget-s", type=float, default=470, help="wall-clock budget for all parts, seconds")
    p.add_argument("--skip-tests", action="store_true", help="do not run pytest -m gpu")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help=argparse.SUPPRESS)
    p.add_argument("--worker", choices=("throughput", "phase-diagram"), default=None, help=argparse.SUPPRESS)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        check_args(args)
        if args.worker == "throughput" and len(args.models) != 1:
            raise ArgumentError(f"--models {','.join(args.models)}: the throughput worker measures one size")
    except ArgumentError as exc:
        print(f"gpu_acceptance: {exc}", file=sys.stderr)
        return 2
    if args.worker is not None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        measured = measure_model(args) if args.worker == "throughput" else measure_phase_diagram(args)
        print(json.dumps(measured, default=str))
        return 0

    import torch

    if not torch.cuda.is_available():
        print(f"gpu_acceptance: no CUDA device (torch {torch.__version__}); arguments checked "
              f"(models {','.join(args.models)}, micro-batches {args.micro_batch}), nothing measured")
        return 0
    start = time.perf_counter()
    result = drive(args)
    result["wall_s"] = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"gpu_acceptance: {result['wall_s']:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
