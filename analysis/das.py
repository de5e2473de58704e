"""Distributed alignment search (DAS) for T_CMP with pyvene, on the converted Hugging Face OLMo model.

A one-dimensional rotated subspace (``pyvene.LowRankRotatedSpaceIntervention``, ``low_rank_dimension=1``) at one
layer and token position is trained so that swapping its coordinate from a source prompt into a base prompt
makes the model answer the *counterfactual* comparison. For variable ``tok1`` the source carries another TOK1
value ``v1'``: the expected label is ``v1' < v2``; for ``tok2`` it is ``v1 < v2'``. Training pairs come from the
task's train split, evaluation pairs from its test split; the interchange-intervention accuracy (IIA) is
measured on the latter.

Pairs are balanced by default (``pairs="balanced"``): in half of them the swap flips the expected label, in the
other half it does not (the source's value differs from the base's but is on the same side), so a model the
swap does not move, and a random one, score 0.5. (``pairs="flip_only"`` keeps only flipping pairs: chance is
then between 0 and 0.5.) The expected label still depends on the source value alone (a large v1' rarely
satisfies ``v1' < v2``), so every result also carries ``source_value_baseline``, the accuracy of a rule that
sees only the source value (~0.85 balanced, ~0.93 flip-only, 100 values; balancing cannot remove it, the
label being a function of the source value and the base's other value), and ``exceeds_baselines``: IIA above
both that and ``base_answer_baseline``. A site that merely identifies the source token can reach the
source-value baseline; an IIA means an order variable only above it, and next to the step-0 checkpoint's.

The model is frozen, so two things are computed only once or not at all: the sources' representations at the
site (``site_representations``, a forward that stops at the site, passed to pyvene as
``source_representations``), and all logits but the label tokens' (``label_head``). A test pins both against
pyvene's own source run with the full head.

pyvene 0.1.8 already maps ``transformers``' ``OlmoForCausalLM`` (``block_output`` = output of decoder layer l),
so no mapping is registered here; ``check_pyvene_supports`` fails loudly if an upgrade drops it.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import OlmoForCausalLM

from olmo_injection.task_kinds import require_analysis
from olmo_injection.tasks import Task

from .task_prompts import TOKEN_POSITIONS, cmp_label_index, prompt_ids

VARIABLES = ("tok1", "tok2")
COMPONENTS = ("block_input", "block_output")
PAIRINGS = ("balanced", "flip_only")


@dataclass
class DasConfig:
    """Where to search and how to train the rotation."""

    layers: List[int] = field(default_factory=lambda: [0])
    """Decoder layers searched (0 = first); ``block_output`` of layer 0 is the first layer's residual stream."""

    component: str = "block_output"
    """pyvene component: ``block_output`` (residual after the layer) or ``block_input`` (before it)."""

    positions: List[int] = field(default_factory=lambda: list(TOKEN_POSITIONS))
    """Token positions searched (0 = TOK1, 1 = TOK2)."""

    variables: List[str] = field(default_factory=lambda: list(VARIABLES))
    """Causal variables searched: ``tok1`` (v1) or ``tok2`` (v2). ``tok2`` at position 0 is skipped: causal
    attention keeps TOK2 out of position 0."""

    num_train_pairs: int = 2048
    """Counterfactual pairs the rotation is trained on (from the train split)."""

    num_eval_pairs: int = 1024
    """Held-out pairs the IIA is measured on (from the test split)."""

    epochs: int = 4
    """Passes over the training pairs."""

    batch_size: int = 256
    """Pairs per optimiser step."""

    learning_rate: float = 1e-2
    """Adam learning rate of the rotation."""

    seed: int = 0
    """Seeds pair sampling, the rotation's initialisation and the batch order."""

    pairs: str = "balanced"
    """``balanced``: the swap flips the expected label in half of the pairs (chance 0.5); ``flip_only``: in all."""

    def validate(self) -> None:
        if self.pairs not in PAIRINGS:
            raise ValueError(f"pairs={self.pairs!r}: allowed are {list(PAIRINGS)}")
        if self.component not in COMPONENTS:
            raise ValueError(f"component={self.component!r}: allowed are {list(COMPONENTS)}")
        if not self.layers or min(self.layers) < 0:
            raise ValueError(f"layers={self.layers}: give at least one layer index >= 0")
        if not self.positions or any(p not in TOKEN_POSITIONS for p in self.positions):
            raise ValueError(f"positions={self.positions}: allowed positions are {list(TOKEN_POSITIONS)}")
        if not self.variables or any(v not in VARIABLES for v in self.variables):
            raise ValueError(f"variables={self.variables}: allowed are {list(VARIABLES)}")
        for name in ("num_train_pairs", "num_eval_pairs", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate}: must be > 0")


