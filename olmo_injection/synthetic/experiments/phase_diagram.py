"""Paper Fig. 2: per-task loss against width, with Theorem 3's predicted staircase on the same axes.

    olmo-inject synthetic phase-diagram                    # reduced default horizon, minutes on 2 CPU cores
    olmo-inject synthetic phase-diagram --paper-scale      # 100K steps, as in the paper
    olmo-inject synthetic complexity                       # the same with alpha ranging across tasks (App. D)

Writes ``phase_diagram.csv`` (one line per (width, task)), ``phase_diagram.json`` (config + the correctness
bars: median |measured - predicted| normalised loss, measured vs predicted critical widths) and
``phase_diagram.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import matplotlib.pyplot as plt

from ..config import SyntheticConfig
from ..mixture import task_prior, task_spectra
from ..theory import critical_width, predicted_normalised_loss, retained_features, utilities
from ..training import TrainingResult, train_widths
from .records import save_figure, write_records

NAME = "phase_diagram"


def learned_threshold(spectra: np.ndarray, learned_fraction: float) -> np.ndarray:
    """Normalised loss below which task k counts as learned: 1 - f * lambda_{k,1} / tr(C_k). Shape (K,)."""
    return 1.0 - learned_fraction * spectra[:, 0] / spectra.sum(axis=1)


def measured_critical_index(normalised_loss: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Per task, the index of the first width (row) whose loss is below ``threshold`` and stays below it at
    every larger width; ``num_widths`` when there is none. ``normalised_loss`` is (num_widths, K)."""
    below = normalised_loss < threshold[None, :]
    stays = np.flip(np.cumprod(np.flip(below, axis=0), axis=0), axis=0).astype(bool)
    return np.where(stays.any(axis=0), stays.argmax(axis=0), normalised_loss.shape[0])


def predicted_critical_index(widths: np.ndarray, critical: np.ndarray) -> np.ndarray:
    """Per task, the index of the first grid width >= its predicted critical width (``len(widths)`` if none)."""
    return np.searchsorted(widths, critical, side="left")


def analyse(config: SyntheticConfig, result: TrainingResult) -> tuple:
    """(rows, summary) comparing the final measurement with Theorem 3."""
    widths = np.asarray(config.training.widths)
    prior, spectra = task_prior(config.mixture), task_spectra(config.mixture)
    utility = utilities(prior, spectra)
    retained = retained_features(utility, widths)
    predicted = predicted_normalised_loss(spectra, retained)
    final = result.final
    error = np.abs(final.normalised_loss - predicted)
    critical = critical_width(utility)
    predicted_index = predicted_critical_index(widths, critical)
    measured_index = measured_critical_index(final.normalised_loss,
                                             learned_threshold(spectra, config.metrics.learned_fraction))
    grid_steps_off = np.abs(measured_index - predicted_index)
    rows = [dict(width=int(n), task=k + 1, prior=prior[k], retained_features=int(retained[i, k]),
                 predicted_normalised_loss=predicted[i, k], normalised_loss=final.normalised_loss[i, k],
                 optimal_decoder_normalised_loss=1.0 - final.signal[i, k], signal=final.signal[i, k],
                 corrected_signal=final.corrected_signal[i, k])
            for i, n in enumerate(widths) for k in range(len(prior))]

    def width_at(index):
        return [int(widths[i]) if i < len(widths) else None for i in index]

    summary = dict(
        steps=int(result.steps[-1]),
        median_abs_error=float(np.median(error)),
        mean_abs_error=float(error.mean()),
        median_abs_error_optimal_decoder=float(np.median(np.abs(1.0 - final.signal - predicted))),
        median_abs_error_per_width=dict(zip(widths.tolist(), np.median(error, axis=1).tolist())),
        predicted_critical_width_exact=critical.tolist(),
        predicted_critical_width_on_grid=width_at(predicted_index),
        measured_critical_width_on_grid=width_at(measured_index),
        critical_width_grid_steps_off=grid_steps_off.tolist(),
        max_critical_width_grid_steps_off=int(grid_steps_off.max()),
        bar_median_abs_error_at_most_0_05=bool(np.median(error) <= 0.05),
        bar_every_critical_width_within_one_grid_step=bool(grid_steps_off.max() <= 1),
    )
    return rows, summary


def plot(config: SyntheticConfig, result: TrainingResult, summary: dict, title: str) -> plt.Figure:
    """(a) measured normalised loss over (task, width) with predicted and measured critical widths;
    (b) measured (points) and predicted (lines) normalised loss against width for a few tasks."""
    widths = np.asarray(config.training.widths)
    prior, spectra = task_prior(config.mixture), task_spectra(config.mixture)
    utility = utilities(prior, spectra)
    num_tasks = len(prior)
    figure, (heat, curves) = plt.subplots(1, 2, figsize=(13, 5))
    image = heat.pcolormesh(np.arange(num_tasks + 1) + 0.5, np.arange(len(widths) + 1) - 0.5,
                            result.final.normalised_loss, vmin=0, vmax=1.0, cmap="viridis", shading="flat")
    figure.colorbar(image, ax=heat, label="normalised loss (measured)")
    # The predicted staircase runs along the lower edge of the first grid cell at which a task is kept.
    predicted_index = predicted_critical_index(widths, np.asarray(summary["predicted_critical_width_exact"]))
    heat.step(np.arange(1, num_tasks + 1), predicted_index - 0.5, where="mid", color="red", lw=2,
              label="predicted critical width (Thm 3)")
    measured = [np.nan if n is None else list(widths).index(n) for n in summary["measured_critical_width_on_grid"]]
    heat.plot(np.arange(1, num_tasks + 1), measured, "w.", label="measured critical width")
    heat.set_yticks(range(len(widths)), [str(n) for n in widths])
    heat.set_xlabel("task k (prior decreasing)")
    heat.set_ylabel("width N")
    heat.legend(loc="upper left", fontsize=8)
    heat.set_title(f"{title}: median |meas - pred| = {summary['median_abs_error']:.3f}")
    dense = np.unique(np.round(np.logspace(0, np.log10(widths.max()), 300)).astype(int))
    dense_pred = predicted_normalised_loss(spectra, retained_features(utility, dense))
    for k, colour in zip(_shown_tasks(num_tasks), plt.cm.plasma(np.linspace(0, 0.9, 5))):
        curves.plot(dense, dense_pred[:, k], color=colour, lw=1.5, label=f"task {k + 1} predicted")
        curves.plot(widths, result.final.normalised_loss[:, k], "o", color=colour, label=f"task {k + 1} measured")
    curves.set_xscale("log")
    curves.set_xlabel("width N")
    curves.set_ylabel("normalised loss")
    curves.legend(fontsize=7, ncol=2)
    curves.set_title(f"after {summary['steps']} steps")
    return figure


def _shown_tasks(num_tasks: int) -> List[int]:
    return sorted({0, num_tasks // 8, num_tasks // 4, num_tasks // 2, num_tasks - 1})


def run(config: SyntheticConfig, out_dir: Path, progress: bool = True, name: str = NAME,
        result: Optional[TrainingResult] = None) -> dict:
    """Train (unless ``result`` is given), write CSV/JSON/PNG into ``out_dir``, return the summary."""
    result = result or train_widths(config, progress=progress)
    rows, summary = analyse(config, result)
    write_records(out_dir, name, config.to_dict(), summary, rows)
    save_figure(plot(config, result, summary, name.replace("_", " ")), out_dir, name)
    return summary
