"""Example 7 (App. C.4): one neuron, a common and a rare rank-one task; rare alignment decays exponentially
across the gap between rare observations.

    olmo-inject synthetic one-neuron

Simulates gradient descent on the angle theta for several gaps and compares the measured decay of
a = sin^2(theta) over each gap with the linearised prediction (1 - 2 lr lambda_c)^(2G). Writes
``one_neuron.csv`` / ``.json`` / ``.png``. No training of the student; runs in a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..theory import OneNeuronToy
from .records import save_figure, write_records

NAME = "one_neuron"


def run(out_dir: Path, gaps: Sequence[int] = (5, 20, 50), common_strength: float = 1.0, rare_strength: float = 1.0,
        learning_rate: float = 0.01, theta0: float = 0.05, observations: int = 5) -> dict:
    """Simulate every gap, write outputs, return the summary (measured vs predicted decay per gap)."""
    if not 0 < learning_rate * common_strength < 0.25:
        raise ValueError(f"learning_rate = {learning_rate} is invalid: lr * common_strength must be in (0, 0.25) "
                         "for the linearised decay to describe the dynamics")
    toy = OneNeuronToy(common_strength, rare_strength, learning_rate)
    rows, summary = [], dict(common_strength=common_strength, rare_strength=rare_strength,
                             learning_rate=learning_rate, theta0=theta0, per_gap={})
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for gap in gaps:
        alignment = toy.simulate(theta0, gap, observations)
        cycle = gap + 1
        after_rare = alignment[1::cycle][:observations]
        before_next = alignment[cycle::cycle][:observations]
        measured = before_next / after_rare
        summary["per_gap"][gap] = dict(measured_decay_over_gap=float(np.median(measured)),
                                       predicted_decay_over_gap=toy.gap_decay_factor(gap))
        rows += [dict(gap=gap, step=t, rare_alignment=a) for t, a in enumerate(alignment)]
        line = axis.plot(alignment, label=f"G={gap} simulated")[0]
        envelope_steps = np.arange(len(alignment))
        start = after_rare[0]
        axis.plot(envelope_steps[1:cycle + 1], start * (1 - 2 * learning_rate * common_strength) ** (2 * np.arange(cycle)),
                  "--", color=line.get_color(), label=f"G={gap} predicted decay")
    axis.set(yscale="log", xlabel="step", ylabel="rare alignment sin^2(theta)", title="Example 7: one neuron, two tasks")
    axis.legend(fontsize=7)
    write_records(out_dir, NAME, dict(gaps=list(gaps), common_strength=common_strength, rare_strength=rare_strength,
                                      learning_rate=learning_rate, theta0=theta0, observations=observations),
                  summary, rows)
    save_figure(figure, out_dir, NAME)
    return summary
