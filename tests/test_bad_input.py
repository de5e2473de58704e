"""Bad input through the real command line: one line naming the field or file, exit status 2, no traceback,
nothing written; on every rank path (one process, ``python -m olmo_injection.train``, two-rank torchrun).

Most cases run ``olmo_injection.cli.main`` (the ``olmo-inject`` entry point) in this process: each fails before
training, so the whole table costs a few seconds. A few run as real subprocesses to show what a user sees:
the console script, ``python -m``, torchrun, a read-only and a full file system (``unshare`` mounts a small
tmpfs where it can), a corrupt data batch, and a second Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest

from token_files import write_token_file
from olmo_injection import cli
from olmo_injection.config import TaskConfig
from olmo_injection.tasks import build_task, save_task_file

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")
PREFIX = "olmo-inject train: error: "


pytestmark = pytest.mark.usefixtures("offline_wandb")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Bad files, made once: YAMLs, task files (missing field, corrupt, edited values and text), data files."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "syntax.yaml").write_text("model:\n  d_model: [8\n")
    (d / "list.yaml").write_text("- model\n- data\n")
    (d / "a_file").write_text("not a folder\n")
    task = build_task(TaskConfig(name="cmp", kind="cmp", seed=0, num_values=4))
    save_task_file(task, d / "good-task.json")
    data = json.loads((d / "good-task.json").read_text())
    (d / "no-instances.json").write_text(json.dumps({k: v for k, v in data.items() if k != "instances"}))
    (d / "corrupt.json").write_text((d / "good-task.json").read_text()[:-40])
    edited_values = json.loads(json.dumps(data))
    edited_values["instances"][5]["values"] = [3, 3]
    (d / "edited-values.json").write_text(json.dumps(edited_values))
    edited_text = json.loads(json.dumps(data))
    edited_text["instances"][7]["text"] = " something else"
    (d / "edited-text.json").write_text(json.dumps(edited_text))
    (d / "empty.npy").write_bytes(b"")
    (d / "forty.npy").write_bytes(np.arange(20, dtype=np.uint16).tobytes())
    (d / "odd.npy").write_bytes(np.arange(400, dtype=np.uint16).tobytes() + b"\x01")
    return d


def olmo_inject_train(config: str, save_folder: Path, *args: str, capsys) -> tuple:
    """``olmo-inject train`` in this process: (exit status, stderr lines)."""
    status = cli.main(["train", config, f"--save_folder={save_folder}", *args])
    return status, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


CASES = [
    # (id, config or None for tiny.yaml, arguments, expected part of the message)
    ("yaml-syntax", "syntax.yaml", [], "syntax.yaml: not valid YAML at line 3, column 1"),
    ("yaml-not-mapping", "list.yaml", [], "list.yaml: holds a YAML list; it must be a mapping"),
    ("save-folder-is-a-file", None, ["--save_folder={d}/a_file"], "save_folder='{d}/a_file': is a file, not a folder"),
    ("task-missing-instances", None, ["--injection.tasks.0.file={d}/no-instances.json"],
     "task file {d}/no-instances.json: missing field(s) instances"),
    ("task-corrupt-json", None, ["--injection.tasks.0.file={d}/corrupt.json"], "task file {d}/corrupt.json: not valid JSON"),
    ("task-edited-values", None, ["--injection.tasks.0.file={d}/edited-values.json"],
     "task file {d}/edited-values.json: instance line 5 has values=[3, 3]"),
    ("task-edited-text", None, ["--injection.tasks.0.file={d}/edited-text.json"],
     "task file {d}/edited-text.json: instance line 7 has text=' something else'"),
    ("max-duration-0", None, ["--max_duration=0"], "max_duration=0: must be a positive number of steps"),
    ("max-duration-negative", None, ["--max_duration=-3"], "max_duration=-3: must be a positive number of steps"),
    ("save-interval-0", None, ["--save_interval=0"], "save_interval=0: must be >= 1"),
    ("eos-task-token", None, ["--injection.tasks.0.num_values=2", "--injection.tasks.0.tokens=[50279,2000]"],
     "injection.tasks.0.tokens: ids 50279 (EOS) are special tokens"),
    ("pad-label-token", None, ["--injection.tasks.0.label_tokens=[1,2000]"],
     "injection.tasks.0.label_tokens: ids 1 (padding) are special tokens"),
    ("data-odd-size", None, ["--data.paths=[{d}/odd.npy]"],
     "data.paths.0='{d}/odd.npy': 801 bytes is not a whole number of uint16 tokens"),
    ("data-empty", None, ["--data.paths=[{d}/empty.npy]"], "data.paths.0='{d}/empty.npy': the data file is empty"),
    ("data-40-bytes", None, ["--data.paths=[{d}/forty.npy]"],
     "data.paths.0='{d}/forty.npy': holds 20 tokens, fewer than one sequence"),
    ("frequency-injects-nothing", None, ["--injection.tasks.0.schedule.instances_per_token=1e-8"],
     "injection.tasks.0.schedule.instances_per_token=1e-08: injects no instance within max_duration=8 "
     "(8 steps of 256 tokens); the first instance needs 390625 steps"),
    ("global-batch-0", None, ["--global_train_batch_size=0"], "global_train_batch_size=0: must be an integer >= 1"),
    ("global-batch-abc", None, ["--global_train_batch_size=abc"],
     "global_train_batch_size: Value 'abc' of type 'str' could not be converted to Integer"),
    ("override-without-value", None, ["--model.d_model"], "override --model.d_model has no value"),
    ("list-index-out-of-range", None, ["--injection.tasks.5.seed=3"],
     "index 5 is out of range; injection.tasks has 2 elements (indices 0..1)"),
    ("negative-learning-rate", None, ["--optimizer.learning_rate=-1e-3"], "optimizer.learning_rate=-0.001: must be >= 0"),
    ("unknown-field", None, ["--model.no_such_field=1"], "model.no_such_field: Key 'no_such_field' not in 'ModelConfig'"),
]


@pytest.mark.parametrize("config, args, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(inputs, tmp_path, capsys, config, args, expected):
    save_folder = tmp_path / "run"
    config_path = str(inputs / config) if config else TINY
    status, err = olmo_inject_train(config_path, save_folder, *[a.format(d=inputs) for a in args], capsys=capsys)
    assert status == 2
    assert len(err) == 1 and err[0].startswith(PREFIX), err
    assert expected.format(d=inputs) in err[0]
    assert not save_folder.exists()  # no tasks/, train_data/, config.yaml, lock or wandb run left behind
    assert (inputs / "a_file").read_text() == "not a folder\n"


def test_save_interval_alone_sets_the_checkpoint_interval_under_ddp(tmp_path):
    from olmo_injection.train import fill_runtime_fields, load_config

    cfg = load_config(TINY, [f"--save_folder={tmp_path}", "--save_interval=10"])  # the YAML says 4 for both
    fill_runtime_fields(cfg, world_size=1)
    assert cfg.save_interval_unsharded == 10


def subprocess_env() -> dict:
    return {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "tests")}


def run_command(cmd: List[str], timeout_s: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=timeout_s)


def error_lines(stderr: str) -> List[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower() or "Traceback" in line]


def test_console_script_and_python_m_print_one_line_and_exit_2(tmp_path):
    console = run_command([str(Path(sys.executable).parent / "olmo-inject"), "train", TINY,
                           f"--save_folder={tmp_path / 'a'}", "--global_train_batch_size=0"])
    module = run_command([sys.executable, "-m", "olmo_injection.train", TINY, f"--save_folder={tmp_path / 'b'}",
                          "--optimizer.learning_rate=-1"])
    assert (console.returncode, module.returncode) == (2, 2)
    assert error_lines(console.stderr) == [PREFIX + "global_train_batch_size=0: must be an integer >= 1"]
    assert error_lines(module.stderr) == ["python -m olmo_injection.train: error: optimizer.learning_rate=-1.0: must be >= 0"]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def run_two_ranks_expecting_failure(save_folder: Path, *args: str, log_dir: Path) -> List[str]:
    """``torchrun`` two ranks of ``python -m olmo_injection.train`` with each rank's output in its own files;
    returns [rank 0 stderr, rank 1 stderr] after checking that both ranks exited 2."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           f"--log-dir={log_dir}", "--redirects=3", "-m", "olmo_injection.train", TINY,
           f"--save_folder={save_folder}", *args]
    result = run_command(cmd, timeout_s=600)
    assert result.returncode != 0
    assert result.stderr.count("exitcode  : 2") == 2, result.stderr[-3000:]  # torchrun's summary of both ranks
    return [next(log_dir.glob(f"*/attempt_0/{rank}/stderr.log")).read_text() for rank in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["batch-of-7", "locked-save-folder"])
