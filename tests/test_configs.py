"""Every YAML in configs/ loads, every sweep expands to valid runs, and the model ladder has the paper's sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from olmo.config import ModelConfig
from olmo.model import OLMo
from omegaconf import OmegaConf

from olmo_injection.config import InjectionTrainConfig
from olmo_injection.model_ladder import MODEL_LADDER
from olmo_injection.sweep import compose, expand_sweep, load_sweep

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE = CONFIGS / "base" / "olmo_7b_0724.yaml"
DOLMA = CONFIGS / "base" / "dolma_v1_7.yaml"
ALL_YAML = sorted(CONFIGS.rglob("*.yaml"))
SWEEPS = [p for p in ALL_YAML if "sweep" in (OmegaConf.load(p) or {})]

LADDER = {size.name: size for size in MODEL_LADDER}


@pytest.mark.parametrize("path", [p for p in ALL_YAML if p not in SWEEPS], ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_file_loads_through_the_strict_schema(path):
    """Layers (base, data list, model sizes) and whole configs alike: no unknown keys, right types."""
    InjectionTrainConfig.load(path, validate_paths=False)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_sweep_expands_to_valid_runs(path, tmp_path, monkeypatch):
    monkeypatch.delenv("DOLMA_ROOT", raising=False)  # the public bucket: nothing local to check
    runs = expand_sweep(load_sweep(path), tmp_path)
    assert runs and len({r.name for r in runs}) == len(runs)


def test_model_files_hold_only_the_size():
    assert sorted(p.stem for p in (CONFIGS / "models").glob("*.yaml")) == sorted(LADDER)
    for path in (CONFIGS / "models").glob("*.yaml"):
        raw = OmegaConf.to_container(OmegaConf.load(path))
        assert list(raw) == ["model"] and set(raw["model"]) == {"d_model", "n_layers", "n_heads", "mlp_hidden_size"}


@pytest.mark.parametrize("size", list(LADDER))
def test_model_ladder_has_the_papers_exact_parameter_counts(size):
    params, layers, d_model, hidden, heads = (getattr(LADDER[size], f) for f in (
        "parameters", "n_layers", "d_model", "mlp_hidden_size", "n_heads"))
    cfg = ModelConfig.new(**compose([BASE, CONFIGS / "models" / f"{size}.yaml"])["model"])
    assert (cfg.n_layers, cfg.d_model, cfg.mlp_hidden_size, cfg.n_heads) == (layers, d_model, hidden, heads)
    assert cfg.init_device == "meta"  # the sizes are built without memory, as FSDP does
    model = OLMo(cfg)
    assert sum(p.numel() for p in model.parameters()) == params == model.num_params()
    block = model.transformer.blocks[0]
    # OLMo's mlp_hidden_size is ff_proj's output, both SwiGLU halves; the block has hidden / 2 neurons.
    assert block.ff_proj.out_features == hidden and block.ff_out.in_features == hidden // 2
    assert model.transformer.wte.weight.shape == (50_304, d_model) and not cfg.weight_tying
    assert next(model.parameters()).device == torch.device("meta")


def test_base_config_keeps_olmo_7b_0724_training_settings():
    cfg = InjectionTrainConfig.new(**compose([BASE]))
    assert (cfg.seed, cfg.data.seed, cfg.global_train_batch_size, cfg.precision) == (6198, 6198, 1024, "amp_bf16")
    opt, sched = cfg.optimizer, cfg.scheduler
    assert (opt.name, opt.learning_rate, tuple(opt.betas), opt.eps, opt.weight_decay) == ("adamw", 3e-4, (0.9, 0.95), 1e-5, 0.1)
    assert (sched.name, sched.units, sched.t_warmup, sched.t_max, sched.alpha_f) == (
        "cosine_with_warmup", "tokens", 2_500 * 1024 * 4096, 3e12, 0.1)
    assert (cfg.max_grad_norm, sched.grad_clip_warmup_steps, sched.grad_clip_warmup_factor) == (1.0, 500 * 1024 * 4096, 5)
    assert (cfg.fsdp.wrapping_strategy, cfg.fsdp.precision, cfg.distributed_strategy) == ("by_block_and_size", "mixed", "fsdp")
    assert (cfg.model.vocab_size, cfg.model.embedding_size, cfg.model.eos_token_id, cfg.model.pad_token_id) == (
        50280, 50304, 50279, 1)
    assert cfg.tokenizer.identifier == "tokenizers/allenai_gpt-neox-olmo-dolma-v1_5.json"
    assert cfg.try_load_latest_save and cfg.save_interval == 1000


def test_dolma_list_has_the_1033_token_files_under_one_root(monkeypatch):
    monkeypatch.setenv("DOLMA_ROOT", "/mirror")
    paths = compose([DOLMA])["data"]["paths"]
    assert len(paths) == 1033
    # As in the official list, the two Wikipedia files appear twice (up-sampled); every other file once.
    repeated = sorted({p for p in paths if paths.count(p) > 1})
    assert len(repeated) == 2 and all("/wiki/" in p and paths.count(p) == 2 for p in repeated)
    assert all(p.startswith("/mirror/preprocessed/") and p.endswith(".npy") for p in paths)
    assert paths[0].endswith("/books/gpt-neox-olmo-dolma-v1_5/part-0-00000.npy")
