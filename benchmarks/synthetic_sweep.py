"""Wall time of the batched width sweep against a Python loop over widths (same steps, same machine, one run).

    python benchmarks/synthetic_sweep.py                     # K = 32, the 16 default widths, 100 steps
    python benchmarks/synthetic_sweep.py --steps 300 --batch-size 64 --threads 2

The loop baseline trains each width alone through the same ``train_widths`` (so each width is the very model
the batched sweep trains, see tests/synthetic/test_synthetic_training.py). Both include one measurement at
step 0 and one at the end. Prints one JSON line with both wall times, their ratio, and the *floor*: the work
that any form of the sweep must do and that batching cannot share out, timed in its batched form (per step one
batch draw, the encoder's forward and weight-gradient matmuls for all sum(N) rows, one fused AdamW step over all
parameters; plus the two measurements). No batched sweep can be faster than the floor, so
``speedup_bound = loop_seconds / floor_seconds`` bounds the speed-up any batching could give.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from typing import Callable, Dict

import torch

from olmo_injection.synthetic.config import DEFAULT_WIDTHS, SyntheticConfig, TrainingConfig
from olmo_injection.synthetic.metrics import measure
from olmo_injection.synthetic.mixture import task_prior, task_spectra
from olmo_injection.synthetic.theory import frequent_set
from olmo_injection.synthetic.training import build_student, make_optimizer, resolve_device, train_widths


def floor_seconds(config: SyntheticConfig, device: torch.device) -> Dict[str, float]:
    """Wall time (s) of the sweep's unshareable work over ``steps`` steps, by part: ``encoder_matmuls`` (a fresh
    (batch, d) input, forward and weight gradient of the stacked encoder), ``optimizer`` (AdamW on every
    parameter) and ``measurements`` (at step 0 and at the end)."""
    mix, train = config.mixture, config.training
    dtype = getattr(torch, train.dtype)
    student = build_student(config, device)
    optimizer = make_optimizer(student, train)
    for decoders in student.decoders:
        decoders.grad = torch.zeros_like(decoders)
    spectra, prior = task_spectra(mix), task_prior(mix)
    frequent = frequent_set(prior, config.metrics.frequent_mass)
    seconds = dict(encoder_matmuls=0.0, optimizer=0.0, measurements=0.0)

    def timed(part: str, work: Callable[[], object]) -> None:
        start = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds[part] += time.perf_counter() - start

    def encoder_matmuls() -> None:
        x = torch.randn(train.batch_size, mix.ambient_dim, dtype=dtype, device=device)
        hidden = x @ student.encoder.T
        student.encoder.grad = None
        hidden.backward(torch.ones_like(hidden))

    timed("measurements", lambda: measure(student, spectra, prior, frequent))
    for _ in range(train.steps):
        timed("encoder_matmuls", encoder_matmuls)
        timed("optimizer", optimizer.step)
    timed("measurements", lambda: measure(student, spectra, prior, frequent))
    return seconds


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
    device = resolve_device(args.device)

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

    floor = floor_seconds(config, device)
    floor_s = sum(floor.values())
    print(json.dumps(dict(num_tasks=config.mixture.num_tasks, widths=len(config.training.widths), steps=args.steps,
                          batch_size=args.batch_size, threads=args.threads, device=str(device),
                          batched_seconds=round(batched_s, 2), loop_seconds=round(loop_s, 2),
                          speedup=round(loop_s / batched_s, 2),
                          floor_seconds={part: round(value, 2) for part, value in floor.items()},
                          speedup_bound=round(loop_s / floor_s, 2))))


if __name__ == "__main__":
    main()
