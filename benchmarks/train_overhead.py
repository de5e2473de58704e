"""Cost of injection + per-step task metrics: tokens/s of OLMo's plain training step against ours, one run.

    python benchmarks/train_overhead.py                       # the 4M default config, CPU
    python benchmarks/train_overhead.py --config configs/tiny.yaml --blocks 10 --steps-per-block 4

Both trainers share the config, the model initialisation, the DDP wrapper (one-process gloo group) and the
data files. "plain" is OLMo's ``Trainer`` on OLMo's own ``build_train_dataloader``; "ours" is
``InjectionTrainer`` on the injecting loader with ``TaskMetricsHook`` reducing task losses at every step (the
worst case: ``console_log_interval`` = 1, as with ``wandb.log_interval`` = 1). Evaluation and checkpoints are
left out of both. Timing includes fetching the batch from the loader, as in ``Trainer.fit``. Blocks of steps
alternate plain/ours so that load from other processes hits both alike; the reported cost is the median of
the per-block-pair ratios, by wall clock and by process CPU time (the steadier of the two on a shared
machine). Writes a JSON with the config and every block's numbers.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def build(cfg, injected: bool, device):
    from olmo.data import build_train_dataloader
    from olmo.optim import build_optimizer, build_scheduler
    from olmo.train import Trainer

    from olmo_injection.hooks.task_metrics import TaskMetricsHook
    from olmo_injection.tasks import build_tasks
    from olmo_injection.train import build_model, build_trainer

    if not injected:  # the baseline: OLMo's own trainer and data loader
        model, dist_model = build_model(cfg, device)
        return Trainer(cfg=cfg, model=model, dist_model=dist_model, optim=build_optimizer(cfg, dist_model),
                       scheduler=build_scheduler(cfg), device=device, evaluators=[], epoch=0,
                       train_loader=build_train_dataloader(cfg))
    trainer = build_trainer(cfg, build_tasks(cfg), device)
    trainer.hooks = [h for h in trainer.hooks if isinstance(h, TaskMetricsHook)]  # injection + task metrics
    for hook in trainer.hooks:
        hook.on_train_start(trainer)
    return trainer


def timed_steps(trainer, batches, steps: int) -> dict:
    """Wall and process-CPU seconds of ``steps`` training steps as ``Trainer.fit`` runs them: fetch, step,
    cancel check when due."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        batch = next(batches)
        trainer.global_step += 1
        trainer.train_step(batch, reduce_global_loss=trainer.should_log_this_step())
        if trainer.global_step % trainer.cfg.canceled_check_interval == 0:
            trainer.check_if_cancelled()
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(Path(__file__).parents[1] / "configs" / "default.yaml"))
    parser.add_argument("--blocks", type=int, default=5, help="timed block pairs (plain, ours)")
    parser.add_argument("--steps-per-block", type=int, default=3)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = least noise on a shared CPU)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_overhead.json"))
    args, overrides = parser.parse_known_args()

    from olmo_injection.olmo_patches import apply_olmo_patches
    from olmo_injection.train import fill_runtime_fields, init_distributed, load_config

    torch.set_num_threads(args.threads)
    apply_olmo_patches()
    device, _ = init_distributed()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [f"save_folder={tmp}", "save_overwrite=true", "wandb=null",
                                        "console_log_interval=1", *overrides])
        fill_runtime_fields(cfg, world_size=1)
        # Separate copies: InjectionTrainer asks for a cancel check every step (signals), OLMo every 50.
        trainers = {"plain": build(copy.deepcopy(cfg), False, device), "ours": build(copy.deepcopy(cfg), True, device)}
        batches = {name: iter(t.train_loader) for name, t in trainers.items()}
        for name, trainer in trainers.items():
            timed_steps(trainer, batches[name], args.warmup_steps)
        blocks = []
        for _ in range(args.blocks):
            seconds = {name: timed_steps(t, batches[name], args.steps_per_block) for name, t in trainers.items()}
            blocks.append(seconds)
            print("  ".join(f"{clock}: plain {seconds['plain'][clock]:.2f}s ours {seconds['ours'][clock]:.2f}s"
                            for clock in ("wall", "cpu")))
    tokens_per_block = args.steps_per_block * cfg.global_train_batch_size * cfg.model.max_sequence_length
    result = {"blocks": blocks}
    for clock in ("wall", "cpu"):
        ratio = statistics.median(b["ours"][clock] / b["plain"][clock] for b in blocks)
        result[clock] = {
            "tokens_per_second_plain": tokens_per_block * len(blocks) / sum(b["plain"][clock] for b in blocks),
            "tokens_per_second_ours": tokens_per_block * len(blocks) / sum(b["ours"][clock] for b in blocks),
            "median_ratio_ours_over_plain": ratio,
            "cost_percent": 100 * (ratio - 1),
        }
    result.update({
        "args": vars(args),
        "overrides": overrides,
        "device": str(device),
        "config": cfg.asdict(),
    })
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    for clock in ("wall", "cpu"):
        r = result[clock]
        print(f"{clock}: tokens/s plain {r['tokens_per_second_plain']:.0f}, ours {r['tokens_per_second_ours']:.0f}; "
              f"median cost {r['cost_percent']:+.2f}%")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