def test_two_ranks_report_bad_input_once_from_rank_zero(tmp_path, case):
    save_folder = tmp_path / "run"
    if case == "batch-of-7":
        args, expected = ["--global_train_batch_size=7"], "global_train_batch_size=7: must be divisible by the world size 2"
    else:
        owner = subprocess.Popen(["sleep", "600"])
        save_folder.mkdir()
        (save_folder / "run.lock").write_text(json.dumps({"pid": owner.pid, "host": os.uname().nodename, "since": "x"}))
        args, expected = [], f"is in use by pid {owner.pid} on host {os.uname().nodename}"
    try:
        rank0, rank1 = run_two_ranks_expecting_failure(save_folder, *args, log_dir=tmp_path / "logs")
    finally:
        if case != "batch-of-7":
            owner.kill()
            owner.wait()
    (line,) = error_lines(rank0)
    assert line.startswith("python -m olmo_injection.train: error: ") and expected in line
    assert "Traceback" not in rank0
    assert error_lines(rank1) == [] and "Traceback" not in rank1
    if case == "batch-of-7":
        assert not save_folder.exists()
    else:
        assert sorted(p.name for p in save_folder.iterdir()) == ["run.lock"]  # the owner's lock, untouched


def can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


needs_tmpfs = pytest.mark.skipif(not can_mount_tmpfs(), reason="cannot mount a tmpfs in a user namespace here")


