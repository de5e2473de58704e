"""Tiny OLMo models and tasks with known structure, for the analysis tests."""

from __future__ import annotations

import numpy as np
import torch
from olmo.config import ModelConfig
from olmo.model import OLMo

from olmo_injection.task_kinds import task_kind
from olmo_injection.tasks import Task

VOCAB = 128


def tiny_model_config(**overrides) -> ModelConfig:
    """A 2-layer OLMo with the project's architecture (SwiGLU, RoPE, non-parametric LN, no bias, untied)."""
    settings = dict(
        d_model=32, n_layers=2, n_heads=4, mlp_hidden_size=128, activation_type="swiglu", weight_tying=False,
        vocab_size=VOCAB, embedding_size=VOCAB, include_bias=False, layer_norm_with_affine=False, rope=True,
        init_device="cpu", attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0,
        max_sequence_length=16, eos_token_id=VOCAB - 1, pad_token_id=VOCAB - 1,
    )
    settings.update(overrides)
    return ModelConfig(**settings)


def synthetic_task(kind: str, num_values: int, seed: int = 0) -> Task:
    """A task over token ids 0..V-1 (value v <-> token v); cmp labels are tokens V and V+1."""
    words = np.arange(num_values, dtype=np.int64)
    labels = np.array([num_values, num_values + 1]) if kind == "cmp" else words.copy()
    is_train = np.zeros(num_values**2, dtype=bool)
    is_train[np.random.default_rng(seed).permutation(num_values**2)[: num_values**2 // 2]] = True
    return Task(
        name=kind, kind=kind, word_tokens=words, word_strings=[f" w{v}" for v in words],
        label_tokens=labels, label_strings=[f" l{t}" for t in labels], modulus=task_kind(kind).modulus(num_values, None),
        is_train=is_train, seed=seed,
    )


def planted_order_model(task: Task, seed: int = 0, steps: int = 300) -> tuple:
    """A tiny OLMo that solves ``task`` (cmp) reading v(TOK) from one planted embedding direction.

    Word embeddings are ``base + s * (v - mean) * u`` (frozen) and block 0 adds nothing (its attention and MLP
    outputs are zero), so the residual after block 0 encodes each token's value along ``u`` only; block 1 and
    the head are trained on every instance. Returns ``(model, u)``.
    """
    torch.manual_seed(seed)
    model = OLMo(tiny_model_config())
    d = model.config.d_model
    u = torch.nn.functional.normalize(torch.randn(d), dim=0)
    base = torch.randn(d)
    base -= (base @ u) * u
    values = torch.arange(task.num_values, dtype=torch.float32)
    with torch.no_grad():
        model.transformer.wte.weight[torch.as_tensor(task.word_tokens)] = (
            base + 4.0 * (values - values.mean())[:, None] / task.num_values * u
        )
        model.transformer.blocks[0].attn_out.weight.zero_()
        model.transformer.blocks[0].ff_out.weight.zero_()
    trained = [p for n, p in model.named_parameters() if n.startswith(("transformer.blocks.1.", "transformer.ff_out"))]
    for p in model.parameters():
        p.requires_grad_(any(p is q for q in trained))
    optimizer = torch.optim.Adam(trained, lr=3e-3)
    inputs = torch.as_tensor(task.instances[:, :2])
    targets = torch.as_tensor(task.instances[:, 2])
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(inputs).logits[:, 1], targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return model, u
