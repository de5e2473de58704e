"""The matched-frequency injection stream of paper Fig. 4.

The rare task is withheld for ``gap - 1`` steps, then injected in one batch enlarged by ``n_rare`` rare rows,
with ``n_rare`` chosen so that the rare task's long-run share of all rows equals its prior ``pi_r``:
``n_rare / (gap * batch_size + n_rare) = pi_r``. Ordinary rows follow the prior conditioned on "not rare".
"""

from __future__ import annotations

import numpy as np
import torch

from .mixture import TaskSampler


def injected_rare_rows(rare_prior: float, batch_size: int, gap: int) -> int:
    """Rare rows per injection batch: round(pi_r * gap * batch_size / (1 - pi_r)).

    Raises ``ValueError`` when that rounds to zero (the gap is too short to hold one rare row at that
    frequency)."""
    rows = int(round(rare_prior * gap * batch_size / (1.0 - rare_prior)))
    if rows < 1:
        raise ValueError(f"gap = {gap} is invalid: with batch_size = {batch_size} and rare prior {rare_prior:.3g} "
                         f"an injection would hold {rare_prior * gap * batch_size / (1 - rare_prior):.2f} rare rows; "
                         "use a larger gap or batch size")
    return rows


def realised_rare_frequency(rare_rows: int, batch_size: int, gap: int) -> float:
    """The rare task's long-run share of rows under the injection stream (equals the prior up to rounding)."""
    return rare_rows / (gap * batch_size + rare_rows)


def is_injection_step(step: int, gap: int) -> bool:
    """Injections happen at steps gap, 2*gap, ... (steps are 1-based)."""
    return step % gap == 0


def matched_frequency_sampler(prior: np.ndarray, batch_size: int, rare_task: int, gap: int) -> TaskSampler:
    """Task ids per step: ``batch_size`` non-rare rows from the conditioned prior, plus the injected rare rows
    (appended at the end of the batch) on injection steps."""
    common = torch.as_tensor(prior, dtype=torch.float64).clone()
    common[rare_task] = 0.0
    rare_rows = injected_rare_rows(float(prior[rare_task]), batch_size, gap)

    def sample(step: int, generator: torch.Generator) -> torch.Tensor:
        tasks = torch.multinomial(common, batch_size, replacement=True, generator=generator)
        if is_injection_step(step, gap):
            tasks = torch.cat([tasks, torch.full((rare_rows,), rare_task, dtype=tasks.dtype)])
        return tasks

    return sample
