"""Fixtures for the launcher tests: the repository's configs and a real SLURM cluster on this machine.

The cluster comes from ``launch/slurm_local.sh start`` (installs slurm-wlm and munge when missing, needs root)
once per test session, and is stopped at the end if this session started it: the one-node partition ``debug``
and, where network namespaces can be made, the two-node partition ``twonode``. Where a part cannot start, the
tests that need it skip with the script's own message, and say so in pytest's warning summary.
"""

from __future__ import annotations

import subprocess
import warnings

import pytest

from launch_testing import SLURM_LOCAL


def _slurm(command: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SLURM_LOCAL), command], capture_output=True, text=True, timeout=timeout)


def _skip(what: str, problem: str):
    # A warning shows in pytest's summary even under -q, so CI logs say why these tests did not run.
    warnings.warn(f"{what} tests skipped: {problem}")
    pytest.skip(problem)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running local SLURM cluster (partition ``debug``, this host); skips the test if it cannot start."""
    already_up = _slurm("status").returncode == 0
    if not already_up:
        try:
            started = _slurm("start")
            lines = (started.stderr or started.stdout).strip().splitlines()
            problem = None if started.returncode == 0 else " | ".join(lines[-5:])
        except subprocess.TimeoutExpired:
            problem = "launch/slurm_local.sh start timed out after 600 s"
        if problem:
            _skip("SLURM", f"SLURM could not start: {problem}")
    yield
    if not already_up:
        _slurm("stop")


@pytest.fixture(scope="session")
def two_node_cluster(slurm_cluster):
    """Partition ``twonode`` of the local cluster (nodes n1, n2: own hostnames and addresses, one filesystem)."""
    if _slurm("status-two-nodes").returncode != 0:
        # A cluster started by an older slurm_local.sh, or by hand, has no two-node partition yet: add it.
        started = _slurm("start")
        if _slurm("status-two-nodes").returncode != 0:
            messages = [line for line in started.stderr.splitlines() if "twonode" in line or "did not" in line]
            _skip("Two-node SLURM",
                  " | ".join(messages) or "nodes n1, n2 did not come up (launch/slurm_local.sh start)")
    yield
