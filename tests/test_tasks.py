import json

import numpy as np
import pytest

from olmo_injection.config import InjectionConfig, TaskConfig
from olmo_injection.task_kinds import task_kind_names
from olmo_injection.tasks import (
    EOS_TOKEN_ID,
    build_task,
    build_tasks,
    check_disjoint,
    load_task_file,
    olmo_tokenizer,
    save_task_file,
    word_token_pool,
)


@pytest.fixture(scope="module")
def cmp_task():
    return build_task(TaskConfig(name="cmp", kind="cmp", seed=0))


@pytest.fixture(scope="module")
def add_task():
    return build_task(TaskConfig(name="add", kind="add", seed=1))


def test_all_cmp_labels_are_correct(cmp_task):
    value_of = {int(t): v for v, t in enumerate(cmp_task.word_tokens)}
    true_tok, false_tok = cmp_task.label_tokens
    for tok1, tok2, label in cmp_task.instances:
        assert label == (true_tok if value_of[tok1] < value_of[tok2] else false_tok)
    assert len(cmp_task.instances) == 10_000


def test_all_add_labels_are_correct(add_task):
    value_of = {int(t): v for v, t in enumerate(add_task.word_tokens)}
    for tok1, tok2, label in add_task.instances:
        assert value_of[label] == (value_of[tok1] + value_of[tok2]) % 100
    assert len(add_task.instances) == 10_000


def test_words_are_single_tokens_that_reencode_to_themselves(cmp_task):
    base = olmo_tokenizer().base_tokenizer
    for token, text in zip(cmp_task.word_tokens.tolist() + cmp_task.label_tokens.tolist(),
                           cmp_task.word_strings + cmp_task.label_strings):
        assert base.decode([token]) == text
        assert base.encode(text, add_special_tokens=False).ids == [token]
        assert text[0] == " " and text[1:].isalpha() and text[1:].islower()
    assert len(set(cmp_task.word_tokens.tolist())) == 100
    assert not set(cmp_task.label_tokens.tolist()) & set(cmp_task.word_tokens.tolist())


def test_split_is_disjoint_balanced_and_seeded(cmp_task):
    train, test = set(cmp_task.train_ids.tolist()), set(cmp_task.test_ids.tolist())
    assert not train & test and len(train | test) == 10_000 and len(train) == len(test) == 5_000
    again = build_task(TaskConfig(name="cmp", kind="cmp", seed=0))
    assert np.array_equal(again.is_train, cmp_task.is_train)
    assert np.array_equal(again.word_tokens, cmp_task.word_tokens)
    other = build_task(TaskConfig(name="cmp", kind="cmp", seed=5))
    assert not np.array_equal(other.word_tokens, cmp_task.word_tokens)


def test_sequences_are_instance_then_eos(add_task):
    seqs = add_task.sequences([0, 123])
    assert seqs.shape == (2, 4) and (seqs[:, 3] == EOS_TOKEN_ID).all()
    assert np.array_equal(seqs[:, :3], add_task.instances[[0, 123]])


def test_task_file_round_trip_is_readable(tmp_path, cmp_task):
    path = tmp_path / "cmp.json"
    save_task_file(cmp_task, path)
    data = json.loads(path.read_text())
    assert data["instances"][1]["text"] == cmp_task.word_strings[0] + cmp_task.word_strings[1] + cmp_task.label_strings[0]
    loaded = load_task_file(path)
    for name in ("word_tokens", "label_tokens", "is_train", "instances"):
        assert np.array_equal(getattr(loaded, name), getattr(cmp_task, name)), name


def test_task_file_from_another_tokenizer_is_refused(tmp_path, cmp_task):
    path = tmp_path / "cmp.json"
    save_task_file(cmp_task, path)
    data = json.loads(path.read_text())
    data["word_strings"][0] = " notthisword"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="decodes to"):
        load_task_file(path)


def test_configured_tokens_modulus_and_sizes():
    pool = word_token_pool()
    cfg = TaskConfig(name="add7", kind="add", num_values=10, modulus=7, tokens=pool[:10].tolist(), seed=3)
    task = build_task(cfg)
    assert np.array_equal(task.word_tokens, pool[:10]) and len(task.label_tokens) == 7
    assert all(task.instances[i, 2] == pool[(a + b) % 7] for i, (a, b) in enumerate(task.values))


@pytest.mark.parametrize(
    "cfg, match",
    [
        (TaskConfig(kind="div"), f"kind='div': unknown task kind; allowed: {', '.join(task_kind_names())}"),
        (TaskConfig(kind="cmp", modulus=5), "'cmp' tasks take no modulus"),
        (TaskConfig(kind="add", label_tokens=[5, 6]), "take no label_tokens"),
        (TaskConfig(kind="add", modulus=101), "modulus=101"),
        (TaskConfig(kind="cmp", num_values=1), "num_values=1"),
        (TaskConfig(kind="cmp", train_fraction=1.0), "train_fraction=1.0"),
        (TaskConfig(kind="cmp", num_values=2, tokens=[5, 5]), "distinct"),
        (TaskConfig(kind="cmp", num_values=2, tokens=[5, 60000]), "not in the tokenizer"),
    ],
)
def test_bad_task_config_is_refused(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_task(cfg)


def test_overlapping_tasks_are_refused(cmp_task):
    with pytest.raises(ValueError, match="share tokens"):
        check_disjoint([cmp_task, build_task(TaskConfig(name="cmp2", kind="cmp", seed=0))])


def test_build_tasks_caches_files_that_match_their_config(make_config):
    cfg = make_config()
    first = build_tasks(cfg)
    files = sorted(p.name for p in __import__("pathlib").Path(cfg.injection.task_dir).glob("*.json"))
    assert len(files) == 2 and files[0].startswith("add-add-")
    second = build_tasks(cfg)
    assert all(np.array_equal(a.instances, b.instances) for a, b in zip(first, second))


def test_task_file_with_tokens_outside_the_tokenizer_is_refused(tmp_path, cmp_task):
    path = tmp_path / "cmp.json"
    save_task_file(cmp_task, path)
    data = json.loads(path.read_text())
    data["word_tokens"][3] = 60_000
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="word token 60000 is not in the tokenizer"):
        load_task_file(path)
