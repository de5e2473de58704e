"""Fixtures for the launcher tests: the repository's configs and a real one-node SLURM cluster.

The cluster comes from ``launch/slurm_local.sh start`` (installs slurm-wlm and munge when missing, needs root)
once per test session, and is stopped at the end if this session started it. Where it cannot start, the tests
that need it skip with the script's own message.
"""

from __future__ import annotations

import subprocess
import warnings
import pytest

from launch_testing import SLURM_LOCAL


def _slurm_up() -> bool:
    return subprocess.run(["bash", str(SLURM_LOCAL), "status"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running local SLURM cluster (partition ``debug``, this host); skips the test if it cannot start."""
    already_up = _slurm_up()
    if not already_up:
        try:
            started = subprocess.run(["bash", str(SLURM_LOCAL), "start"], capture_output=True, text=True, timeout=600)
            problem = None if started.returncode == 0 else " | ".join((started.stderr or started.stdout).strip().splitlines()[-5:])
        except subprocess.TimeoutExpired:
            problem = "launch/slurm_local.sh start timed out after 600 s"
        if problem:
            # A warning shows in pytest's summary even under -q, so CI logs say why these tests did not run.
            warnings.warn(f"SLURM tests skipped, SLURM could not start: {problem}")
            pytest.skip(f"SLURM could not start: {problem}")
    yield
    if not already_up:
        subprocess.run(["bash", str(SLURM_LOCAL), "stop"], capture_output=True)
