"""The injection schedule: a pure function of (seed, global batch index).

For every global batch ``b`` of the training order it says which slots (rows of the global batch, 0..GBS-1)
receive an instance, of which task, and which train instance. Nothing here depends on ranks, workers,
micro-batches or how far a run has got, so a resumed or re-sharded run sees exactly the same stream.

Counting rules (per task):
- frequency mode: ``r = instances_per_token * global_batch_size * sequence_length`` instances per batch; batch
  ``b`` gets ``floor((b+1) r) - floor(b r)``, so after ``B`` batches exactly ``floor(B r)`` instances were
  injected (rates below one per batch give one instance every ``1/r`` batches);
- gap mode: ``n`` instances in batch ``b`` when ``b >= offset`` and ``(b - offset) % gap == 0``.
Slots: one seeded draw without replacement per batch over all tasks together, so rows never collide and a row
holds at most one instance. Instances: the k-th injected instance of a task is element ``k mod n_train`` of a
seeded permutation of its train split for epoch ``k // n_train``, so every train instance is seen equally often.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, List, Sequence

import numpy as np

if TYPE_CHECKING:
    from .config import InjectionTrainConfig, ScheduleConfig

# Separate random streams for slot choice and instance order, so changing one never shifts the other.
_SLOT_STREAM = 0
_INSTANCE_STREAM = 1


@dataclass(frozen=True)
class TaskRate:
    """How many instances of one task each global batch receives."""

    mode: str
    instances_per_batch: float = 0.0  # frequency mode
    n: int = 0  # gap mode
    gap: int = 1
    offset: int = 0

    def count(self, batch: int) -> int:
        """Instances injected in global batch ``batch``."""
        return self.cumulative(batch + 1) - self.cumulative(batch)

    def cumulative(self, batch: int) -> int:
        """Instances injected in global batches ``0 .. batch-1``."""
        if self.mode == "frequency":
            return math.floor(batch * self.instances_per_batch)
        if batch <= self.offset:
            return 0
        return self.n * -(-(batch - self.offset) // self.gap)

    def max_count(self) -> int:
        """The most instances any single batch can receive."""
        return math.ceil(self.instances_per_batch) if self.mode == "frequency" else self.n


@dataclass(frozen=True)
class BatchInjections:
    """The injections of one global batch, as parallel arrays sorted by slot."""

    slots: np.ndarray  # [k] rows of the global batch (0..GBS-1)
    tasks: np.ndarray  # [k] task index
    instances: np.ndarray  # [k] instance id within the task

    def __len__(self) -> int:
        return len(self.slots)


def task_rates(cfg: "InjectionTrainConfig") -> List[TaskRate]:
    """The ``TaskRate`` of every task of ``cfg.injection.tasks``, in order (``rate_from_config`` each): the one
    place a config's schedules become rates, for validation and for the schedule alike."""
    return [
        rate_from_config(t.schedule, cfg.global_train_batch_size, cfg.model.max_sequence_length,
                         f"injection.tasks.{i}.schedule")
        for i, t in enumerate(cfg.injection.tasks)
    ]


def rate_from_config(schedule: "ScheduleConfig", global_batch_size: int, sequence_length: int, where: str) -> TaskRate:
    """Check one task's schedule against the batch shape and turn it into a ``TaskRate``.

    Raises ``ValueError`` naming the field, its value and the allowed range.
    """
    if schedule.mode == "frequency":
        ipt = schedule.instances_per_token
        if not (ipt > 0 and ipt * sequence_length <= 1):
            raise ValueError(
                f"{where}.instances_per_token={ipt!r}: must be > 0 and at most one instance per sequence, "
                f"i.e. <= 1/sequence_length = {1 / sequence_length:.6g}"
            )
        return TaskRate("frequency", instances_per_batch=ipt * global_batch_size * sequence_length)
    if schedule.mode == "gap":
        if schedule.n < 1:
            raise ValueError(f"{where}.n={schedule.n}: must be >= 1")
        if schedule.n > global_batch_size:
            raise ValueError(f"{where}.n={schedule.n}: must be <= global_train_batch_size={global_batch_size}")
        if schedule.gap < 1:
            raise ValueError(f"{where}.gap={schedule.gap}: must be >= 1")
        if schedule.offset < 0:
            raise ValueError(f"{where}.offset={schedule.offset}: must be >= 0")
        return TaskRate("gap", n=schedule.n, gap=schedule.gap, offset=schedule.offset)
    raise ValueError(f"{where}.mode={schedule.mode!r}: allowed modes are 'frequency' and 'gap'")


