"""Writing an experiment's outputs: a CSV of numbers, a JSON of the config plus summary, a PNG figure."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _plain(value):
    """numpy scalars/arrays -> JSON-serialisable Python values; NaN (an undefined value) -> None (JSON null)."""
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_records(out_dir: Path, name: str, config: dict, summary: dict, rows: Sequence[Dict]) -> List[Path]:
    """Write ``<name>.csv`` (one line per row dict) and ``<name>.json`` ({"config", "summary"}) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / f"{name}.csv", out_dir / f"{name}.json"
    if rows:
        with open(csv_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0].keys()))
            writer.writeheader()
            writer.writerows({k: _plain(v) for k, v in row.items()} for row in rows)
    with open(json_path, "w") as handle:
        json.dump({"config": _plain(config), "summary": _plain(summary)}, handle, indent=2)
    return [csv_path, json_path] if rows else [json_path]


def save_figure(figure: "plt.Figure", out_dir: Path, name: str) -> Path:
    """Save ``figure`` as ``<name>.png`` in ``out_dir`` and close it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
