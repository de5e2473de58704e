"""Convert an OLMo 0.6.0 model, in process, to Hugging Face ``transformers``' ``OlmoForCausalLM``.

Weight mapping (docs/olmo_0_6_0.md#model):

* ``att_proj`` is q, k, v fused along the output dimension, in that order -> ``q_proj``, ``k_proj``, ``v_proj``;
* ``ff_proj`` is SwiGLU's ``[x, gate]`` halves in that order (OLMo's activation computes ``silu(gate) * x``)
  -> ``up_proj`` (first half) and ``gate_proj`` (second half), since HF computes ``silu(gate_proj) * up_proj``;
* ``attn_out`` -> ``o_proj``, block ``ff_out`` -> ``down_proj``, ``wte`` -> ``embed_tokens``, the model's
  ``ff_out`` (untied) -> ``lm_head``. Layer norms are non-parametric on both sides, so carry no weights.

``convert_to_hf`` refuses (ValueError) model options HF's OLMo cannot express, and ``assert_same_logits``
is the check that a conversion is faithful.
"""

from __future__ import annotations

import torch
from olmo.config import ActivationType, BlockType, LayerNormType, ModelConfig
from olmo.model import OLMo
from transformers import OlmoConfig, OlmoForCausalLM

# HF's OlmoLayerNorm hard-codes this epsilon.
_HF_LAYER_NORM_EPS = 1e-5


def _check_convertible(cfg: ModelConfig) -> None:
    """ValueError naming the first model option that HF's ``OlmoForCausalLM`` does not implement."""
    required = {
        "rope": (cfg.rope, True),
        "alibi": (cfg.alibi, False),
        "activation_type": (cfg.activation_type, ActivationType.swiglu),
        "block_type": (cfg.block_type, BlockType.sequential),
        "layer_norm_type": (cfg.layer_norm_type, LayerNormType.default),
        "layer_norm_with_affine": (cfg.layer_norm_with_affine, False),
        "layer_norm_eps": (cfg.layer_norm_eps, _HF_LAYER_NORM_EPS),
        "attention_layer_norm": (cfg.attention_layer_norm, False),
        "include_bias": (cfg.include_bias, False),
        "norm_after": (cfg.norm_after, False),
        "scale_logits": (cfg.scale_logits, False),
        "embedding_layer_norm": (cfg.embedding_layer_norm, False),
    }
    for name, (value, allowed) in required.items():
        if value != allowed:
            raise ValueError(f"model.{name}={value!r} cannot be converted to HF OlmoForCausalLM (needs {allowed!r})")


def hf_config(cfg: ModelConfig) -> OlmoConfig:
    """The ``OlmoConfig`` of the same architecture; the HF vocabulary is OLMo's (padded) ``embedding_size``."""
    _check_convertible(cfg)
    hidden = cfg.mlp_hidden_size if cfg.mlp_hidden_size is not None else cfg.mlp_ratio * cfg.d_model
    return OlmoConfig(
        vocab_size=cfg.embedding_size or cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=hidden // 2,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.effective_n_kv_heads,
        max_position_embeddings=cfg.max_sequence_length,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
        attention_bias=False,
        attention_dropout=0.0,
        clip_qkv=cfg.clip_qkv,
        pad_token_id=cfg.pad_token_id,
        eos_token_id=cfg.eos_token_id,
        tie_word_embeddings=cfg.weight_tying,
        hidden_act="silu",
    )


def convert_to_hf(model: OLMo) -> OlmoForCausalLM:
    """An ``OlmoForCausalLM`` (eval mode, float32, eager attention) with ``model``'s weights copied in."""
    cfg = model.config
    hf = OlmoForCausalLM(hf_config(cfg))
    hf.config._attn_implementation = "eager"
    olmo_state = {k: v.detach().float() for k, v in model.state_dict().items()}
    q_dim = cfg.d_model
    kv_dim = cfg.effective_n_kv_heads * (cfg.d_model // cfg.n_heads)
    state = {"model.embed_tokens.weight": olmo_state["transformer.wte.weight"]}
    for i in range(cfg.n_layers):
        src, dst = f"transformer.blocks.{i}.", f"model.layers.{i}."
        q, k, v = olmo_state[src + "att_proj.weight"].split([q_dim, kv_dim, kv_dim], dim=0)
        up, gate = olmo_state[src + "ff_proj.weight"].chunk(2, dim=0)
        state.update(
            {
                dst + "self_attn.q_proj.weight": q,
                dst + "self_attn.k_proj.weight": k,
                dst + "self_attn.v_proj.weight": v,
                dst + "self_attn.o_proj.weight": olmo_state[src + "attn_out.weight"],
                dst + "mlp.up_proj.weight": up,
                dst + "mlp.gate_proj.weight": gate,
                dst + "mlp.down_proj.weight": olmo_state[src + "ff_out.weight"],
            }
        )
    if cfg.weight_tying:
        state["lm_head.weight"] = olmo_state["transformer.wte.weight"]
    else:
        state["lm_head.weight"] = olmo_state["transformer.ff_out.weight"]
    missing, unexpected = hf.load_state_dict(state, strict=False)
    # Rotary inverse frequencies are non-persistent buffers; every weight must have been set.
    assert not unexpected and not [m for m in missing if not m.endswith("inv_freq")], (missing, unexpected)
    return hf.float().eval()


@torch.no_grad()
def max_logit_difference(model: OLMo, hf_model: OlmoForCausalLM, input_ids: torch.Tensor) -> float:
    """Largest absolute difference between the two models' logits on ``input_ids`` ([batch, seq] token ids)."""
    olmo_logits = model(input_ids).logits.float()
    hf_logits = hf_model(input_ids=input_ids).logits.float()
    return float((olmo_logits - hf_logits).abs().max())


def assert_same_logits(model: OLMo, hf_model: OlmoForCausalLM, input_ids: torch.Tensor, atol: float = 1e-4) -> float:
    """Raise RuntimeError when the converted model's logits differ from OLMo's by more than ``atol``.

    Returns the largest absolute difference seen.
    """
    difference = max_logit_difference(model, hf_model, input_ids)
    if not difference <= atol:
        raise RuntimeError(f"converted HF model disagrees with OLMo: max |logit difference| {difference:.3g} > {atol}")
    return difference
