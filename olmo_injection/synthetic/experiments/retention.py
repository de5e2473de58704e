"""Paper Fig. 4: matched-frequency retention of the rarest task, swept over gap G and width.

    olmo-inject synthetic retention                        # gaps 10,100,500; widths 16..256; 12K steps
    olmo-inject synthetic retention --gaps 100 --training.widths 32,256

The rarest task is withheld for G - 1 steps, then injected in one enlarged batch (``matched_frequency``), so
its long-run frequency equals its prior. For every gap, all widths train together; the rare task's corrected
leading-feature signal s~_r is measured right before, right after and at its peak (up to 64 steps later) of
every injection (at most 60 per gap). Writes ``retention.csv`` (one line per (gap, width, injection)),
``retention.json`` (config + per (gap, width): end-of-training s~_r, mean rise per injection step and up to its
peak, change from the peak to the next injection, the same for the raw leverage P_U[j1, j1] as log2 ratios,
s~_r before injections early vs late) and ``retention.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..config import SyntheticConfig
from ..matched_frequency import injected_rare_rows, matched_frequency_sampler, realised_rare_frequency
from ..mixture import task_prior
from ..training import train_widths
from .records import save_figure, write_records

NAME = "retention"


def peak_offsets(gap: int) -> list:
    """Steps after an injection at which s~_r is measured to find its peak: 0, 1, 2, 4, 8, ... below the gap.
    AdamW's momentum keeps pushing for tens of steps after the injection step, so the signal peaks later
    (measured: 14 to 28 steps after, at G = 100), not right after the injection step."""
    return sorted({0} | {2**k for k in range(int(np.log2(max(gap - 1, 1))) + 1) if 2**k < gap - 1})


def injection_trace(steps: Sequence[int], corrected: np.ndarray, gap: int) -> dict:
    """Per width, s~_r right before (after step s-1), right after (after step s), at its peak (largest over
    ``peak_offsets`` after s) for each traced injection s, and one gap later (after step s+G-1, just before the
    next injection; NaN past the end of training).

    ``corrected`` is (num_evaluations, num_widths) at ``steps``. Returns the injection steps and arrays of
    shape (num_injections, num_widths) under "before", "after", "peak" and "next_before"."""
    index = {step: i for i, step in enumerate(steps)}
    injections = [s for s in steps if s > 0 and s % gap == 0 and (s - 1) in index]
    missing = np.full(corrected.shape[1], np.nan)
    return dict(steps=np.array(injections),
                before=np.array([corrected[index[s - 1]] for s in injections]),
                after=np.array([corrected[index[s]] for s in injections]),
                peak=np.array([np.max([corrected[index[s + k]] for k in peak_offsets(gap) if s + k in index], axis=0)
                               for s in injections]),
                next_before=np.array([corrected[index[s + gap - 1]] if s + gap - 1 in index else missing
                                      for s in injections]))


def summarise_trace(trace: dict) -> dict:
    """Per width: mean rise at an injection step and up to the peak after it, mean change from the peak to just
    before the next injection (the forgetting), mean s~ before injections in the first and in the last quarter
    of training (accumulation shows as late > early)."""
    before, after, peak = trace["before"], trace["after"], trace["peak"]
    quarter = max(1, len(before) // 4)
    return dict(
        mean_rise_per_injection=(after - before).mean(axis=0),
        mean_change_over_following_gap=np.nanmean(trace["next_before"] - after, axis=0),
        mean_rise_to_peak=(peak - before).mean(axis=0),
        mean_change_from_peak_to_next_injection=np.nanmean(trace["next_before"] - peak, axis=0),
        mean_before_injection_first_quarter=before[:quarter].mean(axis=0),
        mean_before_injection_last_quarter=before[-quarter:].mean(axis=0),
    )


def traced_injections(steps: int, gap: int, max_traced: int) -> list:
    """Injection steps whose before/after signal is measured: all of them, or ``max_traced`` evenly spaced
    ones (measuring is the expensive part of a short-gap run)."""
    injections = list(range(gap, steps + 1, gap))
    if len(injections) <= max_traced:
        return injections
    return [injections[i] for i in np.unique(np.linspace(0, len(injections) - 1, max_traced).round().astype(int))]


def run(config: SyntheticConfig, gaps: Sequence[int], out_dir: Path, progress: bool = True,
        max_traced: int = 60) -> dict:
    """Train one batched sweep of widths per gap; write CSV/JSON/PNG into ``out_dir``; return the summary.

    The tracked signal is the rare task's leading-feature s~ (the feature an injection teaches first; the
    whole-task s~ is also recorded): with m = 16 even the optimum keeps only a few of the rare task's 16
    features at N = 256, so its whole-task s_k stays below the random baseline N/d = 0.5."""
    config.validate()
    prior = task_prior(config.mixture)
    rare = len(prior) - 1
    batch = config.training.batch_size
    for gap in gaps:  # fail on a bad gap before any training starts
        injected_rare_rows(float(prior[rare]), batch, gap)
    widths = np.asarray(config.training.widths)
    rows, summary, traces, final = [], {}, {}, {}
    for gap in gaps:
        sampler = matched_frequency_sampler(prior, batch, rare, gap)
        eval_steps = [s for k in traced_injections(config.training.steps, gap, max_traced)
                      for s in (k - 1, k + gap - 1, *(k + o for o in peak_offsets(gap)))]
        result = train_widths(config, task_sampler=sampler, extra_eval_steps=eval_steps, progress=progress)
        corrected = np.array([m.leading_feature_corrected_signal[:, rare] for m in result.measurements])
        whole_task = np.array([m.corrected_signal[:, rare] for m in result.measurements])
        trace = injection_trace(result.steps, corrected, gap)
        traces[gap], final[gap] = trace, corrected[-1]
        stats = summarise_trace(trace)
        # The raw leverage P_U[j1, j1] = N/d + (1 - N/d) s~: a width far below the rare task's critical width
        # keeps it orders of magnitude below N/d, where an injection's swing is invisible in s~ but is a clear
        # factor in the leverage itself (log2 ratios, so +1 = doubled at the peak, -1 = halved by the next).
        baseline = widths / config.mixture.ambient_dim
        leverage = {key: np.maximum(trace[key] * (1 - baseline) + baseline, 1e-12)
                    for key in ("before", "peak", "next_before")}
        stats["mean_log2_leverage_rise_to_peak"] = np.log2(leverage["peak"] / leverage["before"]).mean(axis=0)
        stats["mean_log2_leverage_change_from_peak_to_next_injection"] = np.nanmean(
            np.log2(leverage["next_before"] / leverage["peak"]), axis=0)
        stats["mean_leverage_before_injection"] = leverage["before"].mean(axis=0)
        rare_rows = injected_rare_rows(float(prior[rare]), batch, gap)
        summary[str(gap)] = dict(
            rare_rows_per_injection=rare_rows,
            realised_rare_frequency=realised_rare_frequency(rare_rows, batch, gap),
            rare_prior=float(prior[rare]),
            end_corrected_signal=dict(zip(widths.tolist(), corrected[-1].tolist())),
            end_whole_task_corrected_signal=dict(zip(widths.tolist(), whole_task[-1].tolist())),
            **{name: dict(zip(widths.tolist(), np.asarray(value).tolist())) for name, value in stats.items()},
        )
        for k, step in enumerate(trace["steps"]):
            for i, n in enumerate(widths):
                rows.append(dict(gap=gap, width=int(n), injection=k + 1, step=int(step),
                                 corrected_signal_before=trace["before"][k, i],
                                 corrected_signal_after=trace["after"][k, i],
                                 corrected_signal_peak=trace["peak"][k, i],
                                 corrected_signal_one_gap_later=trace["next_before"][k, i]))
    write_records(out_dir, NAME, dict(config.to_dict(), gaps=list(gaps)), summary, rows)
    save_figure(plot(widths, gaps, traces, final), out_dir, NAME)
    return summary


def plot(widths: np.ndarray, gaps: Sequence[int], traces: dict, final: dict) -> plt.Figure:
    """(a) end-of-training s~_r against gap per width; (b) s~_r before each injection and at its peak at the middle gap
    for the smallest and largest width; (c) rise at each injection and change over the following gap."""
    figure, (ends, dynamics, changes) = plt.subplots(1, 3, figsize=(17, 4.5))
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(widths)))
    for i, (n, colour) in enumerate(zip(widths, colours)):
        ends.plot(gaps, [final[g][i] for g in gaps], "o-", color=colour, label=f"N={n}")
    ends.axhline(0, color="grey", lw=0.8, label="random baseline")
    ends.set(xscale="log", xlabel="gap G (steps)", ylabel="rarest task leading-feature s~ at end", title="end of training")
    ends.legend(fontsize=7)
    gap = list(gaps)[len(gaps) // 2]
    trace = traces[gap]
    for i in sorted({0, len(widths) - 1}):
        steps = np.repeat(trace["steps"], 2) + np.tile([-1, 0], len(trace["steps"]))
        values = np.stack([trace["before"][:, i], trace["peak"][:, i]], axis=1).ravel()
        dynamics.plot(steps, values, "-", color=colours[i], label=f"N={widths[i]}")
        changes.plot(np.arange(1, len(trace["steps"]) + 1), trace["peak"][:, i] - trace["before"][:, i], "^",
                     color=colours[i], label=f"N={widths[i]} rise to peak")
        changes.plot(np.arange(1, len(trace["steps"]) + 1), trace["next_before"][:, i] - trace["peak"][:, i], "v",
                     color=colours[i], alpha=0.6, label=f"N={widths[i]} peak to next injection")
    dynamics.axhline(0, color="grey", lw=0.8)
    dynamics.set(xlabel="step", ylabel="rarest task leading-feature s~", title=f"dynamics, G={gap}")
    dynamics.legend(fontsize=7)
    changes.axhline(0, color="grey", lw=0.8)
    changes.set(xlabel="injection", ylabel="change in s~", title=f"per-injection rise / decay, G={gap}")
    changes.legend(fontsize=7)
    return figure
