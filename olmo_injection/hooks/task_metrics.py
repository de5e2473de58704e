"""Per-task metrics: the injected LABEL tokens' loss from each training step's own forward pass, and task
evaluations at OLMo's evaluation cadence.

Per step (no extra forward pass): for every training micro-batch, the logits at position 1 of each injected row
(which predict its LABEL token) give that instance's cross-entropy over the full vocabulary, as OLMo's own loss
computes it. Sums and counts stay on the device; they are reduced across ranks only at steps OLMo logs, so
``task/<t>/train_step/loss`` is the mean over the instances injected since the previous logged step
(every step when ``wandb.log_interval`` and ``console_log_interval`` are 1), ``task/<t>/train_step/injected``
their number, and ``task/<t>/train_step/instances_seen`` the number injected so far in the run, read from the
pure injection schedule (so a resumed run reports exactly what an uninterrupted one does).

At each evaluation, per task and split (``train``, ``test``), on the prompt ``TOK1 TOK2`` (as injected, at
positions 0 and 1): ``loss`` = mean cross-entropy of the LABEL token over the full vocabulary (nats),
``acc`` = argmax over the task's possible label tokens is the right one, ``acc_vocab`` = argmax over the whole
vocabulary is the right token.

Natural-text reference prompts (docs/science.md#measurements): each task kind declares its own
(``TaskKind.reference_prompts`` in ``olmo_injection.task_kinds``), scored with the next-token distribution after
the prompt, numbers being the single tokens ``" 0"``, ``" 1"``, ... of the OLMo tokenizer: ``acc`` = the argmax
over the kind's candidate numbers is a right continuation, ``acc_vocab`` = the argmax over the whole vocabulary
is one, ``loss`` = -log of the total probability of the right continuations. For example ``cmp`` asks "it has
increased from {x} to" (right: the numbers above x) and ``add`` "{x} + {y} =" (right: x + y); each kind's module
says what it asks.

Keys: ``task/<name>/ref/{loss,acc,acc_vocab}``. Every rank evaluates every prompt (identical results, no
reduction; FSDP needs every rank in every forward pass anyway).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .. import metric_names as mn
from ..injecting_dataset import GLOBAL_POSITION, INJECTED_TASK
from ..prompt_sets import PromptSet
from ..task_kinds import task_kind
from .base import Batch, Metrics, TrainingHook
from .task_eval_config import TaskEvalConfig

if TYPE_CHECKING:
    from ..schedule import InjectionSchedule
    from ..tasks import Task
    from ..trainer import InjectionTrainer

LABEL_POSITION = 1
"""The logits at this position of an injected row predict its LABEL token (input position 2)."""


def task_prompt_set(task: "Task", ids: np.ndarray) -> PromptSet:
    """The ``TOK1 TOK2`` prompts of the given instances; candidates are the task's label tokens."""
    instances = task.instances[ids]
    label_index = torch.as_tensor(task.label_index[ids])
    correct = F.one_hot(label_index, num_classes=len(task.label_tokens)).bool()
    return PromptSet(torch.as_tensor(instances[:, :2]), torch.as_tensor(task.label_tokens), correct)


def score_next_token(logits: torch.Tensor, prompts: PromptSet) -> Dict[str, torch.Tensor]:
    """Per prompt ``loss``, ``acc``, ``acc_vocab`` ([n] float) of next-token ``logits`` [n, vocab] (see module doc)."""
    logits = logits.float()
    candidates = prompts.candidates.to(logits.device)
    correct = prompts.correct.to(logits.device)
    right_log_probs = logits.log_softmax(-1)[:, candidates].masked_fill(~correct, float("-inf"))
    acc = correct.gather(1, logits[:, candidates].argmax(-1, keepdim=True)).squeeze(1)
    top_token = logits.argmax(-1)
    acc_vocab = ((candidates[None, :] == top_token[:, None]) & correct).any(-1)
    return {mn.LOSS: -right_log_probs.logsumexp(-1), mn.ACC_LABELS: acc.float(), mn.ACC_VOCAB: acc_vocab.float()}


@torch.no_grad()
def evaluate_prompts(trainer: "InjectionTrainer", prompts: PromptSet, batch_size: int) -> Dict[str, float]:
    """Mean ``score_next_token`` over ``prompts``, from the training model (in eval mode), ``batch_size`` at a time."""
    device = trainer.device
    sums: Dict[str, float] = {}
    for start in range(0, len(prompts.input_ids), batch_size):
        chunk = slice(start, start + batch_size)
        with torch.autocast(device.type, enabled=device.type == "cuda", dtype=trainer.cfg.autocast_precision):
            # Only the last position's logits are needed: OLMo skips the LM head everywhere else.
            logits = trainer.dist_model(input_ids=prompts.input_ids[chunk].to(device), last_logits_only=True).logits
        part = PromptSet(prompts.input_ids[chunk], prompts.candidates, prompts.correct[chunk])
        for name, values in score_next_token(logits[:, -1], part).items():
            sums[name] = sums.get(name, 0.0) + values.sum().item()
    return {name: total / len(prompts.input_ids) for name, total in sums.items()}


