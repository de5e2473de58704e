"""Which parameters make up a first-block MLP neuron, top-K selection, and the task-neuron file.

OLMo 0.6.0's SwiGLU MLP (``OLMoSequentialBlock`` and ``OLMoLlamaBlock``) computes
``ff_out(silu(gate) * value)`` with ``value, gate = ff_proj(x).chunk(2, dim=-1)``. With ``n = ff_out.in_features``
neurons (half of ``mlp_hidden_size``), neuron ``i`` owns exactly

- row ``i`` of ``ff_proj.weight`` (``[2n, d_model]``), its *value* input row,
- row ``n + i`` of ``ff_proj.weight``, its *gate* input row,
- column ``i`` of ``ff_out.weight`` (``[d_model, n]``), its output column.

Every per-neuron tensor in this package is laid out ``[K, 3, d_model]`` in that order (value row, gate row,
output column), so a neuron's whole parameter set is one ``[3, d_model]`` slice.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Union

import torch
from olmo.model import OLMo, OLMoBlock, SwiGLU

VALUE_ROW, GATE_ROW, OUT_COLUMN = 0, 1, 2
PARTS_PER_NEURON = 3
TASK_NEURONS_FILE_VERSION = 1


def first_mlp_block(model: OLMo) -> OLMoBlock:
    """The first transformer block (layer 0) of an unwrapped OLMo model, with or without block groups.

    Raises ``ValueError`` when the block's activation is not SwiGLU, the only layout described above.
    """
    if hasattr(model.transformer, "block_groups"):
        block = model.transformer.block_groups[0][0]
    else:
        block = model.transformer.blocks[0]
    if not isinstance(block.act, SwiGLU):
        raise ValueError(
            f"model.activation_type={model.config.activation_type!r}: task neurons are defined for 'swiglu' only"
        )
    return block


def num_neurons(block: OLMoBlock) -> int:
    """Number of MLP neurons of a SwiGLU block (``mlp_hidden_size / 2``)."""
    return block.ff_out.in_features


def check_neurons(neurons: torch.Tensor, total: int) -> torch.Tensor:
    """``neurons`` as a 1-D int64 tensor; raises ``ValueError`` for duplicates or ids outside ``0..total-1``."""
    neurons = torch.as_tensor(neurons, dtype=torch.int64).reshape(-1)
    if neurons.numel() == 0:
        raise ValueError("neurons=[]: at least one neuron is needed")
    if int(neurons.min()) < 0 or int(neurons.max()) >= total:
        raise ValueError(f"neurons={neurons.tolist()}: ids must be in [0, {total - 1}] (the block has {total})")
    if neurons.unique().numel() != neurons.numel():
        raise ValueError(f"neurons={neurons.tolist()}: ids must be distinct")
    return neurons


def ff_proj_rows(neurons: torch.Tensor, total: int) -> torch.Tensor:
    """``[2K]`` rows of ``ff_proj.weight`` owned by ``neurons``: the K value rows, then the K gate rows."""
    neurons = torch.as_tensor(neurons, dtype=torch.int64)
    return torch.cat([neurons, neurons + total])


def neuron_slices(ff_proj_matrix: torch.Tensor, ff_out_matrix: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
    """``[K, 3, d_model]`` slices of an ``ff_proj``-shaped ``[2n, d]`` and an ``ff_out``-shaped ``[d, n]`` matrix.

    Works on weights and on their gradients alike (pass ``weight.grad``).
    """
    total = ff_out_matrix.shape[1]
    neurons = check_neurons(neurons, total).to(ff_proj_matrix.device)
    value_gate = ff_proj_matrix[ff_proj_rows(neurons, total)].reshape(2, len(neurons), -1).transpose(0, 1)
    out = ff_out_matrix[:, neurons].T.unsqueeze(1)
    return torch.cat([value_gate, out], dim=1)


def top_neurons(neuron_gradients: torch.Tensor, k: int) -> torch.Tensor:
    """Ids of the ``k`` neurons with the largest gradient L2 norm over their ``[3, d_model]`` parameters.

    ``neuron_gradients`` is ``[n, 3, d_model]`` for all ``n`` neurons of the block. The ids come sorted by
    decreasing norm; equal norms are ordered by id, so the choice is deterministic.
    """
    if not 1 <= k <= neuron_gradients.shape[0]:
        raise ValueError(f"num_task_neurons={k}: must be in [1, {neuron_gradients.shape[0]}] (neurons in the block)")
    norms = neuron_gradients.flatten(1).norm(dim=1)
    return torch.sort(-norms, stable=True).indices[:k]


@dataclass(frozen=True)
class TaskNeurons:
    """The task neurons of one run, as saved next to its checkpoints."""

    task: str
    """Name of the task whose loss gradient chose them."""

    neurons: List[int]
    """Neuron ids in layer 0, by decreasing gradient norm."""

    gradient_norms: List[float]
    """Task-loss gradient L2 norm of each chosen neuron at selection (same order as ``neurons``)."""

    num_neurons_in_block: int
    """Neurons in the first block's MLP, so a file cannot be applied to a model of another width."""

    selected_at_step: Optional[int]
    """Training step whose weights were used (``None`` when chosen offline from a checkpoint)."""

    source: str = ""
    """Where the weights came from (run save folder or checkpoint path), for provenance."""

    layer: int = 0
    """Always 0: the paper's task neurons are in the first MLP, which has the largest causal effect."""

    version: int = TASK_NEURONS_FILE_VERSION

    def ids(self) -> torch.Tensor:
        return torch.tensor(self.neurons, dtype=torch.int64)


def save_task_neurons(task_neurons: TaskNeurons, path: Union[str, Path]) -> None:
    """Write ``task_neurons`` as readable JSON (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(asdict(task_neurons), indent=1) + "\n")
    tmp.replace(path)  # atomic, so a crash never leaves half a file for the resumed run to read


def load_task_neurons(path: Union[str, Path]) -> TaskNeurons:
    """Read a file written by ``save_task_neurons``; raises ``ValueError`` for another file version."""
    data = json.loads(Path(path).read_text())
    if data.get("version") != TASK_NEURONS_FILE_VERSION:
        raise ValueError(
            f"{path}: task-neuron file version {data.get('version')!r}; allowed: {TASK_NEURONS_FILE_VERSION}"
        )
    return TaskNeurons(**data)
