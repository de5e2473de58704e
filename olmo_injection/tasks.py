"""The injected tasks T_CMP and T_ADD: word tokens, values, labels, instances and the train/test split.

A task is built once from its config and the OLMo tokenizer, written to a human-readable JSON task file, and
from then on loaded from that file by training and analysis alike, so every part of a study sees the same
instances. Instance id ``i = v1 * V + v2`` for values ``v1, v2`` in ``0..V-1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Collection, List, Optional, Sequence

import numpy as np

from .config import TaskConfig, validate_task_config
from .task_kinds import task_kind
from .tokenizer import EOS_TOKEN_ID, OLMO_TOKENIZER_FILE, olmo_tokenizer

TASK_FILE_VERSION = 1

# An ordinary word token: a space followed by 4 to 12 lowercase ASCII letters (shorter ones are mostly word pieces).
_WORD = re.compile(r"^ [a-z]{4,12}$")


@lru_cache(maxsize=4)
def word_token_pool(identifier: str = OLMO_TOKENIZER_FILE) -> np.ndarray:
    """Sorted ids of ordinary single-token words: a space + lowercase letters, decoding and re-encoding to itself."""
    tokenizer = olmo_tokenizer(identifier)
    base = tokenizer.base_tokenizer
    candidates = [i for tok, i in base.get_vocab().items() if i < tokenizer.vocab_size]
    pool = []
    for token_id in sorted(candidates):
        text = base.decode([token_id], skip_special_tokens=True)
        if _WORD.match(text) and base.encode(text, add_special_tokens=False).ids == [token_id]:
            pool.append(token_id)
    return np.asarray(pool, dtype=np.int64)


@dataclass(frozen=True)
class Task:
    """All instances of one task, in token ids. Arrays are indexed by instance id unless said otherwise."""

    name: str
    kind: str
    word_tokens: np.ndarray  # [V] token id of each value, in value order
    word_strings: List[str]  # [V] decoded word of each value
    label_tokens: np.ndarray  # [L] the possible LABEL tokens (cmp: [true, false]; a kind with a modulus: value tokens 0..P-1)
    label_strings: List[str]
    modulus: int  # P for kinds that take one (TaskKind.takes_modulus), else 0
    is_train: np.ndarray  # [V*V] bool
    seed: int

    @property
    def num_values(self) -> int:
        return len(self.word_tokens)

    @property
    def values(self) -> np.ndarray:
        """[V*V, 2] (v1, v2) of each instance."""
        v = np.arange(self.num_values)
        return np.stack(np.meshgrid(v, v, indexing="ij"), axis=-1).reshape(-1, 2)

    @property
    def label_index(self) -> np.ndarray:
        """[V*V] index into ``label_tokens`` of each instance's correct label."""
        v1, v2 = self.values.T
        return task_kind(self.kind).label_index(v1, v2, self.modulus)

    @property
    def instances(self) -> np.ndarray:
        """[V*V, 3] (TOK1, TOK2, LABEL) token ids."""
        v1, v2 = self.values.T
        return np.stack([self.word_tokens[v1], self.word_tokens[v2], self.label_tokens[self.label_index]], axis=1)

    @property
    def train_ids(self) -> np.ndarray:
        return np.flatnonzero(self.is_train)

    @property
    def test_ids(self) -> np.ndarray:
        return np.flatnonzero(~self.is_train)

    def sequences(self, ids: Sequence[int], eos_token_id: int = EOS_TOKEN_ID) -> np.ndarray:
        """[n, 4] the injected tokens ``TOK1 TOK2 LABEL EOS`` of the given instance ids."""
        ids = np.asarray(ids, dtype=np.int64)
        eos = np.full((len(ids), 1), eos_token_id, dtype=np.int64)
        return np.concatenate([self.instances[ids], eos], axis=1)

    def token_set(self) -> set:
        """Every token the task uses (words and labels)."""
        return set(self.word_tokens.tolist()) | set(self.label_tokens.tolist())


@lru_cache(maxsize=4)
def special_token_ids(identifier: str = OLMO_TOKENIZER_FILE) -> dict:
    """``{id: text}`` of the tokenizer's special tokens (EOS, padding and any other marked special)."""
    tokenizer = olmo_tokenizer(identifier)
    special = {tokenizer.eos_token_id: "EOS", tokenizer.pad_token_id: "padding"}
    for token_id, added in tokenizer.base_tokenizer.get_added_tokens_decoder().items():
        if added.special:
            special.setdefault(token_id, added.content)
    return special


