"""Training-step time with the per-step g = g_t + g_nt decomposition on against off, same trainer, same batches.

    python benchmarks/grad_interference_overhead.py --model 4M [--seq-len 128] [--batch 8] [--microbatch 4]
    python benchmarks/grad_interference_overhead.py --model 20M --steps 6

One run per model size: the real ``InjectionTrainer`` (configs/tiny.yaml with the model size of
configs/models/<size>.yaml, untied embeddings, DDP over one process) trains on the embedded corpus with T_CMP
and T_ADD injected; steps alternate between the hook list [GradInterferenceHook] and [] so machine noise hits
both alike, on the same pre-fetched batches. The hook's task neurons come from a file (chosen once beforehand)
and its reference direction g_r is computed once before timing, so the timed "on" steps cost exactly the
per-step capture, split and reduction. The g_r recomputation (every ``reference_interval`` steps) is timed
separately and reported amortised. Prints medians and ratios; writes JSON with the arguments.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def model_overrides(size: str) -> list:
    model = yaml.safe_load((ROOT / "configs" / "models" / f"{size}.yaml").read_text())["model"]
    return [f"--model.{key}={value}" for key, value in model.items()] + ["--model.weight_tying=false"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="4M", help="a file name in configs/models/ (without .yaml)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8, help="sequences per step (one process)")
    parser.add_argument("--microbatch", type=int, default=4)
    parser.add_argument("--num-task-neurons", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per arm (after one warm-up each)")
    parser.add_argument("--reference-interval", type=int, default=100, help="R, for the amortised g_r cost")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="default: results/benchmarks/grad_interference_overhead_MODEL.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from olmo_injection.grad_decomposition import select_task_neurons, task_reference_gradient
    from olmo_injection.grad_decomposition import reference_instances
    from olmo_injection.hooks.grad_interference import GradInterferenceHook
    from olmo_injection.hooks.grad_interference_config import GradInterferenceConfig
    from olmo_injection.neurons import TaskNeurons, first_mlp_block, num_neurons, save_task_neurons
    from olmo_injection.olmo_patches import apply_olmo_patches
    from olmo_injection.tasks import build_tasks
    from olmo_injection.train import build_trainer, fill_runtime_fields, init_distributed, load_config

    with tempfile.TemporaryDirectory() as tmp:
        overrides = model_overrides(args.model) + [
            f"--save_folder={tmp}/run", f"--model.max_sequence_length={args.seq_len}",
            f"--global_train_batch_size={args.batch}", f"--device_train_microbatch_size={args.microbatch}",
            "--wandb=null", "--evaluators=[]", "--console_log_interval=1", "--max_duration=100000",
            # the paper's highest frequency: one instance in every 128-token sequence, over both tasks
            "--injection.tasks.0.schedule.instances_per_token=0.00390625",
        ]  # fmt: skip
        cfg = load_config(str(ROOT / "configs" / "tiny.yaml"), overrides)
        apply_olmo_patches()
        device, _ = init_distributed()
        fill_runtime_fields(cfg, world_size=1)
        tasks = build_tasks(cfg)
        trainer = build_trainer(cfg, tasks, device)
        model, loader = trainer.model, trainer.train_loader
        block_neurons = num_neurons(first_mlp_block(model))
        print(f"model {args.model}: {model.num_params():,d} parameters, {block_neurons} neurons in block 0")

        instances = reference_instances(tasks[0], "all")
        start = time.perf_counter()
        ids, norms, _ = select_task_neurons(model, instances, args.num_task_neurons)
        selection_s = time.perf_counter() - start
        neurons_file = Path(tmp) / "neurons.json"
        save_task_neurons(TaskNeurons("cmp", ids.tolist(), norms.tolist(), block_neurons, None), neurons_file)
        reference_s = []
        for _ in range(2):
            start = time.perf_counter()
            task_reference_gradient(model, instances, ids)
            reference_s.append(time.perf_counter() - start)

        hook = GradInterferenceHook(
            GradInterferenceConfig(enabled=True, task="cmp", neurons_file=str(neurons_file), reference_interval=10**9),
            tasks,
        )
        batches = [batch for _, batch in zip(range(2 * (args.steps + 1)), loader)]
        hook.on_train_start(trainer)
        wall = {"off": [], "on": []}
        cpu = {"off": [], "on": []}  # this process's CPU time: less disturbed by other jobs on a shared machine
        for index, batch in enumerate(batches):
            arm = "on" if index % 2 else "off"
            trainer.hooks = [hook] if arm == "on" else []
            trainer.global_step += 1
            start, start_cpu = time.perf_counter(), time.process_time()
            metrics = trainer.train_step(batch)
            elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            if index >= 2:  # one warm-up step per arm (the first "on" step also computes g_r)
                wall[arm].append(elapsed)
                cpu[arm].append(elapsed_cpu)
            if arm == "on":
                assert "grad/cos_g_ref" in metrics, "the hook did not log"
            print(f"step {index + 1}/{len(batches)} {arm:>3}: {elapsed:.3f} s wall, {elapsed_cpu:.3f} s cpu")
        trainer.close()

    off, on = statistics.median(wall["off"]), statistics.median(wall["on"])
    off_cpu, on_cpu = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    # Each "on" step against the "off" step just before it (same stretch of machine load).
    paired = [b / a - 1 for a, b in zip(cpu["off"], cpu["on"])]
    result = {
        "model": args.model,
        "num_params": model.num_params(),
        "step_s_off": off,
        "step_s_on": on,
        "per_step_cost": on / off - 1,
        "step_cpu_s_off": off_cpu,
        "step_cpu_s_on": on_cpu,
        "per_step_cost_cpu": on_cpu / off_cpu - 1,
        "per_step_cost_cpu_paired_median": statistics.median(paired),
        "reference_s": statistics.median(reference_s),
        "reference_cost_amortised": statistics.median(reference_s) / args.reference_interval / off,
        "selection_s": selection_s,
        "reference_instances": len(instances),
        "args": vars(args),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=1))
    out = Path(args.out or ROOT / "results" / "benchmarks" / f"grad_interference_overhead_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