def train_on_tmpfs(mount: Path, options: str, *args: str) -> subprocess.CompletedProcess:
    """``olmo-inject train`` with ``mount`` a fresh tmpfs (``-o options``), in a private mount namespace."""
    mount.mkdir(parents=True, exist_ok=True)
    olmo_inject = Path(sys.executable).parent / "olmo-inject"
    script = (f'mount -t tmpfs -o {options} tmpfs "{mount}" && "{olmo_inject}" train "{TINY}" ' + " ".join(args)
              + f'; status=$?; ls -A "{mount}/run" 2>/dev/null | tr "\\n" " " >&2; exit $status')
    return run_command(["unshare", "-rm", "sh", "-c", script])


@needs_tmpfs
def test_read_only_save_folder_is_refused_before_anything(tmp_path):
    result = train_on_tmpfs(tmp_path / "ro", "ro,size=1m", f"--save_folder={tmp_path / 'ro' / 'run'}")
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        f"{PREFIX}save_folder='{tmp_path / 'ro' / 'run'}': not writable ({tmp_path / 'ro'}, where it would be created)"
    ]


@needs_tmpfs
def test_full_disk_during_checkpoint_save_says_so_and_removes_the_partial_checkpoint(tmp_path):
    # 3 MiB: the task files, config and wandb fit; the step-0 checkpoint (~5 MB of weights and Adam state) does not.
    save_folder = tmp_path / "full" / "run"
    result = train_on_tmpfs(tmp_path / "full", "size=3m", f"--save_folder={save_folder}", "--max_duration=2")
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert lines == [
        f"{PREFIX}save_folder='{save_folder}': no space left on device while saving the checkpoint of step 0 "
        f"({lines[0].split('(')[1].split(')')[0]}); removed the partial step0-unsharded-tmp; free some space and "
        "rerun the same command to resume from the latest complete checkpoint"
    ], result.stderr[-3000:]
    left = result.stderr.strip().splitlines()[-1]  # what the folder held at the end (listed by the script)
    assert "-tmp" not in left and "step0-unsharded" not in left and "run.lock" not in left


def test_token_ids_past_the_vocabulary_are_caught_in_the_batch_naming_the_file(tmp_path, capsys):
    data = write_token_file(tmp_path / "data" / "part-0.npy", num_tokens=32 * 64)
    tokens = np.fromfile(data, dtype=np.uint16)
    tokens[32 * 9 + 5] = 50300  # past vocab_size=50280, inside embedding_size=50304: no crash, silently wrong
    tokens.tofile(data)
    status, err = olmo_inject_train(
        TINY, tmp_path / "run", f"--data.paths=[{data}]", "--max_duration=8", "--save_interval=100",
        "--eval_interval=100", "--evaluators=[]", capsys=capsys,
    )
    assert status == 2
    assert [line for line in err if "error" in line] == [
        f"{PREFIX}data file {data}: token id 50300 at token {32 * 9 + 5} (sequence 9) is not below "
        "model.vocab_size=50280; the file was made with another tokenizer, or with another data.memmap_dtype"
    ], err[-5:]
    assert "Traceback" not in "\n".join(err)
    assert not list((tmp_path / "run").glob("step[1-9]*"))  # no step trained on the bad batch was checkpointed


def test_second_ctrl_c_stops_at_once_with_one_line(tmp_path):
    save_folder = tmp_path / "run"
    olmo_inject = Path(sys.executable).parent / "olmo-inject"
    proc = subprocess.Popen(
        [str(olmo_inject), "train", TINY, f"--save_folder={save_folder}", "--max_duration=100000",
         "--save_interval=100000", "--eval_interval=100000"],
        cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        while not (save_folder / "metrics.jsonl").is_file() or not (save_folder / "metrics.jsonl").read_text():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.5)  # polling for the first logged step, not asserting on time
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGINT
    assert error_lines(stderr) == []
    assert stderr.count("interrupted twice") == 1 and "KeyboardInterrupt" not in stderr
    assert not (save_folder / "run.lock").exists()
