"""Train OLMo with injected tasks: the project's main job.

    # one process, CPU (or one GPU): the embedded default run, then a tiny run with overrides
    python -m olmo_injection.train configs/default.yaml
    olmo-inject train configs/tiny.yaml --save_folder=/tmp/tiny --max_duration=20
    # one node, 2 processes (gloo on CPU, NCCL on GPUs)
    torchrun --nproc_per_node=2 -m olmo_injection.train configs/tiny.yaml --save_folder=/tmp/tiny2
    # several nodes: the same command on every node (launch/ writes it for SLURM)
    torchrun --nnodes=4 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=$HEAD:29500 \\
        -m olmo_injection.train CONFIG.yaml
    # print the resolved config and stop
    olmo-inject train configs/default.yaml --dry_run

Any OLMo option (and our ``injection``/``task_eval`` sections) can be overridden as ``--dotted.key=value``.
The same command resumes: with ``try_load_latest_save`` (on in our configs) a run restarts from the latest
checkpoint in ``save_folder``, or from ``load_path``. SIGTERM, SIGINT (Ctrl-C) and SIGUSR1 (SLURM's warning
before a time limit) stop the run with a checkpoint at the next cancel check (every ``canceled_check_interval``
steps: 1 in the tiny configs, 10 in the default, 20 in the base config); a second Ctrl-C aborts at once.
A save folder holds one experiment (``olmo_injection.experiment``): rerunning a finished run exits 0 without
training; a changed config is refused unless ``--extend`` (a larger max_duration) or ``--allow_config_change``
is given; ``run.lock`` keeps a second run out. Every logged metric also goes to ``<save_folder>/metrics.jsonl``.
Exit status: 0 when training finished (or was already finished), 2 for bad input (one line, no traceback),
128 + signal number when a signal stopped it (checkpoint saved).

One path for every setting: the process always joins a ``torch.distributed`` group (torchrun's, or a
one-process group when run without torchrun) and wraps the model with ``distributed_strategy``: ``ddp``
(CPU or GPU) or ``fsdp`` (GPU; on the CPU with precision fp32). ai2-olmo 0.6.0 has no single-device strategy; DDP over one process is it.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from olmo.config import CheckpointType, DDPConfig, DistributedStrategy
from olmo.torch_util import barrier, get_default_device, get_global_rank, get_local_rank, get_world_size, seed_all
from omegaconf import OmegaConf

from .checkpoint_safety import add_trust_checkpoint_argument, trusting_checkpoints
from .config import InjectionTrainConfig, validate_config
from .experiment import add_experiment_flags
from .hooks.base import TrainingHook
from .metrics_record import METRICS_RECORD_FILE, MetricsRecord
from .olmo_patches import apply_olmo_patches

if TYPE_CHECKING:
    from .tasks import Task
    from .trainer import InjectionTrainer

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

# Model fields that decide parameter shapes: a checkpoint must agree on all of them to be loaded.
MODEL_SHAPE_FIELDS = (
    "d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_ratio", "mlp_hidden_size", "activation_type",
    "block_type", "include_bias", "bias_for_layer_norm", "layer_norm_with_affine", "weight_tying",
    "vocab_size", "embedding_size", "rope", "alibi", "attention_layer_norm",
)


@dataclass(frozen=True)
class RunResult:
    """What a finished (or stopped) run left behind."""

    final_step: int
    stopped_by_signal: Optional[int]
    rank: int
    save_folder: Path
    wandb_dir: Optional[Path]


def load_config(path: str, overrides: List[str]) -> InjectionTrainConfig:
    """The YAML at ``path`` with OLMo-style dotted ``overrides`` (``--a.b=c``, ``a.b=c``, ``--flag``), validated.

    Bad input raises ``ValueError`` or ``OLMoConfigurationError`` with a one-line message.
    """
    cfg = InjectionTrainConfig.load(path, overrides)
    validate_config(cfg)
    return cfg


def check_run_settings(cfg: InjectionTrainConfig, world_size: int, device: torch.device) -> None:
    """OLMo-side settings that only make sense with the process group known; ``ValueError`` naming the field."""
    strategy = cfg.distributed_strategy
    if strategy not in (DistributedStrategy.ddp, DistributedStrategy.fsdp):
        raise ValueError(
            f"distributed_strategy={strategy}: allowed 'ddp' (also for one process) or 'fsdp'"
        )
    if strategy == DistributedStrategy.fsdp and device.type != "cuda" and cfg.precision not in (None, "fp32"):
        # OLMo autocasts only on CUDA, so FSDP's bf16/fp16 parameters meet fp32 activations on the CPU.
        raise ValueError(f"precision={cfg.precision}: FSDP on the CPU needs precision=fp32")
    for name in ("sharded_checkpointer", "load_path_sharded_checkpointer"):
        if strategy == DistributedStrategy.fsdp and getattr(cfg, name) == "local":
            # ai2-olmo 0.6.0's LocalShardedCheckpointer raises NotImplementedError for torch >= 2.3.
            raise ValueError(f"{name}=local: not supported with torch {torch.__version__}; use 'olmo_core' or 'torch_new'")
    if cfg.global_train_batch_size % world_size != 0:
        raise ValueError(
            f"global_train_batch_size={cfg.global_train_batch_size}: must be divisible by the world size {world_size}"
        )
    check_save_folder(cfg.save_folder)


def check_save_folder(save_folder: str) -> None:
    """``ValueError`` unless ``save_folder`` is (or can be created as) a writable folder; writes nothing."""
    if "://" in str(save_folder):
        return
    path = Path(save_folder).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        what = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise ValueError(f"save_folder={str(save_folder)!r}: {what}, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == path else f" ({existing}, where it would be created)"
        raise ValueError(f"save_folder={str(save_folder)!r}: not writable{where}")


def init_distributed() -> Tuple[torch.device, bool]:
    """Join torchrun's process group, or make a one-process group; returns (device, whether we created it).

    gloo on the CPU, NCCL on GPUs (one GPU per local rank).
    """
    created = not dist.is_initialized()
    use_cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{get_local_rank()}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if created:
        backend = "nccl" if use_cuda else "gloo"
        if "RANK" in os.environ:  # started by torchrun (or SLURM with its variables set)
            dist.init_process_group(backend, timeout=timedelta(minutes=30))
        else:  # a plain `python -m`: a group of one, no network rendezvous needed
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return device, created


def checkpoint_step(path: Path) -> int:
    """The step of a checkpoint folder ``stepN`` or ``stepN-unsharded``."""
    return int(path.name.removeprefix("step").removesuffix("-unsharded"))


def latest_checkpoint(save_folder: Path) -> Optional[Path]:
    """The checkpoint with the highest step in ``save_folder`` (``stepN`` or ``stepN-unsharded``), step 0 included."""
    best: Optional[Tuple[int, Path]] = None
    for path in Path(save_folder).glob("step*"):
        name = path.name.removeprefix("step").removesuffix("-unsharded")
        if path.is_dir() and name.isdigit() and (best is None or int(name) > best[0]):
            best = (int(name), path)
    return None if best is None else best[1]


def resolve_load_path(cfg: InjectionTrainConfig) -> Optional[str]:
    """Where to restore from: the latest checkpoint in ``save_folder`` (``try_load_latest_save``), else ``load_path``.

    ``ValueError`` if ``save_folder`` already holds checkpoints that this run would neither resume nor overwrite.
    """
    latest = latest_checkpoint(Path(cfg.save_folder))
    if latest is not None and cfg.try_load_latest_save:
        return str(latest)
    if latest is not None and not cfg.save_overwrite and cfg.load_path is None:
        raise ValueError(
            f"save_folder={cfg.save_folder!r} already holds checkpoints (latest {latest.name}): set "
            "try_load_latest_save=true to resume, save_overwrite=true to start over, or another save_folder"
        )
    return cfg.load_path


def check_checkpoint_matches(cfg: InjectionTrainConfig, load_path: str) -> None:
    """``ValueError`` naming the differing fields if the checkpoint's model is not this config's model."""
    saved = Path(load_path) / "config.yaml"
    if not Path(load_path).is_dir():
        raise ValueError(f"load_path={load_path!r}: no such checkpoint directory")
    if not saved.is_file():
        return  # remote or foreign checkpoint: OLMo's strict state-dict load is the check
    saved_model = OmegaConf.load(saved).get("model", {})
    diffs = [
        f"model.{name}: checkpoint {saved_model.get(name)!r}, config {getattr(cfg.model, name)!r}"
        for name in MODEL_SHAPE_FIELDS
        if name in saved_model and str(saved_model.get(name)) != str(getattr(cfg.model, name))
    ]
    if diffs:
        raise ValueError(f"checkpoint {load_path} is from a different model: " + "; ".join(diffs))


def fill_runtime_fields(cfg: InjectionTrainConfig, world_size: int) -> None:
    """Settings OLMo derives at start-up (as its own training script does)."""
    cfg.model.precision = cfg.precision
    cfg.device_train_batch_size = cfg.global_train_batch_size // world_size
    cfg.device_train_grad_accum = max(cfg.device_train_batch_size // cfg.device_train_microbatch_size, 1)
    if cfg.distributed_strategy == DistributedStrategy.ddp:
        cfg.ddp = cfg.ddp or DDPConfig()
        # OLMo saves only unsharded checkpoints under DDP, at save_interval_unsharded; save_interval is the
        # interval a user sets (``--save_interval=10``), so it wins over a save_interval_unsharded from the YAML.
        if cfg.save_interval is not None:
            if cfg.save_interval_unsharded not in (None, cfg.save_interval):
                log.info("distributed_strategy=ddp: checkpoints every save_interval=%d steps (save_interval_unsharded=%d "
                         "applies to FSDP only)", cfg.save_interval, cfg.save_interval_unsharded)
            cfg.save_interval_unsharded = cfg.save_interval
        if cfg.save_num_unsharded_checkpoints_to_keep == 0:
            cfg.save_num_unsharded_checkpoints_to_keep = cfg.save_num_checkpoints_to_keep


def build_model(cfg: InjectionTrainConfig, device: torch.device):
    """OLMo's model wrapped for ``distributed_strategy``, initialised from ``cfg.seed`` as OLMo's script does."""
    from olmo.model import OLMo
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.nn.parallel import DistributedDataParallel as DDP

    seed_all(cfg.seed)
    model = OLMo(cfg.model)
    if cfg.compile is not None:
        for block in model.transformer.blocks:
            block.compile(**cfg.compile.asdict())
    model.set_activation_checkpointing(cfg.activation_checkpointing)
    if cfg.distributed_strategy == DistributedStrategy.ddp:
        assert cfg.ddp is not None
        dist_model = DDP(model.to(device), find_unused_parameters=cfg.ddp.find_unused_params)
    else:
        assert cfg.fsdp is not None
        dist_model = FSDP(
            model,
            sharding_strategy=cfg.fsdp.sharding_strategy,
            mixed_precision=cfg.fsdp_precision,
            auto_wrap_policy=model.get_fsdp_wrap_policy(cfg.fsdp.wrapping_strategy),
            use_orig_params=cfg.fsdp.use_orig_params,
            limit_all_gathers=True,
            device_id=device,
            param_init_fn=lambda module: module.to_empty(device=get_default_device()),
        )
    model.reset_parameters()
    return model, dist_model


@contextmanager
def stop_on_signals(trainer) -> Iterator[List[int]]:
    """While inside, SIGTERM/SIGINT/SIGUSR1 ask ``trainer`` to checkpoint and stop; yields the signals received.

    A second SIGINT raises ``KeyboardInterrupt`` at once. Previous handlers are restored on exit.
    """
    received: List[int] = []

    def handler(signum, frame):
        received.append(signum)
        trainer.request_stop(f"received {signal.Signals(signum).name}")
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def build_trainer(
    cfg: InjectionTrainConfig,
    tasks: Sequence["Task"],
    device: torch.device,
    *,
    extra_hooks: Sequence[TrainingHook] = (),
    indices_file=None,
) -> "InjectionTrainer":
    """The run's trainer, not yet started: the injecting data loader, OLMo's evaluators, model (``build_model``),
    optimizer and scheduler, and the hook list.

    Hooks, in order: the token-id check, per-task metrics, gradient interference (when
    ``grad_interference.enabled``), then ``extra_hooks`` (so they see the step metrics of both), then the
    console progress. ``cfg`` has its runtime fields filled (``fill_runtime_fields``) and a process group exists
    (``init_distributed``); nothing is written except OLMo's data-order file under ``<save_folder>/train_data``.
    The entry point, the tests and the benchmarks all build their trainer here.
    """
    from olmo.eval import build_evaluators
    from olmo.optim import build_optimizer, build_scheduler

    from .hooks.grad_interference import GradInterferenceHook
    from .hooks.progress import ProgressHook
    from .hooks.task_metrics import TaskMetricsHook
    from .model_ladder import count_model_params
    from .injecting_dataset import TokenIdCheck, build_injecting_train_dataloader
    from .schedule import InjectionSchedule
    from .tasks import olmo_tokenizer
    from .trainer import InjectionTrainer

    schedule = InjectionSchedule.from_config(cfg, tasks)
    train_loader = build_injecting_train_dataloader(cfg, tasks, schedule=schedule)
    evaluators = build_evaluators(cfg, device)
    log.info("Model: %s parameters", f"{count_model_params(cfg.model):,d}")
    model, dist_model = build_model(cfg, device)
    hooks = [
        TokenIdCheck(train_loader.dataset, cfg.model.vocab_size),
        TaskMetricsHook(tasks, schedule, cfg.task_eval, olmo_tokenizer(cfg.tokenizer.identifier)),
        *([GradInterferenceHook(cfg.grad_interference, tasks)] if cfg.grad_interference.enabled else []),
        *extra_hooks,
        ProgressHook([t.name for t in tasks], get_global_rank()),
    ]
    return InjectionTrainer(
        cfg=cfg,
        epoch=cfg.epoch,
        model=model,
        dist_model=dist_model,
        optim=build_optimizer(cfg, dist_model),
        scheduler=build_scheduler(cfg),
        train_loader=train_loader,
        device=device,
        evaluators=evaluators,
        indices_file=indices_file,
        hooks=hooks,
    )


def train(
    cfg: InjectionTrainConfig,
    extra_hooks: Sequence[TrainingHook] = (),
    *,
    extend: bool = False,
    allow_config_change: bool = False,
) -> RunResult:
    """Build everything from ``cfg`` (already validated) and train; see the module docstring.

    Everything that can be checked is checked before anything is written, the same on every rank
    (``olmo_injection.experiment``): the run settings, the tasks, the save folder's lock, and the save folder's
    experiment (``extend`` lets ``max_duration`` grow, ``allow_config_change`` allows any other change). A run
    whose latest checkpoint is at its last step trains nothing and returns that step. The trainer and its hooks
    come from ``build_trainer`` (``extra_hooks`` go before the console progress).
    """
    from olmo.optim import BoltOnWarmupScheduler

    from .hooks.wandb_logging import start_wandb_run
    from .model_ladder import count_model_params
    from .experiment import SaveFolderLock, decide_rerun, on_rank_zero, record_config_changes, settled_on_every_rank
    from .tasks import build_tasks, write_task_files

    apply_olmo_patches()
    device, created_group = init_distributed()
    save_folder = Path(cfg.save_folder)
    save_folder_lock = SaveFolderLock(cfg.save_folder)
    try:
        world_size, rank = get_world_size(), get_global_rank()

        def check_inputs():
            check_run_settings(cfg, world_size, device)
            fill_runtime_fields(cfg, world_size)
            return build_tasks(cfg, write=False)

        def decide_on_save_folder():
            save_folder_lock.acquire()
            load_path = resolve_load_path(cfg)
            if load_path is not None:
                check_checkpoint_matches(cfg, load_path)
            latest = latest_checkpoint(save_folder)
            resumed_step = checkpoint_step(latest) if latest is not None and load_path == str(latest) else None
            return load_path, decide_rerun(
                cfg, resumed_step, starts_over=load_path is None and cfg.save_overwrite, extend=extend,
                allow_config_change=allow_config_change,
            )

        tasks = settled_on_every_rank(check_inputs)
        load_path, rerun = on_rank_zero(decide_on_save_folder)
        if rerun.finished_message is not None:
            if rank == 0:
                print(rerun.finished_message, flush=True)
            return RunResult(rerun.resumed_step, None, rank, save_folder, None)
        if rank == 0:
            save_folder.mkdir(parents=True, exist_ok=True)
            if rerun.changes:
                record_config_changes(save_folder, rerun.changes, rerun.flag, rerun.resumed_step)
            write_task_files(cfg, tasks)
        barrier()

        indices_file = None
        if cfg.save_data_indices:
            indices_path = save_folder / f"data-indices/rank{rank}.tsv.gz"
            indices_path.parent.mkdir(parents=True, exist_ok=True)
            indices_file = gzip.open(indices_path, "at" if load_path is not None else "wt")
        trainer = build_trainer(cfg, tasks, device, extra_hooks=extra_hooks, indices_file=indices_file)

        wandb_dir = None
        if rank == 0 or (cfg.wandb is not None and not cfg.wandb.rank_zero_only):
            wandb_run = start_wandb_run(cfg, count_model_params(cfg.model))  # FSDP's sharded model counts 0
            wandb_dir = Path(wandb_run.dir).parent if wandb_run is not None else None
        if rank == 0:
            cfg.save(save_folder / "config.yaml")
        barrier()

        with trainer:
            checkpoint_type = (
                CheckpointType.unsharded if cfg.distributed_strategy == DistributedStrategy.ddp else CheckpointType.sharded
            )
            if load_path is None and not cfg.no_pre_train_checkpoint:
                # As OLMo does: save before training (fails early on a full disk) and prove it loads.
                path, local_cache = trainer.save_checkpoint(checkpoint_type)
                trainer.restore_checkpoint(path, checkpoint_type=checkpoint_type, local_cache=local_cache)
            if load_path is not None:
                log.info("Restoring checkpoint %s", load_path)
                trainer.restore_checkpoint(
                    load_path,
                    load_optimizer_state=not cfg.reset_optimizer_state,
                    load_trainer_state=not cfg.reset_trainer_state,
                    sharded_checkpointer=cfg.load_path_sharded_checkpointer,
                )
                if cfg.reset_optimizer_state and not cfg.reset_trainer_state:
                    trainer.scheduler = BoltOnWarmupScheduler.wrap(
                        trainer.scheduler, trainer.global_step, int(trainer.global_step + cfg.scheduler.t_warmup)
                    )
            if rank == 0:
                trainer.metrics_record = MetricsRecord.open(save_folder, trainer.global_step if load_path else None)
            if cfg.stop_at is None and cfg.stop_after is None:
                # OLMo's default (max_steps + 10) would train 10 steps past the schedule's end.
                cfg.stop_at = trainer.max_steps
            with stop_on_signals(trainer) as received:
                trainer.fit()
            final_step = trainer.global_step
        return RunResult(final_step, received[0] if received else None, rank, save_folder, wandb_dir)
    finally:
        save_folder_lock.release()
        if created_group:
            dist.destroy_process_group()


def print_outputs(result: RunResult) -> None:
    """Tell the user where the run's outputs are."""
    stop = "" if result.stopped_by_signal is None else f" (stopped by {signal.Signals(result.stopped_by_signal).name})"
    lines = [
        f"Training reached step {result.final_step}{stop}. Outputs:",
        f"  save folder : {result.save_folder}",
        f"  checkpoints : {', '.join(sorted(p.name for p in result.save_folder.glob('step*'))) or 'none'}",
        f"  config      : {result.save_folder / 'config.yaml'}",
        f"  metrics     : {result.save_folder / METRICS_RECORD_FILE}",
        f"  task files  : {result.save_folder / 'tasks'}",
    ]
    if result.wandb_dir is not None:
        lines.append(f"  wandb run   : {result.wandb_dir}")
        if result.wandb_dir.name.startswith("offline-"):
            lines.append(f"  upload with : wandb sync {result.wandb_dir}")
    print("\n".join(lines), flush=True)


