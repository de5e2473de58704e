"""Run the launch sub-commands as ``olmo-inject`` does (same parsing of dotted overrides), in-process."""

from __future__ import annotations

import argparse
from typing import List

from launch.cli import register


def run_cli(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="olmo-inject")
    register(parser.add_subparsers(dest="command", required=True))
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [u.lstrip("-") for u in unknown]
    return int(args.func(args) or 0)
