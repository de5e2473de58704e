"""What a global training batch held: each row's text, its injected prefix, and where the rest came from.

``inspect_batch(cfg, tasks, step)`` rebuilds the rows of the global batch that OLMo step ``step`` (1-based)
trains on, through the training data path's own parts (OLMo's ``MemMapDataset`` and data order, our
``InjectingIterableDataset`` and ``InjectionCollator``), so what it shows is what training saw. It writes
nothing: the data order is rebuilt in memory from ``data.seed`` (or ``seed``), as OLMo builds it. The paths may
be local files or the remote Dolma paths a config names (read through OLMo, like training does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
from olmo.data import build_memmap_dataset

from .injecting_dataset import (
    INJECTED_INSTANCE,
    INJECTED_TASK,
    INSTANCE_LENGTH,
    InjectingIterableDataset,
    build_injection_collator,
    sequence_source,
)
from .tasks import Task, olmo_tokenizer


@dataclass(frozen=True)
class RowProvenance:
    """One row of a global batch."""

    step: int
    """OLMo's 1-based training step that trains on this batch (global batch ``step - 1``)."""

    slot: int
    """Position of the row in the global batch."""

    rank: int
    """Rank that trains on the row for the ``world_size`` asked for (OLMo interleaves: slot = rank + ws * row)."""

    row: int
    """Row in that rank's device batch."""

    global_position: int
    """Position of the row in the whole training order, across epochs."""

    source_file: str
    """Token file the row's sequence was read from."""

    token_offset: int
    """Offset (in tokens) of the sequence's first token in ``source_file``."""

    task: Optional[str]
    """Injected task's name, or ``None`` for a row without an injection."""

    instance: Optional[int]
    """Injected instance id (a line of the task file), or ``None``."""

    injected_text: Optional[str]
    """The injected prefix decoded (``TOK1 TOK2 LABEL``, then EOS), or ``None``."""

    text: str
    """The tokens of the row after the injected prefix (the whole row when nothing was injected), decoded."""


def inspect_batch(cfg, tasks: Sequence[Task], step: int, world_size: int = 1) -> List[RowProvenance]:
    """The rows of the global batch trained at ``step`` for ``cfg`` (an ``InjectionTrainConfig``) and its tasks.

    Steps past the first epoch read the later epoch's data order, as training does. ``ValueError`` naming the
    argument for a step < 1 or a world size that does not divide the global batch.
    """
    gbs = cfg.global_train_batch_size
    if step < 1:
        raise ValueError(f"step={step}: must be >= 1 (OLMo's steps are 1-based)")
    if world_size < 1 or gbs % world_size:
        raise ValueError(f"world_size={world_size}: must be >= 1 and divide global_train_batch_size={gbs}")
    dataset = build_memmap_dataset(cfg, cfg.data, include_instance_metadata=False)
    order = InjectingIterableDataset(
        dataset, gbs, seed=cfg.data.seed if cfg.data.seed is not None else cfg.seed, shuffle=True,
        drop_last=cfg.data.drop_last, world_size=world_size, rank=0, fs_local_rank=0, work_dir=None,
    )
    per_epoch = order.examples_per_epoch
    if per_epoch == 0:
        raise ValueError(f"data.paths: {len(dataset)} sequences make no global batch of {gbs}")
    positions = np.arange((step - 1) * gbs, step * gbs)
    epoch = int(positions[0] // per_epoch)
    order.epoch = epoch  # the data order of that epoch, as OLMo's reshuffle makes it
    items = [order._get_dataset_item(int(p - epoch * per_epoch)) for p in positions]
    batch = build_injection_collator(cfg, tasks)(items)
    indices = np.asarray(order.data_order())[positions - epoch * per_epoch]

    tokenizer = olmo_tokenizer(cfg.tokenizer.identifier)
    rows = []
    for slot, (position, index) in enumerate(zip(positions.tolist(), indices.tolist())):
        source_file, token_offset = sequence_source(dataset, index)
        ids = batch["input_ids"][slot].tolist()
        task_index = int(batch[INJECTED_TASK][slot])
        injected = task_index >= 0
        rows.append(RowProvenance(
            step=step,
            slot=slot,
            rank=slot % world_size,
            row=slot // world_size,
            global_position=position,
            source_file=source_file,
            token_offset=token_offset,
            task=tasks[task_index].name if injected else None,
            instance=int(batch[INJECTED_INSTANCE][slot]) if injected else None,
            injected_text=tokenizer.decode(ids[:INSTANCE_LENGTH], skip_special_tokens=False) if injected else None,
            text=tokenizer.decode(ids[INSTANCE_LENGTH:] if injected else ids, skip_special_tokens=False),
        ))
    return rows


def format_rows(rows: Sequence[RowProvenance], max_chars: int = 160) -> str:
    """A readable listing: one header line per row (where it came from), then its text, the injection marked."""
    lines = []
    for r in rows:
        where = f"{r.source_file} @ token {r.token_offset:,d}"
        lines.append(f"step {r.step} slot {r.slot} (rank {r.rank} row {r.row}, position {r.global_position:,d}) "
                     f"<- {where}")
        text = r.text if len(r.text) <= max_chars else r.text[:max_chars] + " ..."
        prefix = f"[{r.task} #{r.instance}: {r.injected_text!r}] " if r.task is not None else ""
        lines.append(f"    {prefix}{text!r}")
    return "\n".join(lines)
