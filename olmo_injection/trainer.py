"""``InjectionTrainer``: OLMo's ``Trainer`` with the project's hook list and a stop-on-signal flag.

The training loop stays OLMo's (``Trainer.fit``). The subclass overrides only the methods it must:

- ``fit``: calls ``on_train_start`` first;
- ``train_step``: ``pre_step`` before and ``post_step`` after OLMo's step, merging hook metrics into the step's
  metrics (which OLMo's ``fit`` then sends to the console and to wandb);
- ``model_forward``: ``on_micro_batch_forward`` with each *training* micro-batch's logits (evaluation forward
  passes go through the same method and are not reported);
- ``eval``: ``on_eval`` after OLMo's own evaluators, merged into the evaluation metrics;
- ``check_if_cancelled`` (OLMo asks every ``canceled_check_interval`` steps): a stop requested by a signal
  (``request_stop``) on any rank ends the run there, with a checkpoint, on every rank; then OLMo's own checks
  (time limit, wandb tag). One host-side all-reduce per check, none in the steps between;
- ``trainer_state_dict``: works on a CPU-only torch (see ``olmo_patches.cuda_rng_state_without_cuda``);
- ``save_checkpoint``: first makes the metrics record durable, so a checkpoint never outlives the metrics
  logged before it;
- ``close``: closes the hooks and the metrics record, then OLMo's ``close``.

Every metric dict the run logs also goes to ``metrics_record`` (rank 0, when set): a training step's dict when
the next step starts (OLMo adds its speed, system and learning-rate metrics to the dict after ``train_step``
returns), an evaluation's at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from olmo.config import CheckpointType
from olmo.train import Trainer

from .hooks.base import Batch, Metrics, TrainingHook
from .experiment import checkpoint_space_error
from .metrics_record import MetricsRecord
from .rank_agreement import flag_group, on_any_rank
from .olmo_patches import cuda_rng_state_without_cuda

log = logging.getLogger(__name__)


@dataclass
class InjectionTrainer(Trainer):
    hooks: List[TrainingHook] = field(default_factory=list)
    """Called in list order on every rank; see ``olmo_injection.hooks.base.TrainingHook``."""

    stop_reason: Optional[str] = None
    """Set by ``request_stop`` (a signal handler); the run saves a checkpoint and ends at the next cancel check."""

    step_metrics: Metrics = field(default_factory=dict)
    """Metrics of the step in progress, filled by OLMo and then by each hook's ``post_step`` in order, so a
    later hook (the console progress) can show an earlier hook's values."""

    metrics_record: Optional[MetricsRecord] = None
    """Where every logged metric also goes (set on rank 0 once the trainer state is restored)."""

    flag_group: Optional[dist.ProcessGroup] = None
    """Group for host-side flags (``rank_agreement.flag_group``); set by ``__post_init__`` on every rank."""

    _in_training_forward: bool = field(default=False, init=False, repr=False)
    _unrecorded_step: Optional[Tuple[int, Metrics]] = field(default=None, init=False, repr=False)

    def __post_init__(self):
        super().__post_init__()
        self.flag_group = flag_group()

    def request_stop(self, reason: str) -> None:
        """Ask the run to save a checkpoint and stop at the next cancel check, i.e. after the next step that is a
        multiple of ``canceled_check_interval`` (safe to call from a signal handler)."""
        self.stop_reason = reason

    def fit(self):
        for hook in self.hooks:
            hook.on_train_start(self)
        return super().fit()

    def train_step(self, batch: Batch, reduce_global_loss: bool = True) -> Dict[str, float]:
        self._record_finished_step()
        for hook in self.hooks:
            hook.pre_step(self, batch)
        self._in_training_forward = True
        try:
            metrics = super().train_step(batch, reduce_global_loss=reduce_global_loss)
        finally:
            self._in_training_forward = False
        self.step_metrics = metrics
        for hook in self.hooks:
            metrics.update(hook.post_step(self, batch))
        if reduce_global_loss:  # OLMo logs exactly the steps whose loss it reduces
            self._unrecorded_step = (self.global_step, metrics)
        return metrics

    def _record_finished_step(self) -> None:
        if self._unrecorded_step is not None and self.metrics_record is not None:
            self.metrics_record.write(*self._unrecorded_step)
        self._unrecorded_step = None

    def model_forward(
        self, batch: Dict[str, Any], loss_reduction: str = "mean", compute_z_loss: bool = False
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        ce_loss, z_loss, logits = super().model_forward(
            batch, loss_reduction=loss_reduction, compute_z_loss=compute_z_loss
        )
        if self._in_training_forward:
            for hook in self.hooks:
                hook.on_micro_batch_forward(self, batch, logits)
        return ce_loss, z_loss, logits

    def eval(self) -> Dict[str, Any]:
        metrics = super().eval()
        hook_metrics: Metrics = {}
        for hook in self.hooks:
            hook_metrics.update(hook.on_eval(self))
        if hook_metrics:
            self.log_metrics_to_console("task evaluation", hook_metrics)
        metrics.update(hook_metrics)
        self._record_finished_step()
        if self.metrics_record is not None:
            self.metrics_record.write(self.global_step, metrics)
        return metrics

    def save_checkpoint(self, checkpoint_type=CheckpointType.sharded):
        self._record_finished_step()
        if self.metrics_record is not None:
            self.metrics_record.sync()
        try:
            return super().save_checkpoint(checkpoint_type)
        except (OSError, RuntimeError) as exc:  # a full disk: one line, and no partial checkpoint left behind
            error = checkpoint_space_error(self.cfg.save_folder, self.global_step, exc)
            if error is None:
                raise
            raise error from exc

    def check_if_cancelled(self) -> Tuple[bool, int]:
        # A signal may reach only some ranks (srun and torchrun forward it to all; a kill of one process does not).
        if on_any_rank(self.stop_reason is not None, self.flag_group):
            log.warning("Stopping at step %d (%s); saving a checkpoint", self.global_step,
                        self.stop_reason or "signal on another rank")
            return True, 0
        return super().check_if_cancelled()

    def trainer_state_dict(self) -> Dict[str, Any]:
        with cuda_rng_state_without_cuda():
            return super().trainer_state_dict()

    def close(self, exit_code: int = 0) -> None:
        for hook in self.hooks:
            try:
                hook.close(self)
            except Exception:  # one hook failing to close must not keep the others (or wandb) open
                log.exception("closing %s failed", type(hook).__name__)
        self._record_finished_step()
        if self.metrics_record is not None:
            self.metrics_record.close()
        super().close(exit_code)
