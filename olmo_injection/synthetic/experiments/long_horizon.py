"""App. E.4: more steps do not close the gap for tasks above a width's capacity.

    olmo-inject synthetic long-horizon                      # widths 16, 64, 256; 4x the default steps
    olmo-inject synthetic long-horizon --paper-scale        # 1M steps

Per width, the mean normalised loss of the tasks Theorem 3 says it cannot hold (n_k(N) = 0) and of those it
holds, at every evaluation. Writes ``long_horizon.csv`` / ``.json`` / ``.png``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..config import SyntheticConfig
from ..mixture import task_prior, task_spectra
from ..theory import predicted_normalised_loss, retained_features, utilities
from ..training import train_widths
from .records import save_figure, write_records

NAME = "long_horizon"


def run(config: SyntheticConfig, out_dir: Path, progress: bool = True) -> dict:
    """Train, write outputs, return the summary (per width: above-capacity loss at the middle and end)."""
    result = train_widths(config, progress=progress)
    widths = np.asarray(config.training.widths)
    spectra = task_spectra(config.mixture)
    retained = retained_features(utilities(task_prior(config.mixture), spectra), widths)
    predicted = predicted_normalised_loss(spectra, retained)
    above = retained == 0
    rows, curves = [], {}
    for step, measurement in zip(result.steps, result.measurements):
        for i, n in enumerate(widths):
            rows.append(dict(step=step, width=int(n),
                             above_capacity_mean_normalised_loss=measurement.normalised_loss[i, above[i]].mean()
                             if above[i].any() else np.nan,
                             within_capacity_mean_normalised_loss=measurement.normalised_loss[i, ~above[i]].mean(),
                             above_capacity_mean_corrected_signal=measurement.corrected_signal[i, above[i]].mean()
                             if above[i].any() else np.nan))
    middle = len(result.steps) // 2
    summary = dict(steps=int(result.steps[-1]), per_width={})
    for i, n in enumerate(widths):
        within = ~above[i]
        entry = dict(above_capacity_tasks=int(above[i].sum()),
                     predicted_within_capacity_loss=float(predicted[i, within].mean()),
                     within_capacity_loss_at_middle=float(result.measurements[middle].normalised_loss[i, within].mean()),
                     within_capacity_loss_at_end=float(result.final.normalised_loss[i, within].mean()))
        if above[i].any():
            entry.update(
                predicted_above_capacity_loss=float(predicted[i, above[i]].mean()),
                above_capacity_loss_at_middle=float(result.measurements[middle].normalised_loss[i, above[i]].mean()),
                above_capacity_loss_at_end=float(result.final.normalised_loss[i, above[i]].mean()),
                above_capacity_corrected_signal_at_end=float(result.final.corrected_signal[i, above[i]].mean()))
        summary["per_width"][int(n)] = entry
    write_records(out_dir, NAME, config.to_dict(), summary, rows)
    # Step 0 (the random initialisation, loss far above 1) is left out so the axes show the approach to the plateau.
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for group, axis in (("above", axes[0]), ("within", axes[1])):
        for i, n in enumerate(widths):
            tasks = above[i] if group == "above" else ~above[i]
            if not tasks.any():
                continue
            steps, values = zip(*[(r["step"], r[f"{group}_capacity_mean_normalised_loss"]) for r in rows
                                  if r["width"] == n and r["step"] > 0])
            line = axis.plot(steps, values, "o-", label=f"N={n} measured ({int(tasks.sum())} tasks)")[0]
            axis.axhline(predicted[i, tasks].mean(), color=line.get_color(), ls="--", label=f"N={n} Thm 3")
        axis.set(xscale="log", xlabel="step", ylabel="mean normalised loss",
                 title=f"tasks {group} capacity (n_k(N) {'= 0' if group == 'above' else '> 0'})")
        axis.legend(fontsize=7)
    save_figure(figure, out_dir, NAME)
    return summary
