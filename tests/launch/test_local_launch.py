"""``olmo-inject launch local``: the tiny config trained by two torchrun processes on this machine (gloo)."""

from __future__ import annotations

import pytest

from launch_testing import TINY_CONFIG, run_cli
from olmo_injection.metrics_record import read_metrics_record


@pytest.mark.slow
def test_local_torchrun_launch_trains_the_run_and_records_its_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    status = run_cli(["launch", "local", str(TINY_CONFIG), "--runs-root", str(tmp_path), "--nproc-per-node", "2",
                      "--max_duration=4"])
    assert status == 0
    run_dir = tmp_path / "tiny" / "tiny"
    assert "max_duration: 4" in (run_dir / "run.yaml").read_text()
    assert (run_dir / "checkpoints" / "step4-unsharded").is_dir()
    history = {row["_step"]: row for row in read_metrics_record(run_dir / "checkpoints")}
    assert sorted(s for s in history if "train/CrossEntropyLoss" in history[s]) == [1, 2, 3, 4]
