"""What loading a checkpoint may unpickle (``olmo_injection.checkpoint_safety``): exactly what OLMo's checkpoints hold.

One tiny DDP run through the command line (module fixture) saves real checkpoints. Their files load with torch's
``weights_only`` unpickler and the allow-list, and not with any one entry of it removed (the list holds nothing
OLMo does not need). A ``train.pt`` overwritten with a pickle whose ``__reduce__`` would create a file is refused
by the real resume path (``olmo-inject train``: exit 2, one line naming the file and what it holds, the file never
created) and a ``model.pt`` so overwritten by the analysis loader; the explicit opt-in loads a trusted checkpoint
holding a class outside the list, in training and in analysis.
"""

from __future__ import annotations

import collections
import datetime
import inspect
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch

import olmo.checkpoint
from analysis.checkpoint_loading import load_checkpoint
from olmo_injection.checkpoint_safety import OLMO_CHECKPOINT_GLOBALS, UntrustedCheckpointError
from olmo_injection.olmo_patches import REPLACED_UPSTREAM, apply_olmo_patches, load_state_dict_naming_refused_file

REPO = Path(__file__).parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")
STOP = 2  # the fixture's run stops here (stop_at) with its checkpoint; without stop_at it resumes to step 4
CHECKPOINT = f"step{STOP}-unsharded"


