"""OLMo's training data path with task instances spliced into the first four tokens of scheduled sequences.

Two parts, one job each:

- ``InjectingIterableDataset`` is OLMo's ``IterableDataset`` with one change of representation: it hands OLMo's
  iterator the *positions* ``0 .. total_size-1`` of the training order instead of the shuffled dataset indices,
  and looks the index up itself when it loads an item. Every slicing OLMo does (``start_index`` on resume,
  ranks interleaved, data-loader workers, threads) therefore applies unchanged, and each item carries its
  ``global_position``. The stream is independent of rank, world size, workers and resume point by construction.
- ``InjectionCollator`` is OLMo's collator plus the splice: from each row's global position and the pure
  ``InjectionSchedule`` it writes ``TOK1 TOK2 LABEL EOS`` into positions 0..3 of the scheduled rows, for the
  whole device batch at once (the per-row Python work stays off the per-item path).

Each collated batch carries, per row: ``injected_task`` (task index, -1 = none), ``injected_instance``
(instance id, -1 = none) and ``global_position`` (position in the whole training order, across epochs:
``epoch * examples_per_epoch + OLMo's global_train_examples_seen_this_epoch`` of the row).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from olmo.config import TrainConfig
from olmo.data import DataCollator, IterableDataset, build_memmap_dataset
from olmo.data.util import get_document_lengths
from olmo.torch_util import barrier, get_global_rank
from torch.utils.data import DataLoader

from .experiment import BadInputOnEveryRank
from .hooks.base import TrainingHook
from .rank_agreement import on_any_rank
from .schedule import InjectionSchedule

INJECTED_TASK = "injected_task"
INJECTED_INSTANCE = "injected_instance"
GLOBAL_POSITION = "global_position"
INJECTION_KEYS = (INJECTED_TASK, INJECTED_INSTANCE, GLOBAL_POSITION)
INSTANCE_LENGTH = 4  # TOK1 TOK2 LABEL EOS


class InjectingIterableDataset(IterableDataset):
    """OLMo's ``IterableDataset`` whose items carry their position in the training order (``global_position``).

    Constructor arguments are OLMo's. ``examples_per_epoch`` (= ``total_size // global_batch_size`` batches)
    makes positions continue across epochs, so the schedule never restarts.
    """

    def __init__(self, dataset, global_batch_size: int, **kwargs):
        self.global_batch_size = global_batch_size
        super().__init__(dataset, global_batch_size, **kwargs)

    @property
    def examples_per_epoch(self) -> int:
        """Training-order positions per epoch: whole global batches, as OLMo's trainer counts them."""
        return (self.total_size // self.global_batch_size) * self.global_batch_size

    def get_global_indices(self) -> np.ndarray:
        """Positions in the training order; OLMo's iterator slices these exactly as it would slice indices."""
        return np.arange(self.total_size, dtype=np.uint32)

    def data_order(self) -> np.ndarray:
        """The real training order (dataset index at each position), as OLMo builds and saves it."""
        return super().get_global_indices()

    def batch_index(self, global_position: int) -> int:
        """Index in the whole training order of the global batch holding ``global_position``."""
        return global_position // self.global_batch_size

    def _get_dataset_item(self, position: int) -> Dict[str, Any]:
        order, first_position = self._epoch_order()
        item = super()._get_dataset_item(int(order[position]))
        item[GLOBAL_POSITION] = first_position + position
        return item

    def _epoch_order(self) -> Tuple[np.ndarray, int]:
        """This epoch's training order and the global position of its first example.

        Mapped once per process and epoch (each data-loader worker maps the file itself), as a plain ndarray
        view of the memmap: scalar indexing is several times cheaper than on the memmap object. Cached as one
        tuple, read once, because OLMo's loader threads call this concurrently.
        """
        cached = getattr(self, "_order_cache", None)
        if cached is None or cached[0] != self.epoch:
            cached = (self.epoch, np.asarray(self.data_order()), self.epoch * self.examples_per_epoch)
            self._order_cache = cached
        return cached[1], cached[2]


@dataclass
class InjectionCollator(DataCollator):
    """OLMo's collator, then the scheduled instances spliced into the batch (OLMo's keeps a fixed key list).

    The injected tokens are always in the loss: they are covered by the label and attention masks, a row dropped
    by OLMo's instance filter is kept with only the injected positions unmasked, and document lengths are
    recomputed so the spliced prefix (ending in EOS) is its own document.
    """

    schedule: Optional[InjectionSchedule] = None
    sequences: List[torch.Tensor] = field(default_factory=list)
    """Per task: ``[num_instances, 4]`` injected tokens, indexed by instance id."""

    def __call__(self, items: List[Dict[str, Any]]) -> Dict[str, Any]:
        # Small per-batch bookkeeping runs in numpy: a torch op costs several microseconds of dispatch.
        positions = np.fromiter((x[GLOBAL_POSITION] for x in items), dtype=np.int64, count=len(items))
        task, instance = self.injections_for(positions)
        rows = np.flatnonzero(task >= 0)
        doc_lens = "doc_lens" in items[0]
        if doc_lens:  # document lengths are ragged: recompute them per item before OLMo pads them
            items = [self._splice_item(x, t, i) for x, t, i in zip(items, task.tolist(), instance.tolist())]
        batch = super().__call__(items)
        if not doc_lens:
            for t in np.unique(task[rows]).tolist():
                hit = rows[task[rows] == t]
                batch["input_ids"][hit, :INSTANCE_LENGTH] = self.sequences[t][instance[hit]]
        if "attention_mask" in batch:
            batch["attention_mask"][rows, :INSTANCE_LENGTH] = 1
        if "instance_mask" in batch:
            filtered = rows[~batch["instance_mask"][rows].numpy()]
            if len(filtered):
                batch["instance_mask"][filtered] = True
                batch.setdefault("label_mask", torch.ones_like(batch["input_ids"], dtype=torch.bool))
                batch["label_mask"][filtered] = False
        if "label_mask" in batch:
            batch["label_mask"][rows, :INSTANCE_LENGTH] = True
        batch[INJECTED_TASK], batch[INJECTED_INSTANCE] = torch.from_numpy(task), torch.from_numpy(instance)
        batch[GLOBAL_POSITION] = torch.from_numpy(positions)
        return batch

    def injections_for(self, positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Task index and instance id (-1 where none) of the rows at these global positions."""
        gbs = self.schedule.global_batch_size
        batch_of, slot_of = np.divmod(positions, gbs)
        task = np.full(len(positions), -1, dtype=np.int64)
        instance = np.full(len(positions), -1, dtype=np.int64)
        for batch in np.unique(batch_of).tolist():  # one global batch, or two across a resume seam
            inj = self.schedule.injections(batch)
            slot_task = np.full(gbs, -1, dtype=np.int64)
            slot_instance = np.full(gbs, -1, dtype=np.int64)
            slot_task[inj.slots], slot_instance[inj.slots] = inj.tasks, inj.instances
            here = batch_of == batch
            task[here], instance[here] = slot_task[slot_of[here]], slot_instance[slot_of[here]]
        return task, instance

    def _splice_item(self, item: Dict[str, Any], task: int, instance: int) -> Dict[str, Any]:
        if task < 0:
            return item
        input_ids = item["input_ids"].clone()
        input_ids[:INSTANCE_LENGTH] = self.sequences[task][instance]
        return {**item, "input_ids": input_ids, "doc_lens": get_document_lengths(input_ids, int(input_ids[3]))}


class TokenIdCheck(TrainingHook):
    """Refuses a training batch holding a token id >= ``vocab_size`` before the model sees it.

    Data tokenized with another tokenizer would otherwise index past the embedding (a crash on the CPU, a
    device-side assert on a GPU) or train on ids no word has. One ``max`` over the device batch per step, and one
    host-side all-reduce of a flag (``rank_agreement.on_any_rank``) so every rank stops at the same step; only
    when a rank finds one does it look up the data file the row came from. ``BadInputOnEveryRank`` naming the
    file, the position and the id.
    """

    def __init__(self, dataset: InjectingIterableDataset, vocab_size: int):
        self.dataset = dataset
        self.vocab_size = vocab_size

    def pre_step(self, trainer, batch: Dict[str, Any]) -> None:
        found = bool(batch["input_ids"].max() >= self.vocab_size)  # the batch is still on the host here
        if not on_any_rank(found, trainer.flag_group):
            return
        mine = self._describe(batch) if found else None
        messages = [mine]
        if trainer.flag_group is not None:
            messages = [None] * dist.get_world_size(trainer.flag_group)
            dist.all_gather_object(messages, mine, group=trainer.flag_group)
        raise BadInputOnEveryRank(next(m for m in messages if m is not None))

    def _describe(self, batch: Dict[str, Any]) -> str:
        row, column = (int(i) for i in torch.nonzero(batch["input_ids"] >= self.vocab_size)[0])
        token = int(batch["input_ids"][row, column])
        position = int(batch[GLOBAL_POSITION][row]) % self.dataset.examples_per_epoch
        index = int(self.dataset.data_order()[position])
        path, first_token = sequence_source(self.dataset.dataset, index)
        return (
            f"data file {path}: token id {token} at token {first_token + column} "
            f"(sequence {first_token // self.dataset.dataset.chunk_size}) is not below model.vocab_size="
            f"{self.vocab_size}; the file was made with another tokenizer, or with another data.memmap_dtype"
        )


def sequence_source(memmap_dataset, index: int) -> Tuple[str, int]:
    """Where sequence ``index`` of OLMo's ``MemMapDataset`` comes from: its token file and the offset (in tokens)
    of its first token there."""
    for number, (start, end) in enumerate(memmap_dataset.offsets):
        if start <= index < end:
            # OLMo 0.6.0 has no public accessor for the paths; this is the list its __getitem__ reads.
            return str(memmap_dataset._memmap_paths[number]), (index - start) * memmap_dataset.chunk_size
    raise IndexError(f"sequence {index} is not in the data (it has {len(memmap_dataset)} sequences)")


def task_token_mask(batch: Dict[str, Any]) -> torch.Tensor:
    """``[rows, seq]`` bool: True at the four injected token positions of every injected row."""
    mask = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
    mask[batch[INJECTED_TASK] >= 0, :INSTANCE_LENGTH] = True
    return mask


def build_injection_collator(
    cfg: TrainConfig, tasks, schedule: Optional[InjectionSchedule] = None
) -> InjectionCollator:
    """The collator of ``cfg``'s training data path: OLMo's padding settings, the schedule (built from ``cfg``
    when not given), every instance's tokens."""
    return InjectionCollator(
        pad_direction=cfg.data.pad_direction,
        pad_token_id=cfg.model.pad_token_id,
        schedule=schedule if schedule is not None else InjectionSchedule.from_config(cfg, tasks),
        sequences=[
            torch.from_numpy(task.sequences(np.arange(len(task.is_train)), cfg.model.eos_token_id)) for task in tasks
        ],
    )


def build_injecting_train_dataloader(
    cfg: TrainConfig,
    tasks,
    *,
    world_size: Optional[int] = None,
    rank: Optional[int] = None,
    fs_local_rank: Optional[int] = None,
    num_threads: Optional[int] = None,
    schedule: Optional[InjectionSchedule] = None,
) -> DataLoader:
    """OLMo's ``build_train_dataloader`` with injection: same arguments, same order, same work directory.

    ``cfg`` is an ``InjectionTrainConfig``; ``tasks`` are its built tasks, in ``cfg.injection.tasks`` order;
    ``schedule`` is their ``InjectionSchedule`` (built from ``cfg`` when not given).
    """
    assert cfg.device_train_batch_size is not None, "call cfg.device_train_batch_size setup first"
    dataset = build_memmap_dataset(cfg, cfg.data, include_instance_metadata=False)
    work_dir = Path(cfg.save_folder) / "train_data"
    if get_global_rank() == 0:
        work_dir.mkdir(exist_ok=True, parents=True)
    barrier()
    seed = cfg.data.seed if cfg.data.seed is not None else cfg.seed
    return DataLoader(
        InjectingIterableDataset(
            dataset,
            cfg.global_train_batch_size,
            seed=seed,
            epoch=cfg.epoch or 0,
            shuffle=True,
            drop_last=cfg.data.drop_last,
            world_size=world_size,
            rank=rank,
            fs_local_rank=fs_local_rank,
            work_dir=work_dir,
            num_threads=num_threads,
        ),
        batch_size=cfg.device_train_batch_size,
        drop_last=cfg.data.drop_last,
        collate_fn=build_injection_collator(cfg, tasks, schedule),
        num_workers=cfg.data.num_workers,
        pin_memory=cfg.data.pin_memory,
        prefetch_factor=None if cfg.data.num_workers == 0 else cfg.data.prefetch_factor,
        persistent_workers=False if cfg.data.num_workers == 0 else cfg.data.persistent_workers,
        timeout=cfg.data.timeout,
    )