def run(
    config_path: str,
    overrides: List[str],
    trust_checkpoint: bool = False,
    *,
    extend: bool = False,
    allow_config_change: bool = False,
    prog: str = "python -m olmo_injection.train",
) -> int:
    """Load, validate and train; returns the process exit status (see the module docstring).

    ``trust_checkpoint``: resume from a checkpoint even if it holds objects outside the allow-list
    (``checkpoint_safety.trusting_checkpoints``). ``extend``, ``allow_config_change``: see ``train``.
    Bad input (a ``ValueError`` or ``OLMoConfigurationError`` from any check, on any rank) is one line on
    stderr from rank 0, ``PROG: error: ...``, and exit status 2 on every rank, no traceback; a second Ctrl-C
    is one line too, exit status 130.
    """
    from olmo.exceptions import OLMoConfigurationError
    from olmo.util import prepare_cli_environment

    from .experiment import BadInputOnEveryRank, settled_on_every_rank

    prepare_cli_environment()
    # A log handler that cannot write (wandb's debug log on a full disk) must not print tracebacks of its own.
    logging.raiseExceptions = False
    rank_zero = int(os.environ.get("RANK", "0")) == 0
    # Under torchrun the group exists before the config is read, so a bad input is settled across ranks and no
    # rank exits (which has torchrun stop the others) before rank 0 has printed it.
    created_group = int(os.environ.get("WORLD_SIZE", "1")) > 1 and init_distributed()[1]
    try:
        cfg = settled_on_every_rank(lambda: load_config(config_path, overrides))
        if cfg.dry_run:
            print(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
            return 0
        with trusting_checkpoints(trust_checkpoint):
            result = train(cfg, extend=extend, allow_config_change=allow_config_change)
    except (ValueError, OLMoConfigurationError) as exc:
        if dist.is_initialized() and dist.get_world_size() > 1:
            # Every rank is on its way out with status 2; torchrun's SIGTERM to the others (once the first
            # exits) would only replace that status with -15.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if rank_zero:
            print(f"{prog}: error: {one_line(exc)}", file=sys.stderr, flush=True)
        if isinstance(exc, BadInputOnEveryRank) and dist.is_initialized():
            dist.barrier()  # no rank exits before rank 0 has printed
        return 2
    except KeyboardInterrupt:  # the second Ctrl-C (the first one stops at the next cancel check, with a checkpoint)
        if rank_zero:
            print(f"{prog}: interrupted twice: stopped at once, without a checkpoint of the current step",
                  file=sys.stderr, flush=True)
        return 128 + signal.SIGINT
    finally:
        if created_group:
            dist.destroy_process_group()
    if result.rank == 0:
        print_outputs(result)
    return 0 if result.stopped_by_signal is None else 128 + result.stopped_by_signal


def one_line(exc: BaseException) -> str:
    """An error message on one line (some library messages span several)."""
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m olmo_injection.train", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("config", help="training config YAML (see configs/)")
    add_trust_checkpoint_argument(parser)
    add_experiment_flags(parser)
    args, overrides = parser.parse_known_args(argv)
    return run(args.config, overrides, args.trust_checkpoint, extend=args.extend,
               allow_config_change=args.allow_config_change)


if __name__ == "__main__":
    sys.exit(main())
