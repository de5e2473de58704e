"""Task kinds as plug-ins: the registry, the third built-in kind (``mul``), and a kind from another package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from olmo_injection.config import TaskConfig
from olmo_injection.hooks.task_eval_config import TaskEvalConfig
from olmo_injection.task_kinds import BUILTIN_KINDS, TaskKind, require_analysis, task_kind, task_kind_names
from olmo_injection.tasks import build_task, load_task_file, olmo_tokenizer, save_task_file

ROOT = Path(__file__).parents[1]


def test_registry_holds_the_library_kinds_and_names_them_in_errors():
    assert task_kind_names()[:3] == ["cmp", "add", "mul"]
    assert all(isinstance(task_kind(name), TaskKind) and task_kind(name).name == name for name in task_kind_names())
    with pytest.raises(ValueError, match=rf"injection.tasks.2.kind='div': unknown task kind; allowed: {', '.join(task_kind_names())}"):
        task_kind("div", "injection.tasks.2.kind")


def test_mul_labels_are_the_products_mod_p_over_every_instance(tmp_path):
    task = build_task(TaskConfig(name="mul", kind="mul", num_values=12, modulus=7, seed=3))
    v1, v2 = task.values.T
    assert np.array_equal(task.label_index, (v1 * v2) % 7)
    assert np.array_equal(task.label_tokens, task.word_tokens[:7])  # labels are value tokens 0..6
    assert np.array_equal(task.instances[:, 2], task.word_tokens[(v1 * v2) % 7])
    save_task_file(task, tmp_path / "mul.json")
    again = load_task_file(tmp_path / "mul.json")
    assert again.kind == "mul" and np.array_equal(again.instances, task.instances)


@pytest.mark.parametrize("cfg, match", [
    (TaskConfig(kind="mul", num_values=5, modulus=6), "modulus=6: must be in"),
    (TaskConfig(kind="mul", label_tokens=[10, 11]), "'mul' tasks use their value tokens as labels"),
])
def test_mul_config_errors_name_the_field(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_task(cfg)


def test_mul_reference_prompts_are_products_of_small_numbers():
    tokenizer = olmo_tokenizer()
    prompts = task_kind("mul").reference_prompts(tokenizer, TaskEvalConfig(reference_add_pairs=40, seed=1))
    assert prompts.input_ids.shape[0] == 40
    for row in range(40):
        x, y = (int(s) for s in tokenizer.decode(prompts.input_ids[row].tolist()).rstrip(" =").split(" * "))
        assert max(x, y) < 15
        assert tokenizer.decode([prompts.candidates[prompts.correct[row]].item()]) == f" {x * y}"


def test_analyses_ask_the_kind_whether_they_apply():
    mul = build_task(TaskConfig(name="m", kind="mul", num_values=5))
    with pytest.raises(ValueError, match="task 'm' has kind 'mul': fourier is defined for 'add'"):
        require_analysis(mul, "fourier")
    with pytest.raises(ValueError, match="das is defined for 'cmp'"):
        require_analysis(mul, "das")
    require_analysis(build_task(TaskConfig(name="a", kind="add", num_values=5)), "fourier")


PLUGIN = '''
import numpy as np
from olmo_injection.task_kinds import TaskKind

class SubtractionKind(TaskKind):
    name = "sub"
    description = "(v(TOK1) - v(TOK2)) mod P"
    takes_modulus = True

    def label_index(self, v1, v2, modulus):
        return (v1 - v2) % modulus
'''


def test_a_kind_from_another_package_registers_through_its_entry_point(tmp_path):
    (tmp_path / "subtraction_kind.py").write_text(textwrap.dedent(PLUGIN))
    dist_info = tmp_path / "subtraction_kind-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: subtraction-kind\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[olmo_injection.task_kinds]\nsub = subtraction_kind:SubtractionKind\n")
    script = textwrap.dedent('''
        import json, numpy as np
        from olmo_injection.config import TaskConfig, validate_task_config
        from olmo_injection.task_kinds import task_kind_names
        from olmo_injection.tasks import build_task
        cfg = TaskConfig(name="s", kind="sub", num_values=6, modulus=5)
        validate_task_config(cfg, "injection.tasks.0")
        task = build_task(cfg)
        v1, v2 = task.values.T
        print(json.dumps({"kinds": task_kind_names(), "right": bool(np.array_equal(task.label_index, (v1 - v2) % 5))}))
    ''')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"kinds": [*BUILTIN_KINDS, "sub"], "right": True}


@pytest.mark.slow
def test_a_mul_task_trains_and_reports_its_metrics_through_the_entry_point(tmp_path, monkeypatch):
    from olmo_injection import metric_names as mn
    from olmo_injection.metrics_record import metrics_by_step
    from olmo_injection.train import load_config, train

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = load_config(str(ROOT / "configs" / "tiny.yaml"), [
        f"save_folder={tmp_path}", "max_duration=2", "eval_interval=2", "wandb=null",
        "injection.tasks.1.name=mul", "injection.tasks.1.kind=mul", "injection.tasks.1.num_values=10"])
    assert train(cfg).final_step == 2
    row = metrics_by_step(tmp_path)[2]
    for split in (mn.TRAIN_SPLIT, mn.TEST_SPLIT, mn.REFERENCE):
        assert np.isfinite(row[mn.task_key("mul", split, mn.LOSS)]), split
