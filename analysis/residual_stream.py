"""Residual-stream activations of an OLMo model at chosen token positions, layer by layer.

Index convention used by every analysis: residual ``0`` is the input of block 0 (the token embedding), residual
``l + 1`` the output of block ``l`` (so "the first layer's residual stream" is residual 1).
"""

from __future__ import annotations

from typing import Sequence

import torch
from olmo.model import OLMo


@torch.no_grad()
def residual_streams(
    model: OLMo, input_ids: torch.Tensor, positions: Sequence[int], batch_size: int = 1024
) -> torch.Tensor:
    """Residuals at ``positions``: float32 tensor [n_layers + 1, n, len(positions), d_model].

    ``input_ids`` is [n, seq], without padding. The blocks are run directly, skipping the output head: with no
    attention mask OLMo passes ``attention_bias=None`` and each block attends causally, exactly as in
    ``OLMo.forward`` (a test pins this against ``output_hidden_states``).
    """
    assert not model.training, "put the model in eval mode: dropout would change the residuals"
    assert not hasattr(model.transformer, "block_groups"), "block groups are not supported"
    chunks = []
    for start in range(0, len(input_ids), batch_size):
        x = model.transformer.emb_drop(model.transformer.wte(input_ids[start : start + batch_size]))
        layers = [x[:, list(positions)].float()]
        for block in model.transformer.blocks:
            x, _ = block(x)
            layers.append(x[:, list(positions)].float())
        chunks.append(torch.stack(layers))
    return torch.cat(chunks, dim=1)