def check_no_special_tokens(ids, identifier: str, where: str) -> None:
    """``ValueError`` naming ``where`` if a task token is a special token: an instance ends with EOS, padding is
    masked, and a special token means something else to the model than a word."""
    special = special_token_ids(identifier)
    hits = [int(t) for t in np.asarray(ids).tolist() if int(t) in special]
    if hits:
        names = ", ".join(f"{t} ({special[t]})" for t in hits)
        raise ValueError(f"{where}: ids {names} are special tokens; task tokens must be ordinary words")


def build_task(
    cfg: TaskConfig,
    tokenizer_identifier: str = OLMO_TOKENIZER_FILE,
    where: str = "task",
    taken: Collection[int] = (),
) -> Task:
    """Build a task from its config: seeded word choice (or ``cfg.tokens``), labels and split.

    Seeded choices are drawn from the word-token pool without the ``taken`` tokens (those of the run's earlier
    tasks), so the tasks of one run never share a token, whatever their seeds. Raises ``ValueError`` naming the
    field for any bad value, and for token ids outside the tokenizer.
    """
    validate_task_config(cfg, where)
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    tokenizer = olmo_tokenizer(tokenizer_identifier)
    pool = word_token_pool(tokenizer_identifier)
    if taken:
        pool = np.setdiff1d(pool, np.fromiter(taken, dtype=pool.dtype))
    kind = task_kind(cfg.kind, f"{where}.kind")
    num_labels = kind.own_label_tokens
    if cfg.tokens is None:
        needed = cfg.num_values + (num_labels if cfg.label_tokens is None else 0)
        if needed > len(pool):
            raise ValueError(f"{where}.num_values={cfg.num_values}: the tokenizer has only {len(pool)} word tokens")
        # One draw gives a random choice and, by its order, a random bijection to values.
        drawn = rng.choice(pool, size=needed, replace=False)
        word_tokens, spare = drawn[: cfg.num_values], drawn[cfg.num_values :]
    else:
        word_tokens = np.asarray(cfg.tokens, dtype=np.int64)
        spare = rng.choice(np.setdiff1d(pool, word_tokens), size=num_labels, replace=False)
    modulus = kind.modulus(cfg.num_values, cfg.modulus)
    if num_labels:
        label_tokens = np.asarray(cfg.label_tokens if cfg.label_tokens is not None else spare, dtype=np.int64)
    else:
        label_tokens = word_tokens[:modulus]
    bad = [t for t in np.concatenate([word_tokens, label_tokens]).tolist() if not 0 <= t < tokenizer.vocab_size]
    if bad:
        raise ValueError(f"{where}.tokens: ids {bad} are not in the tokenizer (vocab size {tokenizer.vocab_size})")
    for name, ids in (("tokens", word_tokens), ("label_tokens", label_tokens)):
        check_no_special_tokens(ids, tokenizer_identifier, f"{where}.{name}")
    if num_labels and set(label_tokens.tolist()) & set(word_tokens.tolist()):
        raise ValueError(f"{where}.label_tokens={label_tokens.tolist()}: must not be word tokens of the task")
    num_instances = cfg.num_values**2
    num_train = int(round(cfg.train_fraction * num_instances))
    is_train = np.zeros(num_instances, dtype=bool)
    is_train[rng.permutation(num_instances)[:num_train]] = True
    decode = lambda ids: [tokenizer.decode([int(t)], skip_special_tokens=False) for t in ids]  # noqa: E731
    return Task(
        name=cfg.name,
        kind=cfg.kind,
        word_tokens=word_tokens.astype(np.int64),
        word_strings=decode(word_tokens),
        label_tokens=label_tokens.astype(np.int64),
        label_strings=decode(label_tokens),
        modulus=modulus,
        is_train=is_train,
        seed=cfg.seed,
    )


