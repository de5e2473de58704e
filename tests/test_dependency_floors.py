"""The dependency floors in setup.cfg match what the code calls (each floor is the oldest release with it)."""

from __future__ import annotations

import configparser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

SETUP = Path(__file__).parents[1] / "setup.cfg"


def floor(package: str) -> Version:
    config = configparser.ConfigParser()
    config.read(SETUP)
    for line in config["options"]["install_requires"].splitlines():
        line = line.split("#")[0].strip()
        if line and Requirement(line).name == package:
            return min(Version(s.version) for s in Requirement(line).specifier if s.operator in (">=", "=="))
    raise AssertionError(f"{package} is not in install_requires")


def test_torch_floor_has_torchrun_signal_forwarding():
    # torchrun's --signals-to-handle (SIGUSR1 forwarding, used by the SLURM script) came with torch 2.9.
    from torch.distributed.run import get_args_parser

    assert floor("torch") >= Version("2.9")
    assert "--signals-to-handle" in get_args_parser()._option_string_actions


def test_transformers_floor_has_rope_parameters():
    # analysis/hf_conversion.py writes OlmoConfig(rope_parameters=...), the keyword of transformers 5.
    from transformers import OlmoConfig

    assert floor("transformers") >= Version("5.0")
    assert OlmoConfig(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}).rope_parameters["rope_theta"] == 10000.0
