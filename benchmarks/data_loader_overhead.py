"""Batches per second of OLMo's plain training loader against the injecting one, same data, same run.

    python benchmarks/data_loader_overhead.py [--seq-len 128] [--global-batch 256] [--repeats 5] [--instances-per-token 7.8e-3]

Uses the embedded corpus at the paper's highest frequency (7.8e-3 instances per token: one instance in every
128-token sequence) with T_CMP and T_ADD both injected, alternating plain and injecting epochs so machine
noise hits both alike; reports the cost by wall time and by this process's CPU time. Prints the median rates and their ratio, and writes them as JSON next to the config.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from olmo.config import DataConfig, ModelConfig, TokenizerConfig
from olmo.data import build_train_dataloader

from olmo_injection.config import InjectionConfig, InjectionTrainConfig, ScheduleConfig, TaskConfig
from olmo_injection.corpus import ensure_embedded_corpus
from olmo_injection.injecting_dataset import build_injecting_train_dataloader
from olmo_injection.tasks import OLMO_TOKENIZER_FILE, build_tasks


def epoch_rate(loader) -> tuple:
    """(batches per wall second, batches per CPU second of this process) over one epoch."""
    wall, cpu, n = time.perf_counter(), time.process_time(), 0
    for _ in loader:
        n += 1
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--global-batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--instances-per-token", type=float, default=1 / 128,
                        help="total over both tasks (default 7.8e-3, the paper's highest: every row receives one)")
    parser.add_argument("--out", default="results/benchmarks/data_loader_overhead.json")
    args = parser.parse_args()

    corpus = ensure_embedded_corpus()
    frequency = args.instances_per_token / 2  # per task
    with tempfile.TemporaryDirectory() as tmp:
        cfg = InjectionTrainConfig(
            save_folder=tmp,
            save_overwrite=True,
            global_train_batch_size=args.global_batch,
            device_train_batch_size=args.global_batch,
            model=ModelConfig(max_sequence_length=args.seq_len, vocab_size=50280, embedding_size=50304,
                              eos_token_id=50279, pad_token_id=1),
            data=DataConfig(paths=corpus.train_paths, num_workers=0),
            tokenizer=TokenizerConfig(identifier=OLMO_TOKENIZER_FILE),
            injection=InjectionConfig(seed=0, tasks=[
                TaskConfig(name="cmp", kind="cmp", seed=0,
                           schedule=ScheduleConfig(mode="frequency", instances_per_token=frequency)),
                TaskConfig(name="add", kind="add", seed=1,
                           schedule=ScheduleConfig(mode="frequency", instances_per_token=frequency)),
            ]),
        )
        tasks = build_tasks(cfg)
        plain, ours = [], []
        for i in range(args.repeats):
            plain.append(epoch_rate(build_train_dataloader(cfg)))
            ours.append(epoch_rate(build_injecting_train_dataloader(cfg, tasks)))
            print(f"repeat {i + 1}/{args.repeats}: plain {plain[-1][0]:.1f} batches/s, injecting {ours[-1][0]:.1f} batches/s")
    # Each pair ran back to back, so its ratio cancels slow drifts in machine load; CPU time is steadier still
    # on a shared machine.
    result = {
        "plain_batches_per_s": statistics.median(p[0] for p in plain),
        "injecting_batches_per_s": statistics.median(o[0] for o in ours),
        "cost_wall_median_of_pairs": 1 - statistics.median(o[0] / p[0] for o, p in zip(ours, plain)),
        "cost_cpu_median_of_pairs": 1 - statistics.median(o[1] / p[1] for o, p in zip(ours, plain)),
        "args": vars(args),
    }
    print(json.dumps(result, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
