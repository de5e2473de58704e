"""Checkpoints saved by OLMo's own checkpointers load back and convert to HF with the same logits."""

from __future__ import annotations

import pytest
import torch
from olmo.checkpoint import FullCheckpointer, TorchNewStyleShardedCheckpointer
from olmo.model import OLMo
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.nn.parallel import DistributedDataParallel as DDP

from analysis.checkpoint_loading import checkpoint_step, find_checkpoints, load_checkpoint
from analysis.hf_conversion import assert_same_logits, convert_to_hf, hf_config

from planted_analysis_models import tiny_model_config


def _save(cfg, wrapper, checkpointer_class, name):
    torch.manual_seed(0)
    model = OLMo(cfg.model)
    wrapped = wrapper(model)
    optim = torch.optim.AdamW(wrapped.parameters(), lr=1e-3)
    checkpointer_class(cfg).save_checkpoint(f"{cfg.save_folder}/{name}", wrapped, optim, {"global_step": 3})
    return model


@pytest.mark.parametrize(
    "wrapper, checkpointer_class, name",
    [
        (lambda m: DDP(m), FullCheckpointer, "step3-unsharded"),
        (lambda m: FSDP(m, device_id=torch.device("cpu"), use_orig_params=True), TorchNewStyleShardedCheckpointer, "step3"),
    ],
    ids=["unsharded", "sharded"],
)
def test_saved_checkpoint_restores_and_converts(single_process_group, tiny_train_config, wrapper, checkpointer_class, name):
    original = _save(tiny_train_config, wrapper, checkpointer_class, name)
    (path,) = find_checkpoints(tiny_train_config.save_folder)
    loaded = load_checkpoint(path)
    assert loaded.step == 3
    with torch.no_grad():
        for key, value in original.state_dict().items():
            assert torch.equal(loaded.model.state_dict()[key], value), key
    ids = torch.randint(0, 120, (3, 12), generator=torch.Generator().manual_seed(0))
    hf = convert_to_hf(loaded.model)
    assert assert_same_logits(loaded.model, hf, ids) < 1e-4


def test_logit_check_raises_on_a_wrong_mapping():
    torch.manual_seed(0)
    model = OLMo(tiny_model_config()).eval()
    hf = convert_to_hf(model)
    with torch.no_grad():  # swapping SwiGLU's halves is the mistake the check exists for
        up, gate = hf.model.layers[0].mlp.up_proj.weight.clone(), hf.model.layers[0].mlp.gate_proj.weight.clone()
        hf.model.layers[0].mlp.up_proj.weight.copy_(gate)
        hf.model.layers[0].mlp.gate_proj.weight.copy_(up)
    with pytest.raises(RuntimeError, match="disagrees"):
        assert_same_logits(model, hf, torch.randint(0, 120, (2, 8)))


def test_unconvertible_option_is_named():

    with pytest.raises(ValueError, match="layer_norm_with_affine"):
        hf_config(tiny_model_config(layer_norm_with_affine=True))


def test_find_checkpoints_prefers_unsharded_and_sorts(tmp_path):
    for name in ("step20", "step3", "step20-unsharded", "latest", "step7-tmp"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text("")
    assert [p.name for p in find_checkpoints(tmp_path)] == ["step3", "step20-unsharded"]
    assert checkpoint_step(tmp_path / "step20-unsharded") == 20
    with pytest.raises(ValueError, match="no checkpoint"):
        find_checkpoints(tmp_path / "step7-tmp")
