"""Resources and settings of a SLURM launch: the ``slurm:`` section of a sweep file, then command-line flags.

    slurm:
      nodes: 2                 # per job (one array task = one run)
      gpus_per_node: 8
      node_gpus: 8             # GPUs a node of the partition has; asking for more is an error before submitting
      cpus_per_node: 96
      mem: "0"                 # SLURM's --mem; "0" = all of the node's memory
      time: "48:00:00"
      partition: h200
      account: my-project
      per_model: {1B: {nodes: 4}, 4B: {nodes: 8}}    # runs of a model size get their own array job
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")  # SLURM's minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]


@dataclass
class SlurmConfig:
    """How the runs of a sweep are submitted."""

    runs_root: str = "runs"
    """Folder of run folders (``<runs_root>/<sweep>/<run>``); must be on a filesystem every node sees."""

    nodes: int = 1
    """Nodes per run."""

    gpus_per_node: int = 8
    """GPUs used per node (one training process each)."""

    node_gpus: int = 8
    """GPUs one node of the partition has (H200 nodes: 8); ``gpus_per_node`` may not exceed it."""

    cpus_per_node: int = 64
    """CPU cores per node (``--cpus-per-task`` of the one task per node); ``OMP_NUM_THREADS`` = this / processes."""

    mem: str = "0"
    """Memory per node in SLURM's syntax (``512G``); ``"0"`` asks for all of the node's memory."""

    time: str = "48:00:00"
    """Wall-clock limit per job in SLURM's syntax; a requeued job gets it again."""

    partition: Optional[str] = None
    """``--partition``; None uses the cluster's default."""

    account: Optional[str] = None
    """``--account``; None uses the user's default."""

    signal_seconds: int = 300
    """SLURM sends USR1 this many seconds before the time limit; training then has this long to checkpoint."""

    max_parallel: Optional[int] = None
    """Most array tasks running at once (``--array=0-N%max_parallel``); None = no limit."""

    cpu: bool = False
    """CPU mode (tests, debugging): no GPUs requested, ``nproc_per_node`` processes on gloo."""

    nproc_per_node: Optional[int] = None
    """Training processes per node; None = ``gpus_per_node`` (GPU mode) or 2 (CPU mode)."""

    python: str = sys.executable
    """Python interpreter on the compute nodes (default: the one submitting, assumed on a shared filesystem)."""

    setup: List[str] = field(default_factory=list)
    """Shell lines run before training in every job (``module load cuda``, ``source .venv/bin/activate``)."""

    env: Dict[str, str] = field(default_factory=dict)
    """Extra environment variables for the job (``NCCL_SOCKET_IFNAME: ib0``, ``WANDB_MODE: offline``)."""

    sbatch_args: List[str] = field(default_factory=list)
    """Extra ``#SBATCH`` options, verbatim (``--qos=high``, ``--constraint=h200``)."""

    per_model: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    """Settings that differ by model size: ``{4B: {nodes: 8}}``; runs are grouped into one array job per size."""

    @property
    def processes_per_node(self) -> int:
        if self.nproc_per_node is not None:
            return self.nproc_per_node
        return 2 if self.cpu else self.gpus_per_node

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes_per_node

    def for_model(self, model: Optional[str]) -> "SlurmConfig":
        """This config with ``per_model[model]`` applied (unchanged for a model without an entry)."""
        if model is None or model not in self.per_model:
            return self
        return slurm_config_from(self.per_model[model], base=dataclasses.replace(self, per_model={}),
                                 where=f"slurm.per_model.{model}")


FIELDS = tuple(f.name for f in dataclasses.fields(SlurmConfig))


def slurm_config_from(raw: Mapping[str, Any], base: Optional[SlurmConfig] = None, where: str = "slurm") -> SlurmConfig:
    """``base`` (default: defaults) with the keys of ``raw`` set; validated. ``ValueError`` names the key."""
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {list(FIELDS)}")
    cfg = dataclasses.replace(base or SlurmConfig(), **{k: v for k, v in raw.items() if v is not None})
    validate(cfg, where)
    return cfg


def validate(cfg: SlurmConfig, where: str = "slurm") -> None:
    """``ValueError`` naming the field, its value and what is allowed."""
    for name in ("nodes", "gpus_per_node", "node_gpus", "cpus_per_node", "signal_seconds"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}.{name}={value!r}: must be an integer >= 1")
    if not cfg.cpu and cfg.gpus_per_node > cfg.node_gpus:
        raise ValueError(
            f"{where}.gpus_per_node={cfg.gpus_per_node}: a node has only node_gpus={cfg.node_gpus} GPUs; "
            "use more nodes, or set node_gpus if the partition's nodes have more"
        )
    if cfg.nproc_per_node is not None and (not isinstance(cfg.nproc_per_node, int) or cfg.nproc_per_node < 1):
        raise ValueError(f"{where}.nproc_per_node={cfg.nproc_per_node!r}: must be an integer >= 1")
    if not cfg.cpu and cfg.nproc_per_node not in (None, cfg.gpus_per_node):
        raise ValueError(
            f"{where}.nproc_per_node={cfg.nproc_per_node}: on GPUs there is one process per GPU "
            f"(gpus_per_node={cfg.gpus_per_node}); leave it unset"
        )
    if cfg.max_parallel is not None and (not isinstance(cfg.max_parallel, int) or cfg.max_parallel < 1):
        raise ValueError(f"{where}.max_parallel={cfg.max_parallel!r}: must be an integer >= 1 or null")
    if not _TIME.match(str(cfg.time)):
        raise ValueError(f"{where}.time={cfg.time!r}: use SLURM's format, e.g. 48:00:00 or 2-00:00:00")
    if not re.match(r"^\d+[KMGT]?$", str(cfg.mem)):
        raise ValueError(f"{where}.mem={cfg.mem!r}: use SLURM's format, e.g. 512G, or 0 for the whole node")
    for key in cfg.env:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(key)):
            raise ValueError(f"{where}.env: {key!r} is not a valid environment variable name")
    for arg in cfg.sbatch_args:
        if not str(arg).startswith("--"):
            raise ValueError(f"{where}.sbatch_args: {arg!r}: write long options, e.g. --qos=high")