def check_rates_fit(rates: Sequence[TaskRate], global_batch_size: int) -> None:
    """Raise ``ValueError`` if the tasks together could need more rows than a global batch has."""
    worst = sum(rate.max_count() for rate in rates)
    if worst > global_batch_size:
        raise ValueError(
            f"injection.tasks: up to {worst} instances per batch across tasks, but a global batch has only "
            f"global_train_batch_size={global_batch_size} sequences (at most one instance per sequence)"
        )


class InjectionSchedule:
    """Which slot of which global batch receives which task instance; see the module docstring."""

    def __init__(self, seed: int, rates: Sequence[TaskRate], train_ids: Sequence[np.ndarray], global_batch_size: int):
        if len(rates) != len(train_ids):
            raise ValueError(f"{len(rates)} task rates but {len(train_ids)} train splits")
        for i, ids in enumerate(train_ids):
            if len(ids) == 0:
                raise ValueError(f"injection.tasks.{i}: the task has no train instances to inject")
        check_rates_fit(rates, global_batch_size)
        self.seed = seed
        self.rates = tuple(rates)
        self.train_ids = [np.asarray(ids, dtype=np.int64) for ids in train_ids]
        self.global_batch_size = global_batch_size

    @classmethod
    def from_config(cls, cfg: "InjectionTrainConfig", tasks) -> "InjectionSchedule":
        """The schedule of a training config and its built tasks (``olmo_injection.tasks.build_tasks``)."""
        rates = task_rates(cfg)
        return cls(cfg.injection.seed, rates, [task.train_ids for task in tasks], cfg.global_train_batch_size)

    def injections(self, batch: int) -> BatchInjections:
        """The injections of global batch ``batch`` (0-based index in the training order)."""
        counts = [rate.count(batch) for rate in self.rates]
        total = sum(counts)
        if total == 0:
            empty = np.zeros(0, dtype=np.int64)
            return BatchInjections(empty, empty, empty)
        rng = np.random.Generator(np.random.PCG64([self.seed, _SLOT_STREAM, batch]))
        slots = rng.choice(self.global_batch_size, size=total, replace=False).astype(np.int64)
        tasks = np.repeat(np.arange(len(counts)), counts)
        instances = np.concatenate(
            [self._instances(t, self.rates[t].cumulative(batch), c) for t, c in enumerate(counts) if c > 0]
        )
        order = np.argsort(slots)
        return BatchInjections(slots[order], tasks[order], instances[order])

    def _instances(self, task: int, first: int, count: int) -> np.ndarray:
        """Instance ids of the task's injected instances number ``first .. first+count-1``."""
        n_train = len(self.train_ids[task])
        k = np.arange(first, first + count)
        out = np.empty(count, dtype=np.int64)
        for epoch in np.unique(k // n_train):
            sel = k // n_train == epoch
            out[sel] = self.train_ids[task][self._permutation(task, int(epoch))[k[sel] % n_train]]
        return out

    @lru_cache(maxsize=8)
    def _permutation(self, task: int, epoch: int) -> np.ndarray:
        rng = np.random.Generator(np.random.PCG64([self.seed, _INSTANCE_STREAM, task, epoch]))
        return rng.permutation(len(self.train_ids[task]))

    def instances_seen(self, task: int, batches: int) -> int:
        """Instances of ``task`` injected in the first ``batches`` global batches."""
        return self.rates[task].cumulative(batches)


def schedule_table(
    schedule: InjectionSchedule, first: int, last: int, task_names: List[str], world_size: int = 1
) -> List[dict]:
    """One row per injection in global batches ``first .. last-1``, for auditing what a run saw.

    ``step`` is OLMo's 1-based training step that trains on the batch (``batch + 1``); ``rank`` and ``row`` say
    where the slot lands for ``world_size`` ranks (OLMo interleaves: slot = rank + world_size * row).
    """
    rows = []
    for b in range(first, last):
        inj = schedule.injections(b)
        for slot, task, instance in zip(inj.slots.tolist(), inj.tasks.tolist(), inj.instances.tolist()):
            rows.append(
                {"step": b + 1, "batch": b, "slot": slot, "rank": slot % world_size, "row": slot // world_size,
                 "task": task_names[task], "instance": instance}
            )
    return rows
