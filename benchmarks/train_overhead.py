"""Cost of injection + per-step task metrics: tokens/s of OLMo's plain training against ours, one run.

    python benchmarks/train_overhead.py                       # the 4M default config, CPU
    python benchmarks/train_overhead.py --config configs/tiny.yaml --blocks 10 --steps-per-block 4
    python benchmarks/train_overhead.py --arms plain,ours,ours_grad   # gradient interference too

Every arm trains through OLMo's own ``fit`` on the same config (its own model, one-process group), timed as
``benchmarks/fit_timing.py`` describes: "plain" is OLMo's ``Trainer`` on OLMo's ``build_train_dataloader``,
"ours" the trainer ``olmo_injection.train.build_trainer`` makes for a run (injecting loader, every hook), with
task metrics reduced at every step; evaluations and checkpoints are left out of all. The reported cost is the
median of the per-round ratios, by wall clock and by process CPU time (the steadier of the two on a shared
machine). Writes a JSON with the config and every round's numbers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from fit_timing import ARMS, BENCHMARK_OVERRIDES, build_arm, run_blocks, summarise, write_task_neurons

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--arms", default="plain,ours",
                        help=f"comma list of {','.join(ARMS)}; the first is the baseline")
    parser.add_argument("--blocks", type=int, default=5, help="timed rounds (one block of each arm)")
    parser.add_argument("--steps-per-block", type=int, default=3)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--num-task-neurons", type=int, default=32, help="K, for ours_grad")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = least noise on a shared CPU)")
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "train_overhead.json"))
    args, overrides = parser.parse_known_args()
    names = args.arms.split(",")
    if not names or any(n not in ARMS for n in names) or len(set(names)) != len(names):
        parser.error(f"--arms {args.arms}: distinct names from {','.join(ARMS)}")

    from olmo_injection.olmo_patches import apply_olmo_patches
    from olmo_injection.tasks import build_tasks
    from olmo_injection.train import fill_runtime_fields, init_distributed, load_config

    torch.set_num_threads(args.threads)
    apply_olmo_patches()
    device, _ = init_distributed()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [f"save_folder={tmp}", "save_overwrite=true", "max_duration=1000000",
                                        *BENCHMARK_OVERRIDES, *overrides])
        fill_runtime_fields(cfg, world_size=1)
        tasks = build_tasks(cfg)
        neurons_file = Path(tmp) / "neurons.json"
        arms = {}
        for name in names:
            arms[name] = build_arm(name, cfg, tasks, device, neurons_file)
            if not neurons_file.exists() and "ours_grad" in names:
                write_task_neurons(arms[name], tasks[0], neurons_file, args.num_task_neurons)
        rounds = run_blocks(arms, args.blocks, args.steps_per_block, args.warmup_steps)
        for trainer in arms.values():
            trainer.close()
    tokens_per_block = args.steps_per_block * cfg.global_train_batch_size * cfg.model.max_sequence_length
    result = {"blocks": rounds, **{clock: summarise(rounds, tokens_per_block, clock) for clock in ("wall", "cpu")},
              "args": vars(args), "overrides": overrides, "device": str(device), "config": cfg.asdict()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    for clock in ("wall", "cpu"):
        r = result[clock]
        costs = ", ".join(f"{n} {r[f'{n}_over_{names[0]}']['cost_percent']:+.2f}%" for n in names[1:])
        print(f"{clock}: tokens/s " + ", ".join(f"{n} {r[n]['tokens_per_s']:.0f}" for n in names)
              + f"; median cost against {names[0]}: {costs}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