def check_pyvene_supports(model: OlmoForCausalLM) -> None:
    """RuntimeError if pyvene has no module mapping for this HF model class."""
    from pyvene.models.intervenable_modelcard import type_to_module_mapping

    if type(model) not in type_to_module_mapping:
        version = getattr(_pyvene(), "__version__", "?")
        raise RuntimeError(f"pyvene {version} has no module mapping for {type(model).__name__}")


def counterfactual_pairs(
    task: Task, variable: str, pool: np.ndarray, num_pairs: int, rng: np.random.Generator, balanced: bool = True
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``num_pairs`` (base id, source id, expected label index) from instance ids in ``pool``.

    The source supplies the value of ``variable``, always a value other than the base's; the expected label is
    the comparison with that value swapped in. With ``balanced`` the swap changes the base's label in half of
    the pairs (drawn at random) and keeps it in the other half; without, it changes it in every pair.
    """
    require_analysis(task, "das")  # the task's kind says whether this analysis is defined for it
    values = task.values[pool]
    swapped = VARIABLES.index(variable)
    flips = np.ones(num_pairs, dtype=bool)
    if balanced:
        flips[rng.permutation(num_pairs)[: num_pairs // 2]] = False
    bases, sources, labels = [], [], []
    for flip in flips:
        for _attempt in range(100):  # an extreme base may allow no source of the wanted kind: draw another
            base = rng.integers(len(pool))
            v1, v2 = values[base]
            # The comparison each pool instance would give if its value of ``variable`` were swapped into the base.
            cf_labels = cmp_label_index(values[:, 0], v2) if swapped == 0 else cmp_label_index(v1, values[:, 1])
            other_value = values[:, swapped] != values[base, swapped]
            allowed = np.flatnonzero(other_value & ((cf_labels != cmp_label_index(v1, v2)) == flip))
            if len(allowed):
                break
        else:
            raise ValueError(f"task {task.name!r}: its {variable} pool has no pair whose swap "
                             f"{'flips' if flip else 'keeps'} the label (too few values)")
        source = rng.choice(allowed)
        bases.append(pool[base])
        sources.append(pool[source])
        labels.append(cf_labels[source])
    return np.asarray(bases), np.asarray(sources), np.asarray(labels)


def base_answer_baseline(task: Task, eval_pairs: Tuple) -> float:
    """Accuracy on ``eval_pairs`` of a model the intervention does not move (it answers each base correctly):
    the share of pairs whose expected label is the base's own (0.5 balanced, 0 flip-only)."""
    bases, _, labels = eval_pairs
    return float((task.label_index[bases] == labels).mean())


def source_value_baseline(task: Task, variable: str, train_pairs: Tuple, eval_pairs: Tuple) -> float:
    """Accuracy on ``eval_pairs`` of a rule that sees only the source's value of ``variable``: per value, the
    expected label most frequent among ``train_pairs`` with that source value.

    The expected label depends on the source value (a large v1' makes ``v1' < v2`` unlikely): about 0.85 with
    balanced pairs and 0.93 flip-only (100 values), so an IIA is evidence of an order variable only above this
    baseline; a model whose site merely identifies the source token can reach it.
    """
    column = VARIABLES.index(variable)
    _, train_sources, train_labels = train_pairs
    _, eval_sources, eval_labels = eval_pairs
    votes = np.zeros((task.num_values, 2))
    np.add.at(votes, (task.values[train_sources, column], train_labels), 1)
    rule = votes.argmax(axis=1)
    return float((rule[task.values[eval_sources, column]] == eval_labels).mean())


def _pyvene():
    # Imported on first use: pyvene prints a notice on import, which every ``olmo-inject`` call would show.
    import pyvene

    return pyvene


def rotated_intervenable(model: OlmoForCausalLM, layer: int, component: str) -> "pyvene.IntervenableModel":
    """pyvene's wrapper of ``model`` with one trainable rank-1 rotated-subspace intervention at (layer, component)
    on one token position; the model's own weights are frozen."""
    pv = _pyvene()
    config = pv.IntervenableConfig(
        representations=[pv.RepresentationConfig(layer, component, "pos", 1, low_rank_dimension=1)],
        intervention_types=pv.LowRankRotatedSpaceIntervention,
    )
    intervenable = pv.IntervenableModel(config, model, use_fast=True)
    intervenable.disable_model_gradients()
    return intervenable


def _rotation(intervenable: "pyvene.IntervenableModel") -> torch.nn.Module:
    (intervention,) = intervenable.interventions.values()
    return intervention


@contextmanager
def label_head(model: OlmoForCausalLM, label_tokens: Sequence[int]) -> Iterator[None]:
    """Within the block, ``model``'s logits are those of ``label_tokens`` only (column i = ``label_tokens[i]``).

    The LABEL is read from the logits of the label tokens alone, and the full-vocabulary head costs about as
    much as all 16 blocks of a 2-token prompt, forward and backward; the original head is restored on exit.
    """
    full = model.lm_head
    head = torch.nn.Linear(full.in_features, len(label_tokens), bias=False)
    head.weight = torch.nn.Parameter(full.weight.detach()[torch.as_tensor(label_tokens)].clone(), requires_grad=False)
    model.lm_head = head
    try:
        yield
    finally:
        model.lm_head = full


class _SiteReached(Exception):
    """Raised by ``site_representations``' hook: the layers after the site are not needed."""


@torch.no_grad()
def site_representations(
    model: OlmoForCausalLM, input_ids: torch.Tensor, layer: int, component: str, position: int, batch_size: int
) -> torch.Tensor:
    """[n, 1, d_model]: what pyvene's ``(layer, component)`` site holds at ``position`` for each prompt of
    ``input_ids`` [n, seq], in the shape pyvene takes as ``source_representations``.

    The module and hook are pyvene's own for the site; the forward stops there. The model is frozen during
    DAS, so a source's representation is computed once instead of once per optimiser step.
    """
    from pyvene.models.modeling_utils import get_module_hook

    hook_of = get_module_hook(model, _pyvene().RepresentationConfig(layer, component, "pos", 1))
    captured = []

    def capture(_module, args, kwargs, output=None):
        hidden = output if component == "block_output" else (args[0] if args else next(iter(kwargs.values())))
        captured.append((hidden[0] if isinstance(hidden, tuple) else hidden)[:, position : position + 1])
        raise _SiteReached

    handle = hook_of(capture, with_kwargs=True)
    try:
        for start in range(0, len(input_ids), batch_size):
            try:
                model.model(input_ids=input_ids[start : start + batch_size], use_cache=False)
            except _SiteReached:
                pass
    finally:
        handle.remove()
    return torch.cat(captured).float()


def counterfactual_label_logits(
    intervenable: "pyvene.IntervenableModel", base: torch.Tensor, source_representations: torch.Tensor, position: int
) -> torch.Tensor:
    """[n, num_labels] label logits of ``base`` prompts with the site's representation taken from the sources
    (inside ``label_head``, the model's logits are the label logits)."""
    locations = [[[position]] * len(base)]
    _, out = intervenable(
        {"input_ids": base, "use_cache": False},
        unit_locations={"sources->base": (locations, locations)},
        source_representations=source_representations,
    )
    return out.logits[:, -1]


def das_at(
    model: OlmoForCausalLM, task: Task, layer: int, position: int, variable: str, cfg: DasConfig
) -> Dict:
    """Train one 1-D rotation at (layer, position) for ``variable`` and return its IIA and direction.

    Returns ``{"layer", "position", "variable", "component", "pairs", "iia", "train_iia", "chance",
    "source_value_baseline", "base_answer_baseline", "exceeds_baselines", "direction" ([d_model] list, unit
    norm)}``; ``exceeds_baselines`` is IIA above both baselines (see the module). Seeds come from ``cfg.seed``,
    so a call is reproducible.
    ``model`` is left as it was.
    """
    check_pyvene_supports(model)
    if layer >= model.config.num_hidden_layers:
        raise ValueError(f"layers: {layer} is not below num_hidden_layers={model.config.num_hidden_layers}")
    rng = np.random.default_rng([cfg.seed, layer, position, VARIABLES.index(variable)])
    torch.manual_seed(int(rng.integers(2**31)))
    balanced = cfg.pairs == "balanced"
    pairs = {
        "train_iia": counterfactual_pairs(task, variable, task.train_ids, cfg.num_train_pairs, rng, balanced),
        "iia": counterfactual_pairs(task, variable, task.test_ids, cfg.num_eval_pairs, rng, balanced),
    }
    intervenable = rotated_intervenable(model, layer, cfg.component)
    rotation = _rotation(intervenable)
    optimizer = torch.optim.Adam(rotation.parameters(), lr=cfg.learning_rate)
    result = {"layer": layer, "position": position, "variable": variable, "component": cfg.component,
              "pairs": cfg.pairs, "chance": 0.5 if balanced else None,
              "source_value_baseline": source_value_baseline(task, variable, pairs["train_iia"], pairs["iia"]),
              "base_answer_baseline": base_answer_baseline(task, pairs["iia"])}
    with label_head(model, task.label_tokens):
        inputs = {}
        for name, (bases, sources, labels) in pairs.items():
            source_reps = site_representations(
                model, prompt_ids(task, sources), layer, cfg.component, position, cfg.batch_size
            )
            inputs[name] = (prompt_ids(task, bases), source_reps, torch.as_tensor(labels))
        base_tokens, source_reps, labels = inputs["train_iia"]
        for _ in range(cfg.epochs):
            order = torch.as_tensor(rng.permutation(len(labels)))
            for start in range(0, len(order), cfg.batch_size):
                batch = order[start : start + cfg.batch_size]
                logits = counterfactual_label_logits(intervenable, base_tokens[batch], source_reps[batch], position)
                loss = F.cross_entropy(logits.float(), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            for name, (base_tokens, source_reps, labels) in inputs.items():
                correct = 0
                for start in range(0, len(labels), cfg.batch_size):
                    batch = slice(start, start + cfg.batch_size)
                    logits = counterfactual_label_logits(intervenable, base_tokens[batch], source_reps[batch], position)
                    correct += int((logits.argmax(-1) == labels[batch]).sum())
                result[name] = correct / len(labels)
    result["exceeds_baselines"] = result["iia"] > max(result["source_value_baseline"], result["base_answer_baseline"])
    direction = rotation.rotate_layer.weight.detach()[:, 0].float()
    result["direction"] = (direction / direction.norm()).tolist()
    return result


def das_sweep(model: OlmoForCausalLM, task: Task, cfg: DasConfig, progress: bool = True) -> Dict:
    """DAS at every (layer, position, variable) of ``cfg`` (skipping ``tok2`` at position 0).

    Returns ``{"results": [...das_at results...], "best": the result with the highest IIA, "config": ...}``.
    """
    cfg.validate()
    sites = [
        (layer, position, variable)
        for layer, position, variable in product(cfg.layers, cfg.positions, cfg.variables)
        if not (variable == "tok2" and position == 0)
    ]
    results = [
        das_at(model, task, *site, cfg) for site in tqdm(sites, desc="DAS sites", disable=not progress)
    ]
    best = max(results, key=lambda r: r["iia"])
    return {"results": results, "best": best, "config": asdict(cfg)}


def save_direction(result: Dict, path_stem: Path) -> Tuple[Path, Path]:
    """Write a DAS result's direction as ``<stem>.pt`` (tensor + metadata) and ``<stem>.json``; returns both."""
    path_stem = Path(path_stem)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in result.items() if k != "direction"}
    pt_path, json_path = path_stem.with_suffix(".pt"), path_stem.with_suffix(".json")
    torch.save({"direction": torch.tensor(result["direction"]), **meta}, pt_path)
    json_path.write_text(json.dumps(result, indent=1))
    return pt_path, json_path


def load_direction(path: Path) -> Dict:
    """Read a direction written by ``save_direction`` (``.pt``): ``{"direction": Tensor [d_model], ...}``."""
    return torch.load(Path(path), weights_only=True)
