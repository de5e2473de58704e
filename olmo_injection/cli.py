"""``olmo-inject``: the project's one command line.

    olmo-inject train CONFIG.yaml [--dotted.override=value ...]   # the main job
    olmo-inject schedule CONFIG.yaml --steps 0:100                 # audit what a run injects
    olmo-inject tasks CONFIG.yaml                                  # write the task files
    olmo-inject synthetic ...                                      # the mixture-of-regressions module
    olmo-inject analyze ... / olmo-inject launch ...               # registered by analysis/ and launch/

Sub-commands outside the library (``analysis``, ``launch``) register through the
``olmo_injection.commands`` entry point group, so the library never imports them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import entry_points
from typing import Callable, List, Optional

from olmo.exceptions import OLMoConfigurationError

# Library sub-command modules; each exposes ``register(subparsers)``.
LIBRARY_COMMANDS = (
    "olmo_injection.commands",
    "olmo_injection.synthetic.cli",
)


def _registrars() -> List[Callable]:
    registrars = [importlib.import_module(name).register for name in LIBRARY_COMMANDS]
    for ep in entry_points(group="olmo_injection.commands"):
        try:
            registrars.append(ep.load())
        except ImportError as exc:  # an optional part (analysis, launch) not installed beside the library
            print(f"olmo-inject: sub-command '{ep.name}' unavailable: {exc}", file=sys.stderr)
    return registrars


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="olmo-inject", description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for register in _registrars():
        register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [u.lstrip("-") for u in unknown]
    try:
        return int(args.func(args) or 0)
    except (ValueError, OLMoConfigurationError) as exc:  # bad user input: say what is wrong, no traceback
        print(f"olmo-inject {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
