"""Read runs' logged metrics: local offline run files (``wandb/offline-run-*/run-*.wandb``) or the wandb API.

The offline file is W&B's LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version), then 32 KiB
blocks of records, each with a 7-byte header (CRC-32 of type byte + data, little-endian length, type FULL /
FIRST / MIDDLE / LAST) followed by a serialized ``wandb.proto.wandb_internal_pb2.Record``; a block tail shorter
than a header is zero padding. wandb 0.31 no longer ships the Python reader (``wandb.sdk.internal.datastore``),
so this module reads the framing itself and decodes records with wandb's own protobuf classes.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

_HEADER = struct.Struct("<4sHB")
_RECORD_HEADER = struct.Struct("<IHB")
_BLOCK = 32768
_IDENT, _MAGIC = b":W&B", 0xBEE1
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class RunLog:
    """Everything the figures need from one run."""

    name: str
    """Run name (or id when unnamed)."""

    config: Dict[str, Any] = field(default_factory=dict)
    """The run's config as logged (nested dicts, e.g. ``config["model"]["d_model"]``)."""

    history: List[Dict[str, Any]] = field(default_factory=list)
    """One dict per logged step, with ``_step`` and the metrics logged at it."""

    summary: Dict[str, Any] = field(default_factory=dict)
    """The run summary (last value of each metric unless overwritten)."""

    def series(self, key: str) -> tuple:
        """``(steps, values)`` lists of every history row that has ``key``."""
        rows = [row for row in self.history if key in row and row[key] is not None]
        return [row["_step"] for row in rows], [row[key] for row in rows]


def _payloads(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    if len(data) < _HEADER.size:
        raise ValueError(f"{path}: too short to be a wandb run file")
    ident, magic, _version = _HEADER.unpack_from(data)
    if ident != _IDENT or magic != _MAGIC:
        raise ValueError(f"{path}: not a wandb run file (header {data[:_HEADER.size]!r})")
    offset, pending = _HEADER.size, b""
    while offset + _RECORD_HEADER.size <= len(data):
        space_in_block = _BLOCK - offset % _BLOCK
        if space_in_block < _RECORD_HEADER.size:
            offset += space_in_block  # zero padding at the end of a block
            continue
        checksum, length, kind = _RECORD_HEADER.unpack_from(data, offset)
        if kind == 0 and length == 0:
            break  # zero-filled tail of a file still being written
        chunk = data[offset + _RECORD_HEADER.size : offset + _RECORD_HEADER.size + length]
        if len(chunk) < length:
            break  # a record cut off by a crash: keep what came before
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != checksum:
            raise ValueError(f"{path}: checksum mismatch at byte {offset}")
        offset += _RECORD_HEADER.size + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""
        else:
            raise ValueError(f"{path}: unknown record type {kind} at byte {offset}")


def _items_to_dict(items) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for item in items:
        key = item.key if item.key else "/".join(item.nested_key)
        out[key] = json.loads(item.value_json)
    return out


def _unwrap_config(config: Dict[str, Any]) -> Dict[str, Any]:
    # wandb stores each top-level config entry as {"value": ..., "desc": ...}.
    return {k: (v["value"] if isinstance(v, dict) and "value" in v else v) for k, v in config.items() if k != "_wandb"}


def run_file(path: Union[str, Path]) -> Path:
    """The ``run-*.wandb`` file of an offline run directory (or ``path`` itself when it is that file)."""
    path = Path(path)
    if path.is_file():
        return path
    files = sorted(path.glob("run-*.wandb"))
    if len(files) != 1:
        raise ValueError(f"{str(path)!r}: expected one run-*.wandb file, found {len(files)}")
    return files[0]


def read_offline_run(path: Union[str, Path]) -> RunLog:
    """Read an offline run (its directory or its ``.wandb`` file) into a ``RunLog``."""
    from wandb.proto import wandb_internal_pb2 as pb

    log = RunLog(name=Path(path).name)
    for payload in _payloads(run_file(path)):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            log.name = record.run.display_name or record.run.run_id
            log.config.update(_unwrap_config(_items_to_dict(record.run.config.update)))
        elif kind == "config":
            log.config.update(_unwrap_config(_items_to_dict(record.config.update)))
        elif kind == "history":
            row = _items_to_dict(record.history.item)
            if record.history.HasField("step") and "_step" not in row:
                row["_step"] = record.history.step.num
            log.history.append(row)
        elif kind == "summary":
            log.summary.update(_items_to_dict(record.summary.update))
    return log


def find_offline_runs(folder: Union[str, Path]) -> List[Path]:
    """Every ``offline-run-*`` directory under ``folder`` (recursively), sorted by path."""
    return sorted(p.parent for p in Path(folder).rglob("offline-run-*/run-*.wandb"))


def read_online_run(path: str, api: Optional[Any] = None) -> RunLog:
    """Read ``entity/project/run_id`` through ``wandb.Api()`` (needs network access and a login)."""
    import wandb

    run = (api or wandb.Api()).run(path)
    history = [dict(row) for row in run.scan_history()]
    return RunLog(name=run.name, config=dict(run.config), history=history, summary=dict(run.summary))
