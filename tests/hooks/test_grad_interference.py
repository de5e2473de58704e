"""The gradient-interference hook inside the real ``InjectionTrainer`` (OLMo's loop, DDP over one gloo process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from olmo_injection import metric_names as mn
from olmo_injection.grad_decomposition import cosine
from olmo_injection.hooks.base import TrainingHook
from olmo_injection.grad_decomposition import task_positions
from olmo_injection.hooks.grad_interference import GradInterferenceHook, task_neurons_path
from olmo_injection.hooks.grad_interference_config import GradInterferenceConfig
from olmo_injection.neurons import TaskNeurons, first_mlp_block, load_task_neurons, neuron_slices, save_task_neurons

TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
GRAD_KEYS = (mn.GRAD_COS_G_REF, mn.GRAD_COS_NT_REF, mn.GRAD_NORM_G, mn.GRAD_NORM_T, mn.GRAD_NORM_NT, mn.GRAD_INJECTED)


class OptimizerGradientProbe(TrainingHook):
    """Records, after each step, the neuron rows of the gradient the optimizer used (clipping is off)."""

    def __init__(self, interference: GradInterferenceHook):
        self.interference = interference
        self.steps = []

    def post_step(self, trainer, batch):
        block = first_mlp_block(trainer.model)
        record = {"step": trainer.global_step, "metrics": dict(trainer.step_metrics)}
        if self.interference.neurons is not None:
            neurons = self.interference.neurons
            record["grad"] = neuron_slices(block.ff_proj.weight.grad, block.ff_out.weight.grad, neurons)
            record["reference"] = self.interference.reference.clone()
            record["injected"] = bool(task_positions(batch, self.interference.task_index).any())
        self.steps.append(record)
        return {}


def run_tiny_training(save_folder: Path, grad_cfg: GradInterferenceConfig, steps: int = 5):
    """Train configs/tiny.yaml for ``steps`` steps with the hook and the probe; returns (hook, probe records)."""
    from olmo_injection.olmo_patches import apply_olmo_patches
    from olmo_injection.tasks import build_tasks
    from olmo_injection.train import build_trainer, fill_runtime_fields, init_distributed, load_config

    overrides = [
        f"--save_folder={save_folder}", f"--max_duration={steps}", "--max_grad_norm=null", "--wandb=null",
        "--evaluators=[]", "--eval_interval=1000", "--save_interval=1000", "--save_interval_unsharded=1000",
        "--console_log_interval=1", "--no_pre_train_checkpoint=true",
    ]  # fmt: skip
    cfg = load_config(str(TINY_CONFIG), overrides)
    cfg.stop_at = steps
    apply_olmo_patches()
    device, created_group = init_distributed()
    try:
        fill_runtime_fields(cfg, world_size=1)
        tasks = build_tasks(cfg)
        trainer = build_trainer(cfg, tasks, device)
        hook = GradInterferenceHook(grad_cfg, tasks)
        probe = OptimizerGradientProbe(hook)
        trainer.hooks = [hook, probe]  # only the hook under test and its probe
        with trainer:
            trainer.fit()
        return hook, probe.steps, cfg
    finally:
        if created_group:
            torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    grad_cfg = GradInterferenceConfig(
        enabled=True, task="add", num_task_neurons=4, selection_step=2, reference_interval=2, reference_split="test",
        reference_batch_size=1024,
    )
    return run_tiny_training(tmp_path_factory.mktemp("grad_run"), grad_cfg)


@pytest.mark.slow  # shares one ~25 s training run (module fixture)
def test_logged_gradient_is_the_optimizer_gradient_of_the_task_neurons(tiny_run):
    hook, steps, _ = tiny_run
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5]
    assert not any(key in steps[0]["metrics"] for key in GRAD_KEYS)  # before selection_step
    for record in steps[1:]:
        metrics, grad = record["metrics"], record["grad"]
        assert metrics[mn.GRAD_NORM_G] == pytest.approx(float(grad.norm()), rel=1e-5)
        assert metrics[mn.GRAD_COS_G_REF] == pytest.approx(cosine(grad, record["reference"]), abs=1e-5)
        assert metrics[mn.GRAD_INJECTED] == float(record["injected"])
        assert (mn.GRAD_COS_T_REF in metrics) == record["injected"] == (metrics[mn.GRAD_NORM_T] > 0)
    assert any(r["injected"] for r in steps[1:]) and not all(r["injected"] for r in steps[1:])


@pytest.mark.slow  # shares one ~25 s training run (module fixture)
def test_reference_is_recomputed_every_interval(tiny_run):
    _, steps, _ = tiny_run
    references = [r["reference"] for r in steps[1:]]  # steps 2..5, interval 2: computed at 2 and 4
    assert torch.equal(references[0], references[1]) and torch.equal(references[2], references[3])
    assert not torch.equal(references[1], references[2])


@pytest.mark.slow  # shares one ~25 s training run (module fixture)
def test_chosen_neurons_are_saved_with_the_run_and_reused_on_resume(tiny_run):
    hook, _, cfg = tiny_run
    saved = load_task_neurons(task_neurons_path(cfg.save_folder, "add"))
    assert saved.neurons == hook.neurons.tolist() and saved.selected_at_step == 2 and len(saved.neurons) == 4
    assert saved.gradient_norms == sorted(saved.gradient_norms, reverse=True)


class _TrainerStub:
    """Only what ``on_train_start`` reads; the training behaviour is covered by the real runs above."""

    def __init__(self, save_folder, model):
        from types import SimpleNamespace

        self.cfg = SimpleNamespace(save_folder=str(save_folder), compile=None)
        self.model = model


def _tiny_task():
    from olmo_injection.tasks import Task

    return Task(
        name="cmp", kind="cmp", word_tokens=np.arange(10, 14), word_strings=[" a", " b", " c", " d"],
        label_tokens=np.array([20, 21]), label_strings=[" t", " f"], modulus=0, is_train=np.arange(16) % 2 == 0, seed=0,
    )  # fmt: skip


def _tiny_model():
    from olmo.config import ModelConfig
    from olmo.model import OLMo

    cfg = ModelConfig(
        d_model=8, n_heads=2, n_layers=1, mlp_hidden_size=16, vocab_size=32, embedding_size=32, include_bias=False,
        layer_norm_with_affine=False, max_sequence_length=8, init_device="cpu",
    )  # fmt: skip
    return OLMo(cfg)


def test_neurons_file_is_used_and_a_file_for_another_width_is_refused(tmp_path):
    chosen = TaskNeurons(task="cmp", neurons=[6, 2], gradient_norms=[1.0, 0.5], num_neurons_in_block=8,
                         selected_at_step=None, source="checkpoint")  # fmt: skip
    save_task_neurons(chosen, tmp_path / "given.json")
    hook = GradInterferenceHook(
        GradInterferenceConfig(enabled=True, neurons_file=str(tmp_path / "given.json")), [_tiny_task()]
    )
    hook.on_train_start(_TrainerStub(tmp_path / "run", _tiny_model()))
    assert hook.neurons.tolist() == [6, 2]
    assert load_task_neurons(task_neurons_path(str(tmp_path / "run"), "cmp")) == chosen  # saved with the run
    save_task_neurons(TaskNeurons(**{**chosen.__dict__, "num_neurons_in_block": 16}), tmp_path / "wide.json")
    wide = GradInterferenceConfig(enabled=True, neurons_file=str(tmp_path / "wide.json"))
    hook = GradInterferenceHook(wide, [_tiny_task()])
    with pytest.raises(ValueError, match="block of 16 neurons; this model's first block has 8"):
        hook.on_train_start(_TrainerStub(tmp_path / "run2", _tiny_model()))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"task": "add"}, r"grad_interference.task='add': not a task; allowed: \['cmp'\]"),
        ({"num_task_neurons": 0}, "grad_interference.num_task_neurons=0: must be an integer >= 1"),
        ({"reference_interval": -1}, "grad_interference.reference_interval=-1"),
        ({"reference_split": "dev"}, r"reference_split='dev': allowed: \['all', 'train', 'test'\]"),
        ({"neurons_file": "/no/such.json"}, "neurons_file='/no/such.json': no such file"),
    ],
)
def test_config_errors_name_field_value_and_allowed(overrides, message):
    cfg = GradInterferenceConfig(enabled=True, **overrides)
    with pytest.raises(ValueError, match=message):
        cfg.validate(["cmp"])
    GradInterferenceConfig(enabled=False, **overrides).validate(["cmp"])  # off: nothing is checked
