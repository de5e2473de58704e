"""Timing training steps as OLMo's ``Trainer.fit`` runs them, and the trainers the speed benchmarks compare.

No benchmark copies OLMo's loop: ``timed_fit`` calls ``trainer.fit()`` itself, for a few more steps each time,
and reads the time between consecutive batches the loop takes from its loader (``StepClock``, wrapped around
the trainer's loader). That interval is what ``fit`` spends on one step: the fetch, the step with every hook,
OLMo's logging and its cancel check. Blocks of steps cycle through the arms, so drift in the machine's speed
hits all alike; costs are medians of per-block ratios against the first arm.

The arms are built the way a run builds them: ``plain`` is OLMo's own ``Trainer`` on OLMo's
``build_train_dataloader``; ``ours`` and ``ours_grad`` come from ``olmo_injection.train.build_trainer`` (the
injecting loader and every hook of a run; ``ours_grad`` with gradient interference on, its task neurons read
from a file chosen once beforehand and its g_r computed once in the warm-up, so timed steps cost the per-step
capture). ``BENCHMARK_OVERRIDES`` leave evaluations, checkpoints and wandb out of every arm.
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Sequence

ARMS = ("plain", "ours", "ours_grad")
BENCHMARK_OVERRIDES = [
    "wandb=null", "evaluators=[]", "task_eval.enabled=false", "console_log_interval=1", "save_interval=null",
    "save_interval_unsharded=null", "save_interval_ephemeral=null", "save_num_checkpoints_to_keep=0",
]  # fmt: skip
"""Every step logs (the worst case for per-step metrics, as with ``wandb.log_interval`` = 1); nothing is
evaluated or saved, so ``fit`` can be called again and again on the same trainer."""
NEVER = 10**9  # a reference interval no benchmark reaches: g_r is computed once, in the warm-up


class StepClock:
    """A trainer's loader that notes ``(perf_counter, process_time)`` as it hands each batch to the loop."""

    def __init__(self, loader):
        self.loader = loader
        self.marks: List[tuple] = []

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            self.marks.append((time.perf_counter(), time.process_time()))
            yield batch

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:  # ``dataset`` and the rest, as OLMo's trainer reads them
        return getattr(self.loader, name)


def timed_fit(trainer, steps: int) -> Dict[str, float]:
    """Train ``steps + 1`` more steps with ``trainer.fit()`` and return the wall and process-CPU seconds of the
    first ``steps`` of them (from the first batch's hand-over to the last's). The stream continues where the
    previous call left it, as a resumed run's does."""
    if not isinstance(trainer.train_loader, StepClock):
        trainer.train_loader = StepClock(trainer.train_loader)
    clock = trainer.train_loader
    clock.marks = []
    trainer.dataset.start_index = trainer.global_train_examples_seen_this_epoch
    trainer.cfg.stop_at = trainer.global_step + steps + 1
    trainer.fit()
    (wall_0, cpu_0), (wall_1, cpu_1) = clock.marks[0], clock.marks[steps]
    return {"wall": wall_1 - wall_0, "cpu": cpu_1 - cpu_0}


def build_arm(name: str, cfg, tasks: Sequence, device, neurons_file: Path = None):
    """The trainer of arm ``name`` (one of ``ARMS``) on its own copy of ``cfg`` (loaded with
    ``BENCHMARK_OVERRIDES``), its own model and ``<save_folder>/<name>``; ``ours_grad`` needs ``neurons_file``
    for the first task."""
    from olmo.data import build_train_dataloader
    from olmo.optim import build_optimizer, build_scheduler
    from olmo.train import Trainer

    from olmo_injection.train import build_model, build_trainer

    if name not in ARMS:
        raise ValueError(f"arm {name!r}: one of {list(ARMS)}")
    cfg = copy.deepcopy(cfg)
    cfg.save_folder = str(Path(cfg.save_folder) / name)  # each arm's data order and task files its own
    if name == "plain":
        model, dist_model = build_model(cfg, device)
        return Trainer(cfg=cfg, model=model, dist_model=dist_model, optim=build_optimizer(cfg, dist_model),
                       scheduler=build_scheduler(cfg), device=device, evaluators=[], epoch=0,
                       train_loader=build_train_dataloader(cfg))  # fmt: skip
    gi = cfg.grad_interference
    gi.enabled = name == "ours_grad"
    if gi.enabled:
        gi.task, gi.neurons_file, gi.reference_interval = tasks[0].name, str(neurons_file), NEVER
    return build_trainer(cfg, tasks, device)


def write_task_neurons(trainer, task, path: Path, k: int) -> float:
    """Choose ``task``'s ``k`` task neurons on ``trainer``'s model as a run's selection step does, and write them
    to ``path``; returns the selection's wall seconds."""
    from olmo_injection.grad_decomposition import reference_instances, select_task_neurons
    from olmo_injection.hooks.grad_interference import reference_model, training_autocast_dtype
    from olmo_injection.neurons import TaskNeurons, first_mlp_block, num_neurons, save_task_neurons

    start = time.perf_counter()
    ids, norms, _ = select_task_neurons(reference_model(trainer), reference_instances(task, "all"), k,
                                        autocast_dtype=training_autocast_dtype(trainer))  # fmt: skip
    seconds = time.perf_counter() - start
    block = num_neurons(first_mlp_block(trainer.model))
    save_task_neurons(TaskNeurons(task.name, ids.tolist(), norms.tolist(), block, None), path)
    return seconds


def run_blocks(arms: Dict[str, Any], blocks: int, steps_per_block: int, warmup_steps: int,
               sync: Callable[[], None] = lambda: None, label: str = "") -> List[Dict[str, Dict[str, float]]]:
    """``warmup_steps`` untimed steps per arm, then ``blocks`` rounds of ``steps_per_block`` timed steps of each
    arm in turn; one ``{arm: {"wall": s, "cpu": s}}`` per round, printed as it ends."""
    for trainer in arms.values():
        if warmup_steps:
            timed_fit(trainer, warmup_steps)
    rounds = []
    for number in range(blocks):
        seconds = {}
        for name, trainer in arms.items():
            sync()
            seconds[name] = timed_fit(trainer, steps_per_block)
            sync()
        rounds.append(seconds)
        print(f"{label}block {number + 1}/{blocks}: "
              + "  ".join(f"{n} {s['wall']:.3f}s wall {s['cpu']:.3f}s cpu" for n, s in seconds.items()), flush=True)
    return rounds


def summarise(rounds: List[Dict[str, Dict[str, float]]], tokens_per_block: int, clock: str = "wall") -> Dict:
    """Tokens/s of every arm, and each later arm's median per-round time ratio to the first arm."""
    names = list(rounds[0])
    total = {n: sum(r[n][clock] for r in rounds) for n in names}
    out: Dict[str, Any] = {n: {"tokens_per_s": tokens_per_block * len(rounds) / total[n]} for n in names}
    for name in names[1:]:
        ratio = statistics.median(r[name][clock] / r[names[0]][clock] for r in rounds)
        out[f"{name}_over_{names[0]}"] = {"median_time_ratio": ratio, "cost_percent": 100 * (ratio - 1)}
    return out
