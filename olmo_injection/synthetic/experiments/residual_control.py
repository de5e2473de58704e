"""Paper Fig. 3 (and App. E.2 over several beta): the frequent-task residual delta_F controls rare-task learning.

    olmo-inject synthetic residual-control                 # one beta
    olmo-inject synthetic beta-sweep                       # several beta (App. E.2)

Measured on the final checkpoint of every width: delta_F (with the optimum delta_F^*(N) of Corollary 5), the
rarest task's corrected signal of its leading feature (Prop. 6 is about one rare rank-one direction; with
m = 16 the whole-task s~_r, also written, stays below the random baseline even at the optimum), with Prop. 6's
critical width N_crit and Theorem 3's, and the frequent tasks' gradient norm against Theorem 4's bound
2 sqrt(lambda_1(M_F) delta_F).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..config import SyntheticConfig
from ..mixture import task_prior, task_spectra
from ..theory import (critical_width, frequent_set, optimal_frequent_residual, prop6_critical_width, utilities)
from ..training import TrainingResult, train_widths
from .records import save_figure, write_records

NAME = "residual_control"
RESIDUAL_LINTHRESH = 1e-3  # delta_F axes are linear below this, logarithmic above


def analyse(config: SyntheticConfig, result: TrainingResult) -> tuple:
    """(rows, summary) for the rarest task against the frequent set of ``config.metrics.frequent_mass``."""
    widths = np.asarray(config.training.widths)
    prior, spectra = task_prior(config.mixture), task_spectra(config.mixture)
    utility = utilities(prior, spectra)
    frequent = frequent_set(prior, config.metrics.frequent_mass)
    rare = len(prior) - 1
    n_crit = prop6_critical_width(utility, frequent, float(utility[rare, 0]))
    final = result.final
    optimum = optimal_frequent_residual(utility, frequent, widths)
    rows = [dict(width=int(n), frequent_residual=final.frequent_residual[i], optimal_frequent_residual=optimum[i],
                 rare_signal=final.signal[i, rare], rare_corrected_signal=final.corrected_signal[i, rare],
                 rare_leading_feature_corrected_signal=final.leading_feature_corrected_signal[i, rare],
                 frequent_gradient_norm=final.frequent_gradient_norm[i],
                 frequent_gradient_bound=final.frequent_gradient_bound[i])
            for i, n in enumerate(widths)]
    above = widths >= n_crit
    summary = dict(
        steps=int(result.steps[-1]),
        prior_exponent=config.mixture.prior_exponent,
        frequent_set_size=int(frequent.size),
        rare_task=rare + 1,
        prop6_critical_width=n_crit,
        theorem3_critical_width=int(critical_width(utility)[rare]),
        residual_threshold=float(optimal_frequent_residual(utility, frequent, [n_crit])[0]),
        # {width: s~}; null at N = d, where s~ is undefined.
        rare_leading_feature_corrected_signal_below_critical=dict(
            zip(widths[~above].tolist(), final.leading_feature_corrected_signal[~above, rare])),
        rare_leading_feature_corrected_signal_at_or_above_critical=dict(
            zip(widths[above].tolist(), final.leading_feature_corrected_signal[above, rare])),
        gradient_bound_holds_at_every_width=bool(np.all(final.frequent_gradient_norm <= final.frequent_gradient_bound * (1 + 1e-9))),
    )
    return rows, summary


def plot_panels(axes, config: SyntheticConfig, rows: list, summary: dict, label: str = "") -> None:
    """Draw the three panels (residual vs width, rare signal vs width, rare signal vs residual) on ``axes``."""
    widths = np.array([r["width"] for r in rows])
    residual = np.array([r["frequent_residual"] for r in rows])
    optimum = np.array([r["optimal_frequent_residual"] for r in rows])
    rare = np.array([r["rare_leading_feature_corrected_signal"] for r in rows])
    line = axes[0].plot(widths, residual, "o-", label=f"measured {label}")[0]
    axes[0].plot(widths, optimum, "--", color=line.get_color(), label=f"optimum delta_F*(N) {label}")
    axes[1].plot(widths, rare, "o-", color=line.get_color(), label=f"measured {label}")
    axes[1].axvline(summary["prop6_critical_width"], color=line.get_color(), ls=":",
                    label=f"Prop. 6 N_crit = {summary['prop6_critical_width']} {label}")
    axes[2].plot(residual, rare, "o", color=line.get_color(), label=f"measured {label}")
    axes[2].axvline(summary["residual_threshold"], color=line.get_color(), ls=":",
                    label=f"threshold delta_F*(N_crit) {label}")
    # symlog: delta_F reaches exactly 0 (predicted) or rounding noise (measured) once F fits in the width.
    axes[0].set(xscale="log", xlabel="width N", ylabel="frequent residual delta_F")
    axes[0].set_yscale("symlog", linthresh=RESIDUAL_LINTHRESH)
    axes[1].set(xscale="log", xlabel="width N", ylabel=f"rarest task (k={summary['rare_task']}) leading-feature s~")
    axes[2].set(xlabel="frequent residual delta_F", ylabel="rarest task leading-feature s~")
    axes[2].set_xscale("symlog", linthresh=RESIDUAL_LINTHRESH)
    for axis in axes[:2]:
        axis.set_xticks(widths, [str(n) for n in widths], minor=False)
        axis.minorticks_off()
    for axis in axes:
        axis.legend(fontsize=7)


def run(config: SyntheticConfig, out_dir: Path, progress: bool = True,
        result: Optional[TrainingResult] = None) -> dict:
    """Train (unless ``result`` is given), write CSV/JSON/PNG into ``out_dir``, return the summary."""
    result = result or train_widths(config, progress=progress)
    rows, summary = analyse(config, result)
    write_records(out_dir, NAME, config.to_dict(), summary, rows)
    figure, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    plot_panels(axes[:3], config, rows, summary)
    widths = [r["width"] for r in rows]
    axes[3].plot(widths, [r["frequent_gradient_norm"] for r in rows], "o-", label="||G_F|| measured")
    axes[3].plot(widths, [r["frequent_gradient_bound"] for r in rows], "--", label="Thm 4 bound")
    axes[3].set(xscale="log", yscale="log", xlabel="width N", ylabel="frequent-task gradient norm")
    axes[3].legend(fontsize=7)
    save_figure(figure, out_dir, NAME)
    return summary


def run_beta_sweep(config: SyntheticConfig, betas: Sequence[float], out_dir: Path, progress: bool = True) -> dict:
    """Residual control for each prior exponent in ``betas`` (App. E.2); one figure, one table."""
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    all_rows, summaries = [], {}
    for beta in betas:
        swept = replace(config, mixture=replace(config.mixture, prior_exponent=float(beta))).validate()
        rows, summary = analyse(swept, train_widths(swept, progress=progress))
        all_rows += [dict(prior_exponent=beta, **row) for row in rows]
        summaries[str(beta)] = summary
        plot_panels(axes, swept, rows, summary, label=f"beta={beta}")
    write_records(out_dir, "beta_sweep", dict(config.to_dict(), betas=list(betas)), summaries, all_rows)
    save_figure(figure, out_dir, "beta_sweep")
    return summaries
