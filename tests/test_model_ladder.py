"""The ladder's names by exact count, and the one printed copy of the table (docs/science.md) agreeing with it.

That every ``configs/models`` file builds the ladder's count is checked in ``tests/test_configs.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

from olmo_injection.model_ladder import MODEL_LADDER, model_size_name

SCIENCE = Path(__file__).resolve().parents[1] / "docs" / "science.md"


def test_a_ladder_count_is_named_by_the_ladder_and_any_other_by_its_size():
    assert [model_size_name(size.parameters) for size in MODEL_LADDER] == ["4M", "20M", "300M", "1B", "4B"]
    assert model_size_name(6_963_201) == "6.96M"
    assert model_size_name(403_712) == "0.404M"
    assert model_size_name(7_300_000_000) == "7.3B"


def test_the_docs_print_the_ladder_as_the_code_states_it():
    rows = {}
    for line in SCIENCE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and re.fullmatch(r"\d+[MB]", cells[0]):
            rows[cells[0]] = tuple(int(c.replace(",", "")) for c in cells[1:])
    assert rows == {
        s.name: (s.parameters, s.n_layers, s.d_model, s.mlp_hidden_size, s.n_heads, s.mlp_hidden_size // 2)
        for s in MODEL_LADDER
    }