def save_task_file(task: Task, path: Path) -> None:
    """Write ``task`` as JSON: vocabulary, labels, and one line per instance (ids, values, tokens, words, split)."""
    instances = task.instances
    rows = [
        {
            "id": int(i),
            "values": [int(a), int(b)],
            "tokens": [int(t) for t in instances[i]],
            "text": task.word_strings[a] + task.word_strings[b] + task.label_strings[task.label_index[i]],
            "split": "train" if task.is_train[i] else "test",
        }
        for i, (a, b) in enumerate(task.values)
    ]
    header = {
        "version": TASK_FILE_VERSION,
        "name": task.name,
        "kind": task.kind,
        "seed": task.seed,
        "modulus": task.modulus,
        "word_tokens": task.word_tokens.tolist(),
        "word_strings": task.word_strings,
        "label_tokens": task.label_tokens.tolist(),
        "label_strings": task.label_strings,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # ranks may write the same file at once
    with tmp.open("w") as f:
        # One instance per line keeps a 10,000-instance file readable and diffable.
        f.write("{\n" + "".join(f" {json.dumps(k)}: {json.dumps(v)},\n" for k, v in header.items()))
        f.write(' "instances": [\n')
        f.write(",\n".join("  " + json.dumps(r) for r in rows))
        f.write("\n ]\n}\n")
    tmp.replace(path)


TASK_FILE_FIELDS = (
    "name", "kind", "seed", "modulus", "word_tokens", "word_strings", "label_tokens", "label_strings", "instances",
)


def load_task_file(path: Path, tokenizer_identifier: str = OLMO_TOKENIZER_FILE, name: Optional[str] = None) -> Task:
    """Read a task file and check it whole: against the tokenizer (each token decodes to the word the file
    says, no special tokens) and against itself (each instance line's id, values, tokens and text follow from
    the vocabulary, its split is train or test). An edited or corrupt file raises ``ValueError`` naming the file
    and the first bad line.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"task file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"task file {path}: not valid JSON ({exc}); rewrite it with `olmo-inject tasks`") from None
    if not isinstance(data, dict):
        raise ValueError(f"task file {path}: must be a JSON object, got a {type(data).__name__}")
    missing = [f for f in TASK_FILE_FIELDS if f not in data]
    if missing:
        raise ValueError(f"task file {path}: missing field(s) {', '.join(missing)}; rewrite it with `olmo-inject tasks`")
    tokenizer = olmo_tokenizer(tokenizer_identifier)
    for field_name in ("word", "label"):
        tokens, strings = data[f"{field_name}_tokens"], data[f"{field_name}_strings"]
        if not isinstance(tokens, list) or not isinstance(strings, list) or len(tokens) != len(strings):
            raise ValueError(f"task file {path}: {field_name}_tokens and {field_name}_strings must be lists of one length")
        for token, text in zip(tokens, strings):
            if not isinstance(token, int) or not 0 <= token < tokenizer.vocab_size:
                raise ValueError(f"task file {path}: {field_name} token {token!r} is not in the tokenizer")
            decoded = tokenizer.decode([token], skip_special_tokens=False)
            if decoded != text:
                raise ValueError(
                    f"task file {path}: {field_name} token {token} decodes to {decoded!r}, the file says {text!r}; "
                    "the file was made with another tokenizer, or edited"
                )
        check_no_special_tokens(tokens, tokenizer_identifier, f"task file {path}: {field_name}_tokens")
    task_kind(data["kind"], f"task file {path}: kind")
    rows = data["instances"]
    if not isinstance(rows, list):
        raise ValueError(f"task file {path}: instances must be a list, one object per instance")
    try:
        task = Task(
            name=name or data["name"],
            kind=data["kind"],
            word_tokens=np.asarray(data["word_tokens"], dtype=np.int64),
            word_strings=list(data["word_strings"]),
            label_tokens=np.asarray(data["label_tokens"], dtype=np.int64),
            label_strings=list(data["label_strings"]),
            modulus=int(data["modulus"]),
            is_train=np.array([isinstance(r, dict) and r.get("split") == "train" for r in rows], dtype=bool),
            seed=int(data["seed"]),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"task file {path}: a header field has the wrong type ({exc})") from None
    _check_instance_lines(task, rows, path)
    return task


def _check_instance_lines(task: Task, rows: list, path: Path) -> None:
    """``ValueError`` naming the file and the first instance line that disagrees with the task's vocabulary."""
    expected = task.num_values**2
    if len(rows) != expected:
        raise ValueError(f"task file {path}: {len(rows)} instance lines, expected num_values**2 = {expected}")
    kind = task_kind(task.kind)
    kind.check(task.num_values, task.modulus if kind.takes_modulus else None,
               task.label_tokens.tolist() if kind.own_label_tokens else None, f"task file {path}:")
    if len(task.label_tokens) != kind.num_labels(task.num_values, task.modulus):
        raise ValueError(f"task file {path}: a {task.kind!r} task has {kind.num_labels(task.num_values, task.modulus)} "
                         f"label tokens, the file has {len(task.label_tokens)}")
    instances, values, labels = task.instances.tolist(), task.values.tolist(), task.label_index.tolist()
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"task file {path}: instance line {i} is not a JSON object")
        a, b = values[i]
        want = {
            "id": i,
            "values": [a, b],
            "tokens": instances[i],
            "text": task.word_strings[a] + task.word_strings[b] + task.label_strings[labels[i]],
        }
        for key, value in want.items():
            if row.get(key) != value:
                raise ValueError(
                    f"task file {path}: instance line {i} has {key}={row.get(key)!r}, but its position and the "
                    f"file's vocabulary give {value!r}; the file was edited, rewrite it with `olmo-inject tasks`"
                )
        if row.get("split") not in ("train", "test"):
            raise ValueError(f"task file {path}: instance line {i} has split={row.get('split')!r}; allowed: train, test")


