"""The paper's model ladder (its Table 2) and the size name of a model.

``MODEL_LADDER`` is the one statement of the five sizes: ``configs/models/<name>.yaml`` holds each size's shape
for OLMo (``tests/test_configs.py`` builds every file and checks it against this table), ``docs/science.md``
prints the table (a test checks its rows), and run names and wandb groups name a model by its exact count.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class LadderSize:
    name: str
    parameters: int
    """Exact count, embeddings included (OLMo's ``num_params()``)."""
    n_layers: int
    d_model: int
    mlp_hidden_size: int
    """OLMo's ``mlp_hidden_size``: ``ff_proj``'s output, both SwiGLU halves (a block has half as many neurons)."""
    n_heads: int


MODEL_LADDER = (
    LadderSize("4M", 6_963_200, n_layers=8, d_model=64, mlp_hidden_size=512, n_heads=8),
    LadderSize("20M", 28_753_920, n_layers=16, d_model=192, mlp_hidden_size=1_536, n_heads=8),
    LadderSize("300M", 371_458_048, n_layers=16, d_model=1_024, mlp_hidden_size=8_192, n_heads=16),
    LadderSize("1B", 1_279_787_008, n_layers=16, d_model=2_048, mlp_hidden_size=16_384, n_heads=16),
    LadderSize("4B", 4_707_057_664, n_layers=16, d_model=4_096, mlp_hidden_size=32_768, n_heads=32),
)


def count_model_params(model_config) -> int:
    """Parameters of the OLMo model ``model_config`` (an ``olmo.config.ModelConfig``) describes, counted by OLMo's
    ``num_params()`` on the meta device (no memory, no initialisation); the same before and after FSDP shards it."""
    from olmo.model import OLMo

    return OLMo(replace(model_config, init_device="meta"), init_params=False).num_params()


def model_size_name(num_params: int) -> str:
    """The ladder's name of a model size (``4M``) for an exact ladder count, else e.g. ``0.41M``."""
    for size in MODEL_LADDER:
        if size.parameters == num_params:
            return size.name
    return f"{num_params / 1e6:.3g}M" if num_params < 1e9 else f"{num_params / 1e9:.3g}B"
