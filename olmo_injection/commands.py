"""The library's ``olmo-inject`` sub-commands; ``register(subparsers)`` adds each one (see ``olmo_injection.cli``)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_train(subparsers)


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train OLMo with injected tasks (the main job)",
        description="Train OLMo with injected tasks. Extra --dotted.key=value arguments override the config. "
        "See `python -m olmo_injection.train --help` for single-process, torchrun and multi-node use.",
    )
    parser.add_argument("config", help="training config YAML (see configs/)")
    parser.set_defaults(func=_run_train, accepts_overrides=True)


def _run_train(args: argparse.Namespace) -> int:
    from .train import run

    return run(args.config, args.overrides)
