"""``rank_agreement``: a host-side flag raised on one rank is seen on every rank; one plain process answers itself.

Two ranks (slow): this file run under torchrun, rank 1 alone raising the flag.
"""

from __future__ import annotations

import sys

import pytest
import torch.distributed as dist

from olmo_injection.rank_agreement import flag_group, on_any_rank
from two_ranks import run_two_ranks


def test_without_a_process_group_a_flag_is_its_own_answer():
    assert not dist.is_initialized()
    assert flag_group() is None
    assert on_any_rank(True, None) is True and on_any_rank(False, None) is False


def test_a_gloo_default_group_is_used_as_it_is(one_process_group):
    group = flag_group()
    assert group is dist.group.WORLD
    assert on_any_rank(True, group) is True and on_any_rank(False, group) is False


@pytest.mark.slow
def test_one_rank_raising_the_flag_is_seen_on_both():
    run_two_ranks(__file__, timeout_s=300)


def _two_ranks() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    group = flag_group()
    assert on_any_rank(rank == 1, group) is True, rank  # raised on rank 1 only
    assert on_any_rank(False, group) is False, rank
    dist.barrier()  # see tests/two_ranks.py: no collective's work left in flight at teardown
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(_two_ranks())
