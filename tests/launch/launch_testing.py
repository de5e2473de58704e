"""Shared by the launcher tests: repository paths and the sub-commands run in-process as ``olmo-inject`` does.

(No ``__init__.py`` in tests/launch: as a package it would be imported as ``launch`` and hide the real one.)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

from launch.cli import register

REPO = Path(__file__).resolve().parents[2]
SLURM_LOCAL = REPO / "launch" / "slurm_local.sh"
TINY_CONFIG = REPO / "configs" / "tiny.yaml"


def run_cli(argv: List[str]) -> int:
    """Parse ``argv`` like ``olmo_injection.cli.main`` (dotted overrides after the file) and run the command."""
    parser = argparse.ArgumentParser(prog="olmo-inject")
    register(parser.add_subparsers(dest="command", required=True))
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [u.lstrip("-") for u in unknown]
    return int(args.func(args) or 0)