def task_file_name(cfg: TaskConfig, taken: Collection[int] = ()) -> str:
    """Cache file name: the task's name plus a hash of everything that determines its content."""
    content = [cfg.kind, cfg.num_values, cfg.modulus, cfg.seed, cfg.train_fraction, cfg.tokens, cfg.label_tokens]
    if taken:  # the tokens a seeded draw had to avoid (see ``build_task``)
        content.append(sorted(int(t) for t in taken))
    digest = hashlib.sha1(json.dumps(content, default=list).encode()).hexdigest()[:10]
    return f"{cfg.name}-{cfg.kind}-{digest}.json"


def build_tasks(cfg, write: bool = True) -> List[Task]:
    """Every task of ``cfg.injection.tasks`` (an ``InjectionTrainConfig``), in order, loaded or built.

    A task with ``file`` set is loaded from it; otherwise it is read from ``injection.task_dir`` (default
    ``<save_folder>/tasks``) under a name that hashes its config, so a file always matches its config, or built
    and, when ``write``, written there (training builds with ``write=False``, checks everything, and only then
    calls ``write_task_files``). Seeded tasks avoid the tokens of the tasks before them (disjoint by
    construction); explicit token lists and task files are checked instead. ``ValueError`` naming the field or
    file for anything wrong, special tokens and the model's EOS/padding ids included.
    """
    identifier = cfg.tokenizer.identifier
    tasks: List[Task] = []
    for i, task_cfg in enumerate(cfg.injection.tasks):
        where = f"injection.tasks.{i}"
        if task_cfg.file is not None:
            tasks.append(load_task_file(Path(task_cfg.file), identifier, name=task_cfg.name))
            continue
        taken = set().union(*(t.token_set() for t in tasks))
        path = _task_file_path(cfg, i, tasks)
        if path.is_file():
            tasks.append(load_task_file(path, identifier, name=task_cfg.name))
        else:
            tasks.append(build_task(task_cfg, identifier, where=where, taken=taken))
    check_disjoint(tasks)
    for name in ("eos_token_id", "pad_token_id"):
        token = getattr(cfg.model, name)
        users = [t.name for t in tasks if token in t.token_set()]
        if users:
            raise ValueError(f"model.{name}={token}: is a token of task {users[0]!r}; task tokens must be ordinary words")
    if write:
        write_task_files(cfg, tasks)
    return tasks


def _task_file_path(cfg, i: int, earlier: Sequence[Task]) -> Path:
    """Where task ``i`` of ``cfg`` (without ``file``) is cached, given the tasks before it."""
    taken = set().union(*(t.token_set() for t in earlier))
    return Path(cfg.injection.task_dir or Path(cfg.save_folder) / "tasks") / task_file_name(cfg.injection.tasks[i], taken)


def write_task_files(cfg, tasks: Sequence[Task]) -> None:
    """Write each task of ``cfg`` built from its config (``build_tasks``) to its file, unless the file exists."""
    for i, task_cfg in enumerate(cfg.injection.tasks):
        path = _task_file_path(cfg, i, tasks[:i])
        if task_cfg.file is None and not path.is_file():
            save_task_file(tasks[i], path)


def check_disjoint(tasks: Sequence[Task]) -> None:
    """Raise ``ValueError`` if two tasks share a token: the injected streams must not be confusable."""
    for i, a in enumerate(tasks):
        for b in tasks[i + 1 :]:
            shared = sorted(a.token_set() & b.token_set())
            if shared:
                raise ValueError(
                    f"injection.tasks: tasks {a.name!r} and {b.name!r} share tokens {shared[:10]}; "
                    "token sets must not overlap (use different task seeds or token lists)"
                )
