"""Wall time of the batched width sweep against a Python loop over widths (same steps, same machine, one run).

    python benchmarks/synthetic_sweep.py                     # K = 32, the 16 default widths, 100 steps
    python benchmarks/synthetic_sweep.py --steps 300 --batch-size 64 --threads 1

The loop baseline trains each width alone through the same ``train_widths`` (so each width is the very model
the batched sweep trains, see tests/synthetic/test_synthetic_training.py). Both include one measurement at
step 0 and one at the end. Prints one JSON line with both wall times and their ratio, and the time of the
encoder matmuls alone (forward and weight gradient for all widths, the same FLOPs in both forms): the batched
sweep can never be faster than that, so ``loop_seconds / encoder_matmul_seconds`` bounds the possible speed-up.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from olmo_injection.synthetic.config import DEFAULT_WIDTHS, SyntheticConfig, TrainingConfig
from olmo_injection.synthetic.training import train_widths


def encoder_matmul_seconds(config: SyntheticConfig, device: torch.device) -> float:
    """Wall time of ``steps`` forward + weight-gradient matmuls of an encoder with sum(widths) rows on a fresh
    (batch, d) input every step: the part of a step whose FLOPs batching cannot remove."""
    train = config.training
    dtype = getattr(torch, train.dtype)
    encoder = torch.randn(sum(train.widths), config.mixture.ambient_dim, dtype=dtype, device=device, requires_grad=True)
    start = time.perf_counter()
    for _ in range(train.steps):
        x = torch.randn(train.batch_size, config.mixture.ambient_dim, dtype=dtype, device=device)
        hidden = x @ encoder.T
        hidden.backward(torch.ones_like(hidden))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=TrainingConfig.batch_size)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the CPU is shared)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = SyntheticConfig(training=TrainingConfig(widths=DEFAULT_WIDTHS, steps=args.steps, batch_size=args.batch_size,
                                                     eval_every=args.steps, device=args.device)).validate()

    # Untimed warm-up of both forms (one-time library initialisation would otherwise be charged to whichever
    # runs first).
    warm_up = replace(config.training, steps=2, eval_every=2)
    train_widths(replace(config, training=warm_up), progress=False)
    train_widths(replace(config, training=replace(warm_up, widths=config.training.widths[:1])), progress=False)

    start = time.perf_counter()
    train_widths(config, progress=False)
    batched_s = time.perf_counter() - start

    start = time.perf_counter()
    for width in config.training.widths:
        train_widths(replace(config, training=replace(config.training, widths=(width,))), progress=False)
    loop_s = time.perf_counter() - start

    device = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    matmul_s = encoder_matmul_seconds(config, device)

    print(json.dumps(dict(num_tasks=config.mixture.num_tasks, widths=len(config.training.widths), steps=args.steps,
                          batch_size=args.batch_size, threads=args.threads,
                          device=str(device), batched_seconds=round(batched_s, 2), loop_seconds=round(loop_s, 2),
                          speedup=round(loop_s / batched_s, 2), encoder_matmul_seconds=round(matmul_s, 2),
                          speedup_bound=round(loop_s / matmul_s, 2))))


if __name__ == "__main__":
    main()
