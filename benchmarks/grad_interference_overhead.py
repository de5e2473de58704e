"""Training-step time with the per-step g = g_t + g_nt decomposition on against off, one run per model size.

    python benchmarks/grad_interference_overhead.py --model 4M [--seq-len 128] [--batch 8] [--microbatch 4]
    python benchmarks/grad_interference_overhead.py --model 20M --blocks 3

configs/tiny.yaml with the model size of configs/models/<size>.yaml (untied embeddings, DDP over one process)
trains on the embedded corpus with T_CMP and T_ADD injected, in two arms built as a run builds them
(``benchmarks/fit_timing.py``): "ours" (gradient interference off) and "ours_grad" (on, K task neurons from
a file chosen once beforehand, g_r computed once in the warm-up), timed through OLMo's ``fit`` in alternating
blocks, so the timed "on" steps cost exactly the per-step capture, split and reduction. The g_r recomputation
(every ``reference_interval`` steps) is timed on its own and reported amortised. Writes JSON with the arguments.
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

from fit_timing import BENCHMARK_OVERRIDES, build_arm, run_blocks, summarise, write_task_neurons

ROOT = Path(__file__).resolve().parents[1]


def model_overrides(size: str) -> list:
    model = yaml.safe_load((ROOT / "configs" / "models" / f"{size}.yaml").read_text())["model"]
    return [f"model.{key}={value}" for key, value in model.items()] + ["model.weight_tying=false"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="4M", help="a file name in configs/models/ (without .yaml)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8, help="sequences per step (one process)")
    parser.add_argument("--microbatch", type=int, default=4)
    parser.add_argument("--num-task-neurons", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=4, help="timed rounds (one block of each arm)")
    parser.add_argument("--steps-per-block", type=int, default=2)
    parser.add_argument("--reference-interval", type=int, default=100, help="R, for the amortised g_r cost")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="default: results/benchmarks/grad_interference_overhead_MODEL.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from olmo_injection.grad_decomposition import reference_instances, task_reference_gradient
    from olmo_injection.olmo_patches import apply_olmo_patches
    from olmo_injection.tasks import build_tasks
    from olmo_injection.train import fill_runtime_fields, init_distributed, load_config

    apply_olmo_patches()
    device, _ = init_distributed()
    with tempfile.TemporaryDirectory() as tmp:
        overrides = model_overrides(args.model) + BENCHMARK_OVERRIDES + [
            f"save_folder={tmp}/run", f"model.max_sequence_length={args.seq_len}",
            f"global_train_batch_size={args.batch}", f"device_train_microbatch_size={args.microbatch}",
            "max_duration=100000",
            # the paper's highest frequency: one instance in every 128-token sequence, over both tasks
            "injection.tasks.0.schedule.instances_per_token=0.00390625",
        ]  # fmt: skip
        cfg = load_config(str(ROOT / "configs" / "tiny.yaml"), overrides)
        fill_runtime_fields(cfg, world_size=1)
        tasks = build_tasks(cfg)
        neurons_file = Path(tmp) / "neurons.json"
        arms = {"ours": build_arm("ours", cfg, tasks, device)}
        model = arms["ours"].model
        print(f"model {args.model}: {model.num_params():,d} parameters")
        selection_s = write_task_neurons(arms["ours"], tasks[0], neurons_file, args.num_task_neurons)
        arms["ours_grad"] = build_arm("ours_grad", cfg, tasks, device, neurons_file)

        instances = reference_instances(tasks[0], "all")
        neurons = torch.tensor(json.loads(neurons_file.read_text())["neurons"])
        reference_s = []
        for _ in range(2):
            start = time.perf_counter()
            task_reference_gradient(model, instances, neurons)
            reference_s.append(time.perf_counter() - start)
        rounds = run_blocks(arms, args.blocks, args.steps_per_block, warmup_steps=1)
        for trainer in arms.values():
            trainer.close()

    tokens_per_block = args.steps_per_block * args.batch * args.seq_len
    step_s = statistics.median(r["ours"]["wall"] for r in rounds) / args.steps_per_block
    result = {
        "model": args.model,
        "num_params": model.num_params(),
        "blocks": rounds,
        **{clock: summarise(rounds, tokens_per_block, clock) for clock in ("wall", "cpu")},
        "reference_s": statistics.median(reference_s),
        "reference_cost_amortised": statistics.median(reference_s) / args.reference_interval / step_s,
        "selection_s": selection_s,
        "reference_instances": len(instances),
        "args": vars(args),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    for clock in ("wall", "cpu"):
        print(f"{clock}: per-step cost {result[clock]['ours_grad_over_ours']['cost_percent']:+.1f}%")
    print(f"g_r {result['reference_s']:.2f} s, amortised over R={args.reference_interval}: "
          f"{100 * result['reference_cost_amortised']:+.1f}%")
    out = Path(args.out or ROOT / "results" / "benchmarks" / f"grad_interference_overhead_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
