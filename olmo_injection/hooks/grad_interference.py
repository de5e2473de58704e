"""Gradient interference on the task neurons, logged per step: cos(g, g_r), cos(g_t, g_r), cos(g_nt, g_r).

- Task neurons: the ``num_task_neurons`` first-block MLP neurons whose parameters (``olmo_injection.neurons``)
  have the largest task-loss gradient norm, chosen at ``selection_step`` from the weights of that step, or read
  from ``neurons_file``. They are saved to ``<save_folder>/task_neurons/<task>.json``, and a resumed run reads
  them back from there, so one run keeps one set of neurons.
- Reference direction g_r: the gradient of the mean LABEL loss over the task's instances (``reference_split``;
  all 10,000 in the paper), restricted to the task neurons, recomputed every ``reference_interval`` steps at
  that step's weights (and at the first logged step after a resume).
- The training batch's gradient on those neurons, split by token position into the task's injected tokens (g_t)
  and all others (g_nt), captured in the training step's own backward pass (``NeuronGradCapture``), averaged
  over ranks as DDP/FSDP average gradients: g = g_t + g_nt is the gradient the optimizer sees for those rows,
  before clipping. Tokens of other injected tasks count as non-task tokens.

Keys (``olmo_injection.metric_names``): ``grad/cos_g_ref``, ``grad/cos_t_ref`` (only on steps with task
tokens: it is undefined otherwise), ``grad/cos_nt_ref``, ``grad/norm_g``, ``grad/norm_t``, ``grad/norm_nt``
and ``grad/injected`` (1.0 if the step's global batch held an instance of the task, else 0.0). All ranks
return the same values. Works with ``compile`` (the blocks under ``torch.compile``) except ``fullgraph``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import torch
from olmo.config import DistributedStrategy
from olmo.torch_util import get_global_rank, get_world_size

from .. import metric_names as mn
from ..grad_decomposition import (
    NeuronGradCapture,
    NeuronGradients,
    all_reduce_sum_,
    interference_metrics,
    reference_instances,
    select_task_neurons,
    task_positions,
    task_reference_gradient,
)
from ..neurons import TaskNeurons, first_mlp_block, load_task_neurons, num_neurons, save_task_neurons
from .base import Batch, Metrics, TrainingHook
from .grad_interference_config import GradInterferenceConfig

if TYPE_CHECKING:
    from ..tasks import Task
    from ..trainer import InjectionTrainer

log = logging.getLogger(__name__)

TASK_NEURONS_DIR = "task_neurons"


def task_neurons_path(save_folder: str, task_name: str) -> Path:
    """Where a run keeps its task neurons: ``<save_folder>/task_neurons/<task>.json``."""
    return Path(save_folder) / TASK_NEURONS_DIR / f"{task_name}.json"


class GradInterferenceHook(TrainingHook):
    """See the module docstring. ``tasks`` are the run's tasks in ``injection.tasks`` order."""

    def __init__(self, cfg: GradInterferenceConfig, tasks: Sequence["Task"]):
        names = [task.name for task in tasks]
        cfg.validate(names)
        self.cfg = cfg
        self.task_index = cfg.task_index(names)
        self.task = tasks[self.task_index]
        self.instances = reference_instances(self.task, cfg.reference_split)
        self.neurons: Optional[torch.Tensor] = None
        self.reference: Optional[torch.Tensor] = None
        self.reference_step: Optional[int] = None
        self._capture: Optional[NeuronGradCapture] = None
        self._num_task_tokens: Optional[torch.Tensor] = None

    def on_train_start(self, trainer: "InjectionTrainer") -> None:
        if trainer.cfg.compile is not None and trainer.cfg.compile.fullgraph:
            raise ValueError(
                "grad_interference.enabled=True with compile.fullgraph=True: the capture's hooks on the first "
                "block's MLP run outside the compiled graph (a graph break each), which fullgraph forbids; set "
                "compile.fullgraph=false or disable grad_interference"
            )
        saved = task_neurons_path(trainer.cfg.save_folder, self.task.name)
        source = self.cfg.neurons_file or (str(saved) if saved.is_file() else None)
        if source is not None:
            chosen = load_task_neurons(source)
            total = num_neurons(first_mlp_block(trainer.model))
            if chosen.num_neurons_in_block != total:
                raise ValueError(
                    f"task-neuron file {source!r}: chosen in a block of {chosen.num_neurons_in_block} neurons; "
                    f"this model's first block has {total} (grad_interference.neurons_file, or the run's own file)"
                )
            self.neurons = chosen.ids()
            log.info("task neurons for %r read from %s: %s", self.task.name, source, chosen.neurons)
            if self.cfg.neurons_file is not None:
                self._save(trainer, chosen)

    def pre_step(self, trainer: "InjectionTrainer", batch: Batch) -> None:
        step = trainer.global_step
        if self.neurons is None and step >= self.cfg.selection_step:
            self._select(trainer, step)
        if self.neurons is None or step % self.cfg.log_interval != 0 or not trainer.should_log_this_step():
            return
        if self.reference_step is None or step - self.reference_step >= self.cfg.reference_interval:
            self.reference = task_reference_gradient(
                reference_model(trainer), self.instances, self.neurons, batch_size=self.cfg.reference_batch_size,
                autocast_dtype=training_autocast_dtype(trainer),
            )  # fmt: skip
            self.reference_step = step
        mask = task_positions(batch, self.task_index)
        self._num_task_tokens = mask.sum().to(torch.float32)
        self._capture = NeuronGradCapture(first_mlp_block(trainer.model), self.neurons).__enter__()
        self._capture.add_task_mask(mask)

    def post_step(self, trainer: "InjectionTrainer", batch: Batch) -> Metrics:
        if self._capture is None:
            return {}
        capture, self._capture = self._capture, None
        try:
            grads = capture.gradients()
        finally:
            capture.__exit__(None, None, None)
        assert self.reference is not None and self._num_task_tokens is not None
        # One collective: both parts and the task-token count, summed over ranks.
        device = grads.task.device
        flat = torch.cat([grads.task.flatten(), grads.non_task.flatten(), self._num_task_tokens.to(device)[None]])
        flat = all_reduce_sum_(flat)
        world_size = get_world_size()
        size = grads.task.numel()
        averaged = NeuronGradients(
            task=flat[:size].view_as(grads.task) / world_size,
            non_task=flat[size : 2 * size].view_as(grads.task) / world_size,
        )
        metrics = interference_metrics(averaged, self.reference)
        metrics = {key: value for key, value in metrics.items() if not math.isnan(value)}  # cos_t without task tokens
        metrics[mn.GRAD_INJECTED] = float(flat[-1] > 0)
        return metrics

    def close(self, trainer: "InjectionTrainer") -> None:
        if self._capture is not None:  # the step raised between pre_step and post_step
            self._capture.__exit__(None, None, None)
            self._capture = None

    def _select(self, trainer: "InjectionTrainer", step: int) -> None:
        ids, norms, reference = select_task_neurons(
            reference_model(trainer),
            self.instances,
            self.cfg.num_task_neurons,
            batch_size=self.cfg.reference_batch_size,
            autocast_dtype=training_autocast_dtype(trainer),
        )
        self.neurons, self.reference, self.reference_step = ids, reference, step
        chosen = TaskNeurons(
            task=self.task.name,
            neurons=ids.tolist(),
            gradient_norms=norms.tolist(),
            num_neurons_in_block=num_neurons(first_mlp_block(trainer.model)),
            selected_at_step=step,
            source=str(trainer.cfg.save_folder),
        )
        log.info("task neurons for %r chosen at step %d: %s", self.task.name, step, chosen.neurons)
        self._save(trainer, chosen)

    def _save(self, trainer: "InjectionTrainer", chosen: TaskNeurons) -> None:
        if get_global_rank() == 0:  # every rank holds the same neurons (g_r is reduced over ranks)
            save_task_neurons(chosen, task_neurons_path(trainer.cfg.save_folder, self.task.name))


def reference_model(trainer) -> torch.nn.Module:
    """The module task reference gradients are taken through: under DDP the bare module, so DDP's reducer never
    sees a backward pass it did not start; under FSDP the wrapper, which gathers the sharded parameters for the
    forward pass and needs its own backward hooks (tests/test_grad_decomposition_fsdp.py, and tests/gpu)."""
    if trainer.cfg.distributed_strategy == DistributedStrategy.fsdp:
        return trainer.dist_model
    return trainer.model


def training_autocast_dtype(trainer) -> Optional[torch.dtype]:
    """The dtype OLMo autocasts the training forward to: ``autocast_precision`` on CUDA, none elsewhere (OLMo
    enters ``torch.autocast("cuda", ...)``)."""
    return trainer.cfg.autocast_precision if trainer.device.type == "cuda" else None
