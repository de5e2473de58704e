"""App. E.1.2: rank-1 tasks (m = 1). Utility order is the prior order, so task k's critical width is k.

    olmo-inject synthetic rank-one                          # K = 32, every width 1..31

Measured critical width of task k: the smallest width from which its corrected signal s~_k stays at or above
``metrics.learned_fraction``. Writes ``rank_one.csv`` / ``.json`` / ``.png``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..config import SyntheticConfig
from ..mixture import task_prior, task_spectra
from ..theory import critical_width, utilities
from ..training import train_widths
from .phase_diagram import measured_critical_index
from .records import save_figure, write_records

NAME = "rank_one"


def run(config: SyntheticConfig, out_dir: Path, progress: bool = True) -> dict:
    """Train all widths, compare measured with predicted critical widths, write outputs, return the summary."""
    if config.mixture.block_dim != 1:
        raise ValueError(f"mixture.block_dim = {config.mixture.block_dim} is invalid for rank-one: must be 1")
    result = train_widths(config, progress=progress)
    widths = np.asarray(config.training.widths)
    utility = utilities(task_prior(config.mixture), task_spectra(config.mixture))
    predicted = critical_width(utility)
    corrected = result.final.corrected_signal
    # "Learned" is s~ >= f, i.e. loss-like 1 - s~ below 1 - f.
    index = measured_critical_index(1.0 - corrected, np.full(corrected.shape[1], config.metrics.learned_fraction))
    measured = np.array([widths[i] if i < len(widths) else -1 for i in index])
    within = measured > 0
    summary = dict(
        steps=int(result.steps[-1]),
        predicted_critical_width=predicted.tolist(),
        measured_critical_width=measured.tolist(),
        mean_abs_error_widths=float(np.abs(measured[within] - predicted[within]).mean()) if within.any() else None,
        linear_fit_slope=float(np.polyfit(np.arange(1, len(measured) + 1)[within], measured[within], 1)[0])
        if within.sum() > 1 else None,
    )
    rows = [dict(width=int(n), task=k + 1, corrected_signal=corrected[i, k], signal=result.final.signal[i, k])
            for i, n in enumerate(widths) for k in range(corrected.shape[1])]
    write_records(out_dir, NAME, config.to_dict(), summary, rows)
    figure, (heat, line) = plt.subplots(1, 2, figsize=(12, 4.5))
    image = heat.pcolormesh(np.arange(corrected.shape[1] + 1) + 0.5, np.arange(len(widths) + 1) - 0.5, corrected,
                            vmin=0, vmax=1, shading="flat")
    figure.colorbar(image, ax=heat, label="s~_k measured")
    heat.set_yticks(range(len(widths)), [str(n) for n in widths])
    heat.set(xlabel="task k", ylabel="width N", title="rank-1: corrected signal")
    tasks = np.arange(1, len(predicted) + 1)
    line.plot(tasks, predicted, "-", label="predicted N_k = k (Thm 3)")
    line.plot(tasks[within], measured[within], "o", label="measured")
    line.set(xlabel="task k", ylabel="critical width", title="rank-1 critical width")
    line.legend()
    save_figure(figure, out_dir, NAME)
    return summary