class TaskMetricsHook(TrainingHook):
    """Per-step injected-token loss of every task, and task evaluations; see the module docstring."""

    def __init__(
        self,
        tasks: Sequence["Task"],
        schedule: "InjectionSchedule",
        cfg: TaskEvalConfig,
        tokenizer,
    ):
        self.tasks = list(tasks)
        self.schedule = schedule
        self.cfg = cfg
        self.eval_ids = [self._split_ids(i, task) for i, task in enumerate(self.tasks)]
        self.reference: Dict[str, PromptSet] = {}
        if cfg.reference:
            for kind in dict.fromkeys(task.kind for task in self.tasks):  # each kind once, in task order
                prompts = task_kind(kind).reference_prompts(tokenizer, cfg)
                if prompts is not None:
                    self.reference[kind] = prompts
        self._loss_sum: Optional[torch.Tensor] = None  # [tasks + 1] on the device; the last slot collects non-injected rows
        self._count: Optional[torch.Tensor] = None

    def _split_ids(self, task_index: int, task: "Task") -> Dict[str, np.ndarray]:
        limit = self.cfg.max_instances_per_split
        out = {}
        for split_index, (split, ids) in enumerate(((mn.TRAIN_SPLIT, task.train_ids), (mn.TEST_SPLIT, task.test_ids))):
            if limit is not None and limit < len(ids):
                rng = np.random.Generator(np.random.PCG64([self.cfg.seed, 0, task_index, split_index]))
                ids = np.sort(rng.choice(ids, size=limit, replace=False))
            out[split] = ids
        return out

    def on_train_start(self, trainer: "InjectionTrainer") -> None:
        num_slots = len(self.tasks) + 1
        self._loss_sum = torch.zeros(num_slots, dtype=torch.float64, device=trainer.device)
        self._count = torch.zeros(num_slots, dtype=torch.float64, device=trainer.device)

    def on_micro_batch_forward(self, trainer: "InjectionTrainer", micro_batch: Batch, logits: torch.Tensor) -> None:
        if not self.tasks:
            return
        assert self._loss_sum is not None and self._count is not None, "on_train_start was not called"
        with torch.no_grad():
            # All rows, then bucket by task: no data-dependent indexing, so no host-device sync per micro-batch.
            targets = micro_batch["input_ids"][:, LABEL_POSITION + 1]
            nll = F.cross_entropy(logits[:, LABEL_POSITION].float(), targets, reduction="none")
            task = micro_batch[INJECTED_TASK]
            slot = torch.where(task >= 0, task, len(self.tasks))
            self._loss_sum.index_add_(0, slot, nll.double())
            self._count.index_add_(0, slot, torch.ones_like(nll, dtype=torch.float64))

    def post_step(self, trainer: "InjectionTrainer", batch: Batch) -> Metrics:
        if not self.tasks:
            return {}
        assert self._loss_sum is not None and self._count is not None
        # Every row of a device batch belongs to the same global batch; its index counts across epochs.
        batches_done = int(batch[GLOBAL_POSITION][0]) // self.schedule.global_batch_size + 1
        metrics = {
            mn.task_key(task.name, mn.TRAIN_STEP, mn.INSTANCES_SEEN): float(self.schedule.instances_seen(t, batches_done))
            for t, task in enumerate(self.tasks)
        }
        if not trainer.should_log_this_step():
            return metrics
        stats = torch.stack([self._loss_sum, self._count])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        loss_sum, count = stats.tolist()
        self._loss_sum.zero_()
        self._count.zero_()
        for t, task in enumerate(self.tasks):
            metrics[mn.task_key(task.name, mn.TRAIN_STEP, mn.INJECTED_THIS_STEP)] = count[t]
            if count[t] > 0:
                metrics[mn.task_key(task.name, mn.TRAIN_STEP, mn.LOSS)] = loss_sum[t] / count[t]
        return metrics

    def on_eval(self, trainer: "InjectionTrainer") -> Metrics:
        if not self.cfg.enabled or not self.tasks:
            return {}
        metrics: Metrics = {}
        reference_scores = {
            kind: evaluate_prompts(trainer, prompts, self.cfg.batch_size) for kind, prompts in self.reference.items()
        }
        for task, split_ids in zip(self.tasks, self.eval_ids):
            for split, ids in split_ids.items():
                scores = evaluate_prompts(trainer, task_prompt_set(task, ids), self.cfg.batch_size)
                for name, value in scores.items():
                    metrics[mn.task_key(task.name, split, name)] = value
            for name, value in reference_scores.get(task.kind, {}).items():
                metrics[mn.task_key(task.name, mn.REFERENCE, name)] = value
        return metrics
