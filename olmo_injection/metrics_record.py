"""The run's own metrics record: ``<save_folder>/metrics.jsonl``, written on rank 0, read by the analyses.

Every metric dict the run logs (a training step's, an evaluation's) becomes one JSON line
``{"_step": step, "<key>": value, ...}``: append-only, flushed at every write and fsynced before each checkpoint
is saved, so nothing logged up to a checkpoint is ever lost, with or without wandb. A step can have several
lines (its training metrics, then its evaluation); ``read_metrics_record`` merges them into one row per step.
On resume the record is cut back to the checkpoint's step (``MetricsRecord.open(..., resume_step=...)``), so
the steps it then appends are neither duplicated nor missing. Non-finite values are written as ``null``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

METRICS_RECORD_FILE = "metrics.jsonl"

Row = Dict[str, Any]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # a 0-d tensor or numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsRecord:
    """Append-only writer of the metrics record (use ``MetricsRecord.open``)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = open(self.path, "a", encoding="utf-8")

    @classmethod
    def open(cls, save_folder: Union[str, Path], resume_step: Optional[int]) -> "MetricsRecord":
        """The record in ``save_folder``; with ``resume_step`` its lines after that step are dropped first.

        A fresh run (``resume_step=None``) starts an empty record. A torn last line (a kill mid-write) is dropped.
        """
        path = Path(save_folder) / METRICS_RECORD_FILE
        kept: List[str] = []
        if resume_step is not None and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if row.get("_step", math.inf) <= resume_step:
                    kept.append(line)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
        return cls(path)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append one line for ``step`` (an int >= 0) holding ``metrics``, and flush it."""
        row = {"_step": int(step), **{str(k): _jsonable(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def sync(self) -> None:
        """Make every line written so far durable (before a checkpoint is declared complete)."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()


def metrics_by_step(path: Union[str, Path]) -> Dict[int, Row]:
    """``{step: row}`` of ``read_metrics_record(path)`` (rows keep their ``_step``)."""
    return {row["_step"]: row for row in read_metrics_record(path)}


def read_metrics_record(path: Union[str, Path]) -> List[Row]:
    """The rows of a record (a save folder or the ``metrics.jsonl`` itself): one dict per step, in step order.

    Lines of the same step are merged (a later line's value wins); a torn last line is ignored.
    ``FileNotFoundError`` naming the path when there is no record.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_RECORD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics record (written by `olmo-inject train` into its save_folder)")
    rows: Dict[int, Row] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows.setdefault(int(row["_step"]), {}).update(row)
    return [rows[step] for step in sorted(rows)]
