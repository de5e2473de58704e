"""Training every width of a sweep together: one data stream, one batched forward/backward per step.

Per step: draw the task ids (``TaskSampler``), fresh inputs and targets; compute every width's batch MSE in
one pass; back-propagate their sum (each width's gradient then depends on its own loss only); clip each
width's gradient by its own norm; take one AdamW step (element-wise, so per width by construction) under an
inverse-square-root schedule with linear warm-up. Width i trained here equals width i trained alone with the
same seed (``tests/synthetic/test_synthetic_training.py`` checks this against a plain single-width reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, List, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import SyntheticConfig, TrainingConfig
from .metrics import Measurement, measure
from .mixture import TaskSampler, iid_task_sampler, sample_batch, task_prior, task_spectra
from .student import BatchedStudent
from .theory import frequent_set


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU. Raises ``ValueError`` if ``cuda`` is asked for but absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("training.device = 'cuda' is invalid: no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(name)


def inverse_sqrt_factor(step: int, warmup_steps: int) -> float:
    """Learning-rate multiplier of the ``step``-th update (0-based): linear warm-up to 1 over ``warmup_steps``
    updates, then sqrt(warmup_steps / (step + 1))."""
    count = step + 1
    return min(count / warmup_steps, (warmup_steps / count) ** 0.5)


def stream_seeds(seed: int) -> tuple:
    """(task-id seed, input seed) of the data stream, derived from the run seed."""
    task_seed, input_seed = np.random.SeedSequence([seed, 0xDA7A]).generate_state(2)
    return int(task_seed), int(input_seed)


def build_student(config: SyntheticConfig, device: torch.device) -> BatchedStudent:
    """The sweep's freshly initialised student (every width of ``config.training.widths``) on ``device``."""
    mix, train = config.mixture, config.training
    return BatchedStudent(train.widths, mix.ambient_dim, mix.num_tasks, mix.block_dim, train.seed,
                          getattr(torch, train.dtype)).to(device)


def make_optimizer(student: BatchedStudent, train: TrainingConfig) -> torch.optim.AdamW:
    """AdamW over every parameter of ``student`` with the configured hyper-parameters, fused (one kernel for all
    widths; element-wise, so each width's update is the one it would get alone)."""
    return torch.optim.AdamW(student.parameters(), lr=train.learning_rate, betas=(train.adam_beta1, train.adam_beta2),
                             eps=train.adam_eps, weight_decay=train.weight_decay, fused=True)


@dataclass
class TrainingResult:
    """A trained sweep and its measurements at the evaluated steps (ascending, step 0 = initialisation)."""

    student: BatchedStudent
    steps: List[int] = field(default_factory=list)
    measurements: List[Measurement] = field(default_factory=list)
    train_loss: List[np.ndarray] = field(default_factory=list)
    """Per-width batch loss at each evaluated step (shape (num_widths,); NaN at step 0)."""

    @property
    def final(self) -> Measurement:
        return self.measurements[-1]


def train_widths(config: SyntheticConfig, task_sampler: Optional[TaskSampler] = None,
                 extra_eval_steps: Iterable[int] = (), progress: bool = True) -> TrainingResult:
    """Train all ``config.training.widths`` together and measure them every ``eval_every`` steps, at step 0,
    at the last step and at ``extra_eval_steps``. ``task_sampler`` defaults to the i.i.d. mixture stream."""
    config.validate()
    mix, train = config.mixture, config.training
    device = resolve_device(train.device)
    dtype = getattr(torch, train.dtype)
    prior, spectra = task_prior(mix), task_spectra(mix)
    frequent = frequent_set(prior, config.metrics.frequent_mass)
    sampler = task_sampler or iid_task_sampler(prior, train.batch_size)

    student = build_student(config, device)
    optimizer = make_optimizer(student, train)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: inverse_sqrt_factor(step, train.warmup_steps))
    task_seed, input_seed = stream_seeds(train.seed)
    task_generator = torch.Generator().manual_seed(task_seed)
    input_generator = torch.Generator(device=device).manual_seed(input_seed)
    sqrt_spectra = torch.as_tensor(spectra, dtype=dtype, device=device).sqrt()

    eval_steps = {0, train.steps} | set(range(train.eval_every, train.steps + 1, train.eval_every)) | set(extra_eval_steps)
    result = TrainingResult(student=student)

    def record(step: int, batch_loss: np.ndarray) -> None:
        result.steps.append(step)
        result.measurements.append(measure(student, spectra, prior, frequent))
        result.train_loss.append(batch_loss)

    record(0, np.full(student.num_widths, np.nan))
    bar = tqdm(range(1, train.steps + 1), desc=f"synthetic: {student.num_widths} widths", disable=not progress,
               mininterval=2.0)
    for step in bar:
        tasks = sampler(step, task_generator).to(device)
        x, y = sample_batch(tasks, mix, sqrt_spectra, input_generator)
        per_width_loss = student.per_width_loss(x, tasks, y)
        optimizer.zero_grad(set_to_none=True)
        per_width_loss.sum().backward()
        student.clip_grad_norm_per_width_(train.grad_clip)
        optimizer.step()
        schedule.step()
        if step in eval_steps:
            losses = per_width_loss.detach().cpu().numpy()
            record(step, losses)
            bar.set_postfix(widest_loss=f"{losses[-1]:.4f}", narrowest_loss=f"{losses[0]:.4f}")
    return result
