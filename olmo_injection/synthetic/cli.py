"""``olmo-inject synthetic <experiment>``: each experiment of the synthetic module is one command.

    olmo-inject synthetic phase-diagram [--out DIR] [--paper-scale] [--training.steps=20000 ...]
    olmo-inject synthetic residual-control | beta-sweep | retention | rank-one | complexity | long-horizon
    olmo-inject synthetic one-neuron

Dotted overrides (``--training.batch_size=512``, ``--mixture.prior_exponent=2``, ``--training.widths=32,256``)
set any field of ``SyntheticConfig``; ``--dry-run`` prints the resolved config and stops. Outputs go to
``--out`` (default ``results/synthetic/<experiment>``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict

from .config import MixtureConfig, SyntheticConfig, TrainingConfig, log_width_grid, with_overrides

PAPER_STEPS = 100_000
PAPER_LONG_HORIZON_STEPS = 1_000_000


def _default_configs() -> Dict[str, Callable[[], SyntheticConfig]]:
    """Each experiment's starting config (before ``--paper-scale`` and overrides)."""
    base = SyntheticConfig
    return {
        "phase-diagram": base,
        "complexity": lambda: SyntheticConfig(mixture=MixtureConfig(spectrum_exponent=2.0, spectrum_exponent_rarest=0.5)),
        "residual-control": base,
        # At beta = 2 the rarest task gets 0.16 rows per step: 6000 steps are too few for it to be learned even at
        # N = 256 > its Theorem 3 critical width 208 (s~ = -0.24); 30000 are enough (0.88).
        "beta-sweep": lambda: SyntheticConfig(training=TrainingConfig(widths=log_width_grid(4, 512, 8), steps=30_000,
                                                                      eval_every=5_000)),
        # Steeper spectra (alpha = 3; the paper does not state alpha) put the rarest task's critical width at 25
        # (Prop. 6) to 46 (Theorem 3), so N = 32 sits between (learns at each injection, then is displaced) and
        # N = 256 far above (accumulates). With alpha = 1 it is 128-159 and N = 32 never leaves the random baseline.
        "retention": lambda: SyntheticConfig(mixture=MixtureConfig(spectrum_exponent=3.0),
                                             training=TrainingConfig(widths=(16, 32, 64, 128, 256), steps=12_000)),
        # The rare rank-1 tasks differ in utility by a few percent, so their order settles slowly: at 6000 steps
        # tasks 16-32 are still off by up to 10 widths (mean error 2.6), at 30000 by about one (~2 min on a core).
        "rank-one": lambda: SyntheticConfig(mixture=MixtureConfig(block_dim=1),
                                            training=TrainingConfig(widths=tuple(range(1, 32)), steps=30_000,
                                                                    eval_every=5_000)),
        "long-horizon": lambda: SyntheticConfig(training=TrainingConfig(widths=(16, 64, 256), steps=4 * TrainingConfig.steps,
                                                                        eval_every=TrainingConfig.steps // 2)),
    }


def _paper_scale(name: str, config: SyntheticConfig) -> SyntheticConfig:
    steps = PAPER_LONG_HORIZON_STEPS if name == "long-horizon" else PAPER_STEPS
    return replace(config, training=replace(config.training, steps=steps, eval_every=steps // 10))


def _int_list(text: str):
    return tuple(int(v) for v in text.split(","))


def _float_list(text: str):
    return tuple(float(v) for v in text.split(","))


def register(subparsers) -> None:
    """Add ``synthetic`` and its experiment sub-commands to the top-level parser."""
    synthetic = subparsers.add_parser("synthetic", help="mixture-of-regressions experiments (paper Sec. 3)",
                                      description=__doc__.split("\n\n")[0])
    experiments = synthetic.add_subparsers(dest="experiment", required=True)
    for name in list(_default_configs()) + ["one-neuron"]:
        parser = experiments.add_parser(name, help=f"run the {name} experiment")
        parser.add_argument("--out", type=Path, default=None, help="output folder (default results/synthetic/<name>)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        if name != "one-neuron":
            parser.add_argument("--paper-scale", action="store_true",
                                help=f"the paper's horizon ({PAPER_STEPS} steps; {PAPER_LONG_HORIZON_STEPS} for long-horizon)")
            parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
        if name == "retention":
            parser.add_argument("--gaps", type=_int_list, default=(10, 100, 500), help="comma list of gaps G")
        if name == "beta-sweep":
            parser.add_argument("--betas", type=_float_list, default=(1.0, 1.5, 2.0), help="comma list of beta")
        if name == "one-neuron":
            parser.add_argument("--gaps", type=_int_list, default=(5, 20, 50), help="comma list of gaps G")
        parser.set_defaults(func=main, accepts_overrides=True, experiment=name)


def resolve_config(name: str, paper_scale: bool, overrides) -> SyntheticConfig:
    """The experiment's default config, then ``--paper-scale``, then dotted overrides; validated."""
    config = _default_configs()[name]()
    if paper_scale:
        config = _paper_scale(name, config)
    return with_overrides(config, overrides).validate()


def _phase_diagram_and_residual_control(config: SyntheticConfig, out: Path, progress: bool) -> dict:
    """Fig. 3 uses the same runs as Fig. 2: train once, write both."""
    from .experiments import phase_diagram, residual_control
    from .training import train_widths

    result = train_widths(config, progress=progress)
    return dict(phase_diagram=phase_diagram.run(config, out, result=result),
                residual_control=residual_control.run(config, out, result=result))


def main(args: argparse.Namespace) -> int:
    """Run one experiment from parsed arguments; print its summary as JSON."""
    from .experiments import long_horizon, one_neuron, phase_diagram, rank_one, residual_control, retention

    name = args.experiment
    out = args.out or Path("results") / "synthetic" / name.replace("-", "_")
    progress = not args.no_progress
    if name == "one-neuron":
        if args.overrides:
            raise ValueError(f"one-neuron takes no config overrides, got {args.overrides}")
        summary = one_neuron.run(out, gaps=args.gaps)
    else:
        config = resolve_config(name, args.paper_scale, args.overrides)
        if args.dry_run:
            print(json.dumps(config.to_dict(), indent=2))
            return 0
        runners = {
            "phase-diagram": lambda: _phase_diagram_and_residual_control(config, out, progress),
            "complexity": lambda: phase_diagram.run(config, out, progress, name="complexity"),
            "residual-control": lambda: residual_control.run(config, out, progress),
            "beta-sweep": lambda: residual_control.run_beta_sweep(config, args.betas, out, progress),
            "retention": lambda: retention.run(config, args.gaps, out, progress),
            "rank-one": lambda: rank_one.run(config, out, progress),
            "long-horizon": lambda: long_horizon.run(config, out, progress),
        }
        summary = runners[name]()
    print(json.dumps(summary, indent=2, default=str))
    print(f"wrote {out}/")
    return 0
