"""A save folder belongs to one experiment: identity fields, reruns through the real CLI, and the lock.

One tiny run (2 steps, module fixture) is trained once through ``olmo-inject train``; each rerun test works
on its own copy of that folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from olmo_injection import cli
from olmo_injection.experiment import (
    CHANGES_FILE,
    LOCK_FILE,
    SaveFolderLock,
    check_same_experiment,
    config_tree,
    identity_changes,
)
from olmo_injection.train import load_config

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")
PREFIX = "olmo-inject train: error: "


pytestmark = pytest.mark.usefixtures("offline_wandb")


def tree(*overrides: str) -> dict:
    return config_tree(load_config(TINY, ["--save_folder=/tmp/unused", *overrides]))


def test_identity_is_what_is_trained_not_how_it_is_run():
    base = tree()
    how = tree("--save_interval=2", "--eval_interval=2", "--wandb.project=other", "--data.num_workers=1",
               "--model.init_device=meta", "--task_eval.batch_size=8", "--device_train_microbatch_size=2",
               "--stop_at=5", "--injection.task_dir=/tmp/elsewhere")
    assert identity_changes(base, how) == []
    what = tree("--model.d_model=16", "--seed=1", "--injection.tasks.1.schedule.gap=3", "--optimizer.learning_rate=1e-3",
                "--scheduler.t_warmup=5", "--global_train_batch_size=16", "--data.seed=3", "--max_duration=9")
    assert [str(c) for c in identity_changes(base, what)] == [
        "seed: 6198 -> 1",
        "model.d_model: 8 -> 16",
        "data.seed: None -> 3",
        "injection.tasks.1.schedule.gap: 2 -> 3",
        "optimizer.learning_rate: 0.003 -> 0.001",
        "scheduler.t_warmup: 2 -> 5",
        "max_duration: 8 -> 9",
        "global_train_batch_size: 8 -> 16",
    ]


def test_changes_are_refused_unless_a_flag_allows_them():
    base, longer, other = tree(), tree("--max_duration=16"), tree("--injection.seed=4")
    with pytest.raises(ValueError, match=r"max_duration=16: .* max_duration=8; pass --extend"):
        check_same_experiment("f", base, longer, extend=False, allow_config_change=False)
    assert [c.field for c in check_same_experiment("f", base, longer, extend=True, allow_config_change=False)] == [
        "max_duration"
    ]
    with pytest.raises(ValueError, match=r"--extend needs a max_duration larger than the saved 16"):
        check_same_experiment("f", longer, base, extend=True, allow_config_change=False)
    with pytest.raises(ValueError, match=r"holds another experiment: 1 field\(s\) differ .*injection.seed: 0 -> 4"):
        check_same_experiment("f", base, other, extend=True, allow_config_change=False)
    assert len(check_same_experiment("f", base, other, extend=False, allow_config_change=True)) == 1


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def write_lock(folder: Path, pid: int, host: str = socket.gethostname()) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": host, "since": "2026-01-01T00:00:00"}))


def test_lock_keeps_a_second_run_out_and_takes_over_a_stale_one(tmp_path):
    owner = subprocess.Popen(["sleep", "600"])
    try:
        write_lock(tmp_path / "live", owner.pid)
        with pytest.raises(ValueError, match=rf"is in use by pid {owner.pid} on host {socket.gethostname()}"):
            SaveFolderLock(str(tmp_path / "live")).acquire()
        write_lock(tmp_path / "remote", dead_pid(), host="another-host")  # cannot be checked from here: kept
        with pytest.raises(ValueError, match="on host another-host"):
            SaveFolderLock(str(tmp_path / "remote")).acquire()
    finally:
        owner.kill()
        owner.wait()
    write_lock(tmp_path / "stale", dead_pid())
    lock = SaveFolderLock(str(tmp_path / "stale"))
    lock.acquire()
    assert json.loads((tmp_path / "stale" / LOCK_FILE).read_text())["pid"] == os.getpid()
    with pytest.raises(ValueError, match=rf"in use by pid {os.getpid()}"):
        SaveFolderLock(str(tmp_path / "stale")).acquire()
    lock.release()
    assert not (tmp_path / "stale" / LOCK_FILE).exists()
    fresh = SaveFolderLock(str(tmp_path / "new" / "run"))
    fresh.acquire()
    fresh.release()
    assert not (tmp_path / "new" / "run").exists()  # a folder made only for the lock goes with it


def olmo_inject_train(save_folder: Path, *args: str, capsys) -> tuple:
    status = cli.main(["train", TINY, f"--save_folder={save_folder}", *args])
    captured = capsys.readouterr()
    return status, captured.out, [line for line in captured.err.splitlines() if "error" in line]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("finished") / "run"
    assert cli.main(["train", TINY, f"--save_folder={folder}", "--max_duration=2"]) == 0
    return folder


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy, symlinks=True)
    return copy


def checkpoints(folder: Path):
    return sorted(p.name for p in folder.glob("step*"))


def test_rerunning_a_finished_run_trains_nothing_and_exits_0(run_copy, capsys):
    write_lock(run_copy, dead_pid())  # a run killed earlier: its stale lock is taken over
    before = {name: (run_copy / name).read_bytes() for name in ("config.yaml", "metrics.jsonl")}
    status, out, errors = olmo_inject_train(run_copy, "--max_duration=2", capsys=capsys)
    assert (status, errors) == (0, [])
    assert (f"save_folder='{run_copy}': the run is finished, its latest checkpoint is at step 2 (max_duration=2 "
            "ends at step 2); nothing to train") in out
    assert checkpoints(run_copy) == ["step0-unsharded", "step2-unsharded"]
    assert {name: (run_copy / name).read_bytes() for name in before} == before
    assert not (run_copy / LOCK_FILE).exists()


def test_rerunning_another_experiment_is_refused_before_anything_is_overwritten(run_copy, capsys):
    saved = (run_copy / "config.yaml").read_bytes()
    status, _, errors = olmo_inject_train(
        run_copy, "--max_duration=2", "--seed=5", "--injection.tasks.0.schedule.instances_per_token=2e-3", capsys=capsys
    )
    assert status == 2
    assert errors == [
        f"{PREFIX}save_folder='{run_copy}' holds another experiment: 2 field(s) differ from its config.yaml "
        "(seed: 6198 -> 5; injection.tasks.0.schedule.instances_per_token: 0.0078125 -> 0.002); use another "
        "save_folder, or pass --allow_config_change to continue this run with the new values"
    ]
    status, _, errors = olmo_inject_train(run_copy, "--max_duration=3", capsys=capsys)
    assert status == 2 and "max_duration=3: save_folder=" in errors[0] and "pass --extend" in errors[0]
    owner = subprocess.Popen(["sleep", "600"])
    try:
        write_lock(run_copy, owner.pid)
        status, _, errors = olmo_inject_train(run_copy, "--max_duration=2", capsys=capsys)
    finally:
        owner.kill()
        owner.wait()
    assert status == 2 and f"is in use by pid {owner.pid}" in errors[0]
    assert (run_copy / "config.yaml").read_bytes() == saved
    assert checkpoints(run_copy) == ["step0-unsharded", "step2-unsharded"]
    assert not (run_copy / CHANGES_FILE).exists()


def test_extend_trains_further_and_records_the_change(run_copy, capsys):
    status, _, errors = olmo_inject_train(run_copy, "--max_duration=3", "--extend", capsys=capsys)
    assert (status, errors) == (0, [])
    assert checkpoints(run_copy) == ["step0-unsharded", "step2-unsharded", "step3-unsharded"]
    (record,) = [json.loads(line) for line in (run_copy / CHANGES_FILE).read_text().splitlines()]
    assert record["flag"] == "--extend" and record["from_step"] == 2
    assert record["changes"] == [{"field": "max_duration", "saved": 2, "now": 3}]
    assert "max_duration: 3" in (run_copy / "config.yaml").read_text()
    assert [json.loads(line)["_step"] for line in (run_copy / "metrics.jsonl").read_text().splitlines()].count(3) >= 1
