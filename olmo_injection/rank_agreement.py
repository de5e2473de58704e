"""Agreement between ranks on a host-side flag: does any rank want to stop, or hold a bad batch?

The flags live on the host, so they are reduced over a gloo group on CPU tensors: no copy to the accelerator and
no wait for its queue (an NCCL all-reduce of a flag followed by ``.item()`` would block the host until every
kernel queued before it has run). Without a process group (one plain process) a flag is its own answer.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist


def flag_group() -> Optional[dist.ProcessGroup]:
    """The group ``on_any_rank`` reduces over: the default group when it is gloo, else a new gloo group over all
    ranks (a collective: every rank calls this, in the same order); ``None`` without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    if dist.get_backend() == dist.Backend.GLOO:
        return dist.group.WORLD
    return dist.new_group(backend=dist.Backend.GLOO)


def on_any_rank(flag: bool, group: Optional[dist.ProcessGroup]) -> bool:
    """True on every rank when ``flag`` is true on at least one rank of ``group`` (a collective: every rank of
    ``group`` calls it at the same point); ``flag`` itself when ``group`` is ``None``."""
    if group is None:
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=group)
    return bool(value.item())