class CreatesFile:
    """A pickle payload: unpickling it calls ``exec``, which would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",)


def olmo_inject_train(save_folder: Path, *args: str) -> subprocess.CompletedProcess:
    """``olmo-inject train configs/tiny.yaml`` into ``save_folder``, in a subprocess (wandb offline)."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "olmo_injection.cli", "train", TINY, f"--save_folder={save_folder}", *args],
        env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> Path:
    """A tiny DDP run stopped at step 2 (checkpoints step0-unsharded, step2-unsharded); not modified by tests."""
    save_folder = tmp_path_factory.mktemp("saved") / "run"
    done = olmo_inject_train(save_folder, "--max_duration=4", f"--stop_at={STOP}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (save_folder / CHECKPOINT / "train.pt").is_file()
    return save_folder


@pytest.fixture
def run_copy(saved_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(saved_run, copy)
    return copy


@pytest.fixture
def only_allow_listed():
    """Within: torch's user allow-list is empty; afterwards it is what it was (the patches' list)."""
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    yield
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(saved)


def refusal_lines(stderr: str) -> List[str]:
    """The lines of ``stderr`` that report a refused checkpoint file (each an ``error:`` line)."""
    lines = [line for line in stderr.splitlines() if "refused to load it" in line]
    assert all(": error: checkpoint file " in line for line in lines), lines
    return lines


def test_olmo_checkpoint_files_need_exactly_the_allow_list(saved_run, only_allow_listed):
    files = sorted((saved_run / CHECKPOINT).glob("*.pt"))
    assert [f.name for f in files] == ["model.pt", "optim.pt", "train.pt"]
    with torch.serialization.safe_globals(list(OLMO_CHECKPOINT_GLOBALS)):
        loaded = {f.name: torch.load(f, weights_only=True) for f in files}
    assert loaded["train.pt"]["global_step"] == STOP and loaded["train.pt"]["rng"]["numpy"][0] == "MT19937"
    assert all(isinstance(p, Path) for p in loaded["train.pt"]["unsharded_checkpoints"])
    for f in files[:2]:  # model and optimizer state are tensors, dicts and numbers only
        torch.load(f, weights_only=True)
    for left_out in OLMO_CHECKPOINT_GLOBALS:
        with torch.serialization.safe_globals([g for g in OLMO_CHECKPOINT_GLOBALS if g is not left_out]):
            with pytest.raises(Exception, match="[Ww]eights only load failed"):
                torch.load(saved_run / CHECKPOINT / "train.pt", weights_only=True)


def test_upstream_checkpointers_load_through_load_state_dict_with_torchs_default(only_allow_listed):
    # If this fails, OLMo changed how it loads checkpoints: load_state_dict_naming_refused_file may miss a load.
    apply_olmo_patches()
    upstream = REPLACED_UPSTREAM["olmo.checkpoint.load_state_dict"]
    assert olmo.checkpoint.load_state_dict is load_state_dict_naming_refused_file
    assert "return torch.load(path, map_location=map_location)" in inspect.getsource(upstream)
    for checkpointer in (olmo.checkpoint.FullCheckpointer, olmo.checkpoint.TorchNewStyleShardedCheckpointer,
                         olmo.checkpoint.OlmoCoreCheckpointer):
        source = inspect.getsource(checkpointer.restore_checkpoint)
        assert re.search(r"(?<![\w.])load_state_dict\(", source) and "torch.load(" not in source, checkpointer
    # torch's default (no weights_only argument) refuses OLMo's trainer state unless it is allowed.
    torch.serialization.clear_safe_globals()
    buffer = io.BytesIO()
    torch.save({"rng": {"numpy": np.random.get_state()}}, buffer)
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        torch.load(io.BytesIO(buffer.getvalue()))
    with torch.serialization.safe_globals(list(OLMO_CHECKPOINT_GLOBALS)):
        assert torch.load(io.BytesIO(buffer.getvalue()))["rng"]["numpy"][0] == "MT19937"


def test_resume_refuses_a_train_pt_that_would_run_code(run_copy, tmp_path):
    marker = tmp_path / "unpickled-code-ran"
    torch.save(CreatesFile(marker), run_copy / CHECKPOINT / "train.pt")
    done = olmo_inject_train(run_copy, "--max_duration=4")  # resumes from step 2
    assert done.returncode == 2, done.stderr[-3000:]
    assert not marker.exists()
    assert "Traceback" not in done.stderr
    (line,) = refusal_lines(done.stderr)
    assert f"checkpoint file {run_copy / CHECKPOINT / 'train.pt'} holds builtins.exec" in line
    assert "--trust_checkpoint" in line


def test_trusted_foreign_checkpoint_resumes_only_with_the_flag(run_copy, tmp_path):
    train_pt = run_copy / CHECKPOINT / "train.pt"
    with torch.serialization.safe_globals(list(OLMO_CHECKPOINT_GLOBALS)):
        state = torch.load(train_pt, weights_only=True)
    torch.save({**state, "saved_on": datetime.date(2024, 1, 1)}, train_pt)  # a class OLMo never saves
    load_path = (f"--load_path={run_copy / CHECKPOINT}", "--max_duration=4")

    refused = olmo_inject_train(tmp_path / "refused", *load_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    (line,) = refusal_lines(refused.stderr)
    assert f"checkpoint file {train_pt} holds datetime.date" in line

    trusted = olmo_inject_train(tmp_path / "trusted", *load_path, "--trust_checkpoint")
    assert trusted.returncode == 0, trusted.stderr[-3000:]
    assert "Training reached step 4" in trusted.stdout


def test_analysis_loader_refuses_code_and_loads_a_trusted_foreign_model(run_copy, tmp_path):
    checkpoint = run_copy / CHECKPOINT
    state = torch.load(checkpoint / "model.pt", weights_only=True)
    marker = tmp_path / "unpickled-code-ran"
    torch.save(CreatesFile(marker), checkpoint / "model.pt")
    refusal = f"checkpoint file {re.escape(str(checkpoint / 'model.pt'))} holds builtins.exec"
    with pytest.raises(UntrustedCheckpointError, match=refusal):
        load_checkpoint(checkpoint)
    assert not marker.exists()

    # A foreign writer's state dict in a mapping type OLMo never uses.
    torch.save(collections.defaultdict(None, state), checkpoint / "model.pt")
    with pytest.raises(UntrustedCheckpointError, match="holds collections.defaultdict"):
        load_checkpoint(checkpoint)
    loaded = load_checkpoint(checkpoint, trust_checkpoint_code=True)
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_no_code_or_template_forces_full_unpickling():
    variable = "TORCH_FORCE_NO_" + "WEIGHTS_ONLY_LOAD"  # spelt in two parts so this file does not match itself
    offenders = [
        str(path.relative_to(REPO))
        for folder in ("olmo_injection", "analysis", "launch", "configs", "benchmarks", "tests")
        for path in (REPO / folder).rglob("*")
        if path.is_file() and path.suffix in {".py", ".sh", ".sbatch", ".yaml", ".cfg", ""}
        and variable in path.read_text(errors="ignore")
    ] + [name for name in ("quickstart.sh", "setup.cfg") if variable in (REPO / name).read_text()]
    assert offenders == []


@pytest.mark.parametrize("value", ["1", "true"])
def test_an_environment_that_forces_full_unpickling_is_refused_before_anything_is_written(tmp_path, value):
    """torch would honour the variable in every torch.load without weights_only (OLMo's): the run refuses it."""
    variable = "TORCH_FORCE_NO_" + "WEIGHTS_ONLY_LOAD"
    env = {**os.environ, variable: value, "WANDB_MODE": "offline"}
    out = subprocess.run([sys.executable, "-m", "olmo_injection.train", str(REPO / "configs" / "tiny.yaml"),
                          f"--save_folder={tmp_path / 'run'}", "--max_duration=2"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"{variable}={value}" in errors[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["1", "TRUE", "Yes", "y", " 1", "0", "no", ""])
def test_the_refusal_follows_torchs_own_reading_of_the_variable(tmp_path, monkeypatch, value):
    """Refused exactly when torch.load would force full unpickling (it then warns that it does)."""
    import warnings

    from olmo_injection.checkpoint_safety import refuse_forced_full_unpickling

    variable = "TORCH_FORCE_NO_" + "WEIGHTS_ONLY_LOAD"
    monkeypatch.setenv(variable, value)
    torch.save({"w": torch.zeros(1)}, tmp_path / "f.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.load(tmp_path / "f.pt")
    torch_forces = any(variable in str(w.message) for w in caught)
    try:
        refuse_forced_full_unpickling()
        refused = False
    except UntrustedCheckpointError:
        refused = True
    assert refused == torch_forces, (value, torch_forces)
