"""OLMo's training data path with task instances spliced into the first four tokens of scheduled sequences.

``InjectingIterableDataset`` is OLMo's ``IterableDataset`` with one change of representation: it hands OLMo's
iterator the *positions* ``0 .. total_size-1`` of the training order instead of the shuffled dataset indices, and
looks the index up itself when it loads an item. Every slicing OLMo does (``start_index`` on resume, ranks
interleaved, data-loader workers, threads) therefore applies unchanged, and each loaded item knows its global
position, which is all the pure ``InjectionSchedule`` needs. The stream is thus independent of rank, world
size, workers and resume point by construction.

Each collated batch carries, per row: ``injected_task`` (task index, -1 = none), ``injected_instance``
(instance id, -1 = none) and ``global_position`` (position in the epoch's training order). An injected row
holds ``TOK1 TOK2 LABEL EOS`` at positions 0..3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from olmo.config import TrainConfig
from olmo.data import DataCollator, IterableDataset, build_memmap_dataset
from olmo.data.util import get_document_lengths
from olmo.torch_util import barrier, get_global_rank
from torch.utils.data import DataLoader

from .schedule import InjectionSchedule

INJECTED_TASK = "injected_task"
INJECTED_INSTANCE = "injected_instance"
GLOBAL_POSITION = "global_position"
INJECTION_KEYS = (INJECTED_TASK, INJECTED_INSTANCE, GLOBAL_POSITION)
INSTANCE_LENGTH = 4  # TOK1 TOK2 LABEL EOS


class InjectingIterableDataset(IterableDataset):
    """OLMo's ``IterableDataset`` whose items carry their global position and any scheduled task instance.

    :param dataset: the base dataset (OLMo's ``MemMapDataset``).
    :param schedule: the injection schedule; batch ``b`` of the training order is positions ``b*GBS .. (b+1)*GBS-1``.
    :param sequences: per task, ``[num_instances, 4]`` injected tokens indexed by instance id.
    Other keyword arguments are OLMo's (seed, epoch, start_index, world_size, rank, work_dir, ...).
    """

    def __init__(self, dataset, global_batch_size: int, *, schedule: InjectionSchedule,
                 sequences: Sequence[np.ndarray], **kwargs):
        self.schedule = schedule
        self.sequences = [np.asarray(s, dtype=np.int64) for s in sequences]
        self.global_batch_size = global_batch_size
        super().__init__(dataset, global_batch_size, **kwargs)

    def get_global_indices(self) -> np.ndarray:
        """Positions in the training order; OLMo's iterator slices these exactly as it would slice indices."""
        return np.arange(self.total_size, dtype=np.uint32)

    def data_order(self) -> np.ndarray:
        """The real training order (dataset index at each position), as OLMo builds and saves it."""
        return super().get_global_indices()

    def batch_index(self, position: int) -> int:
        """Index in the whole training order (across epochs) of the global batch holding ``position``."""
        return self.epoch * (self.total_size // self.global_batch_size) + position // self.global_batch_size

    def _get_dataset_item(self, position: int) -> Dict[str, Any]:
        item = super()._get_dataset_item(int(self._order()[position]))
        row_task, row_instance = self._rows(self.batch_index(position))
        slot = position % self.global_batch_size
        task, instance = int(row_task[slot]), int(row_instance[slot])
        item[INJECTED_TASK], item[INJECTED_INSTANCE], item[GLOBAL_POSITION] = task, instance, position
        if task >= 0:
            tokens = self.sequences[task][instance]
            splice_instance(item, tokens, eos_token_id=int(tokens[-1]))
        return item

    def _order(self) -> np.ndarray:
        # Loaded once per process and epoch (each data-loader worker maps the file itself). Cached as one
        # tuple, read once, because OLMo's loader threads call this concurrently.
        cached = getattr(self, "_order_cache", None)
        if cached is None or cached[0] != self.epoch:
            cached = (self.epoch, self.data_order())
            self._order_cache = cached
        return cached[1]

    def _rows(self, batch: int) -> Tuple[np.ndarray, np.ndarray]:
        """Per slot of global batch ``batch``: task index and instance id (-1 where nothing is injected)."""
        # A device batch reads GBS/world_size items of one global batch in a row: keep the last batch's table.
        cached = getattr(self, "_rows_cache", None)
        if cached is None or cached[0] != batch:
            injections = self.schedule.injections(batch)
            row_task = np.full(self.global_batch_size, -1, dtype=np.int64)
            row_instance = np.full(self.global_batch_size, -1, dtype=np.int64)
            row_task[injections.slots], row_instance[injections.slots] = injections.tasks, injections.instances
            cached = (batch, (row_task, row_instance))
            self._rows_cache = cached
        return cached[1]


def splice_instance(item: Dict[str, Any], tokens: np.ndarray, eos_token_id: int) -> None:
    """Replace the first four tokens of ``item`` with ``tokens`` in place, keeping OLMo's per-row fields right.

    ``item`` comes fresh from the base dataset, so its tensors are modified without copying. The injected
    tokens are always in the loss: an item dropped by OLMo's instance filter is kept with only the
    injected positions unmasked; the label mask and attention mask cover them; document lengths are recomputed
    so the spliced prefix (ending in EOS) is its own document.
    """
    input_ids = item["input_ids"]
    if input_ids.shape[0] < INSTANCE_LENGTH:
        raise ValueError(f"model.max_sequence_length={input_ids.shape[0]}: must be >= {INSTANCE_LENGTH} to inject")
    input_ids.numpy()[:INSTANCE_LENGTH] = tokens  # numpy view: a fraction of torch's indexing overhead
    if "label_mask" in item:
        item["label_mask"][:INSTANCE_LENGTH] = True
    if "instance_mask" in item and not item["instance_mask"]:
        item["instance_mask"] = True
        label_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        label_mask[:INSTANCE_LENGTH] = True
        item["label_mask"] = label_mask
    if "attention_mask" in item:
        item["attention_mask"][:INSTANCE_LENGTH] = 1
    if "doc_lens" in item:
        item["doc_lens"] = get_document_lengths(input_ids, eos_token_id)


class InjectionCollator(DataCollator):
    """OLMo's collator plus the per-row injection fields (OLMo's collator keeps a fixed key list)."""

    def __call__(self, items: List[Dict[str, Any]]) -> Dict[str, Any]:
        if any("instance_mask" in x for x in items) and any("label_mask" in x for x in items):
            # Rows without a label mask get an all-true one so OLMo can stack them with the spliced rows'.
            items = [x if "label_mask" in x else {**x, "label_mask": torch.ones_like(x["input_ids"], dtype=torch.bool)} for x in items]
        batch = super().__call__(items)
        for key in INJECTION_KEYS:
            batch[key] = torch.tensor([int(x[key]) for x in items], dtype=torch.long)
        return batch


def task_token_mask(batch: Dict[str, Any]) -> torch.Tensor:
    """``[rows, seq]`` bool: True at the four injected token positions of every injected row."""
    mask = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
    mask[batch[INJECTED_TASK] >= 0, :INSTANCE_LENGTH] = True
    return mask


def build_injecting_train_dataloader(
    cfg: TrainConfig,
    tasks,
    *,
    world_size: Optional[int] = None,
    rank: Optional[int] = None,
    fs_local_rank: Optional[int] = None,
    num_threads: Optional[int] = None,
) -> DataLoader:
    """OLMo's ``build_train_dataloader`` with injection: same arguments, same order, same work directory.

    ``cfg`` is an ``InjectionTrainConfig``; ``tasks`` are its built tasks, in ``cfg.injection.tasks`` order.
    """
    assert cfg.device_train_batch_size is not None, "call cfg.device_train_batch_size setup first"
    schedule = InjectionSchedule.from_config(cfg, tasks)
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
            schedule=schedule,
            sequences=[task.sequences(np.arange(len(task.is_train)), cfg.model.eos_token_id) for task in tasks],
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
        collate_fn=InjectionCollator(pad_direction=cfg.data.pad_direction, pad_token_id=cfg.model.pad_token_id),
        num_workers=cfg.data.num_workers,
        pin_memory=cfg.data.pin_memory,
        prefetch_factor=None if cfg.data.num_workers == 0 else cfg.data.prefetch_factor,
        persistent_workers=False if cfg.data.num_workers == 0 else cfg.data.persistent_workers,
        timeout=cfg.data.timeout,
    )
