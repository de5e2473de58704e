"""Typed configuration of the synthetic mixture-of-regressions module, validated in one place.

``SyntheticConfig.validate()`` is the only place user input is checked: it raises ``ValueError`` naming the
field, its value and what is allowed, before any training starts. Defaults: docs/science.md#synthetic-module (K = 32,
m = 16, beta = 1.5, alpha = 1.0, widths on a log grid 4..512, frequent-set threshold 0.9 of prior mass); the
values the paper does not state (learning rate, warm-up, clip, batch size, step count) were tuned so that the
default phase diagram converges on a 2-core CPU in minutes (see ``README.md`` in this folder).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from typing import Optional, Sequence, Tuple, Union, get_args, get_origin, get_type_hints

SPECTRUM_NORMALISATIONS = ("trace", "leading")
DTYPES = ("float32", "float64")
DEVICES = ("auto", "cpu", "cuda")


def log_width_grid(smallest: int, largest: int, count: int) -> Tuple[int, ...]:
    """``count`` widths spaced evenly in log scale from ``smallest`` to ``largest``, rounded, duplicates dropped."""
    if count == 1:
        return (smallest,)
    ratio = (largest / smallest) ** (1.0 / (count - 1))
    return tuple(sorted({int(round(smallest * ratio**i)) for i in range(count)}))


DEFAULT_WIDTHS = log_width_grid(4, 512, 16)  # (4, 6, 8, 11, 15, 20, 28, 38, 53, 74, 102, 140, 194, 268, 371, 512)


@dataclass
class MixtureConfig:
    """The data: K regression tasks in orthogonal coordinate blocks of an ambient space of dimension K*m."""

    num_tasks: int = 32
    """K: number of tasks. Task k (1-based) occupies input coordinates (k-1)*m .. k*m-1."""

    block_dim: int = 16
    """m: block size of every task, also its output dimension (m = 1 is the rank-1 case)."""

    prior_exponent: float = 1.5
    """beta: task prior pi_k proportional to k**-beta, normalised over k = 1..K (task 1 most frequent)."""

    spectrum_exponent: float = 1.0
    """alpha of the most frequent task: spectrum lambda_{k,j} proportional to j**-alpha_k, j = 1..m."""

    spectrum_exponent_rarest: Optional[float] = None
    """alpha of the rarest task; alpha_k is then linear in k between the two (the paper's complexity sweep,
    App. D: the rarest task has the slowest decay, i.e. is the most complex). None = alpha shared by all tasks."""

    spectrum_normalisation: str = "leading"
    """How each task's spectrum is scaled (not stated in the paper): ``trace`` makes tr(C_k) = 1 (so the
    normalised and raw per-task losses coincide), ``leading`` makes lambda_{k,1} = 1."""

    @property
    def ambient_dim(self) -> int:
        """d = K * m."""
        return self.num_tasks * self.block_dim


@dataclass
class TrainingConfig:
    """The student's optimisation: AdamW, inverse-square-root schedule, per-width gradient clipping."""

    widths: Tuple[int, ...] = DEFAULT_WIDTHS
    """Encoder widths N trained together in one batched computation; strictly increasing, each 1..d."""

    steps: int = 6000
    """Optimiser steps (the paper uses 100_000; ``--paper-scale`` on the command line sets that)."""

    batch_size: int = 256
    """Samples per step, each with its task drawn from the prior and fresh Gaussian input x ~ N(0, I_d)."""

    learning_rate: float = 0.003
    """Peak AdamW learning rate, reached at the end of the warm-up."""

    warmup_steps: int = 100
    """Linear warm-up steps; afterwards lr(t) = peak * sqrt(warmup_steps / t) (inverse square root)."""

    weight_decay: float = 0.0
    """AdamW decoupled weight decay. Off by default (torch's default is 0.01) so that the trained objective is
    exactly the one whose optimum Theorem 3 predicts."""

    adam_beta1: float = 0.9
    """AdamW first-moment decay (torch default)."""

    adam_beta2: float = 0.999
    """AdamW second-moment decay (torch default)."""

    adam_eps: float = 1e-8
    """AdamW epsilon (torch default)."""

    grad_clip: float = 1.0
    """Maximum gradient norm, applied to each width's own parameters separately (never across widths)."""

    seed: int = 0
    """Seeds the data stream (shared by all widths) and, combined with each width, that width's initialisation,
    so a width trained inside a sweep is the same model as that width trained alone with the same seed."""

    eval_every: int = 1000
    """Steps between metric evaluations (the final step is always evaluated)."""

    dtype: str = "float32"
    """Floating-point type of parameters and data: float32 or float64."""

    device: str = "auto"
    """``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda``."""


@dataclass
class MetricsConfig:
    """How measurements are summarised."""

    frequent_mass: float = 0.9
    """The frequent set F is the smallest set of most frequent tasks whose prior mass reaches this value."""

    learned_fraction: float = 0.5
    """A task counts as learned at a width when its loss is below 1 - learned_fraction * lambda_{k,1}/tr(C_k)
    of its mean-predictor loss, i.e. at least this fraction of its leading feature's energy is explained
    (used for the measured critical width)."""


@dataclass
class SyntheticConfig:
    """Everything one synthetic run needs."""

    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (stored beside every result)."""
        return asdict(self)

    def validate(self) -> "SyntheticConfig":
        """Raise ``ValueError`` naming the first bad field; return ``self`` so calls can be chained."""
        mix, train, met = self.mixture, self.training, self.metrics
        _require(mix.num_tasks >= 1, "mixture.num_tasks", mix.num_tasks, "an integer >= 1")
        _require(mix.block_dim >= 1, "mixture.block_dim", mix.block_dim, "an integer >= 1")
        _require(math.isfinite(mix.prior_exponent) and mix.prior_exponent >= 0,
                 "mixture.prior_exponent", mix.prior_exponent, "a finite number >= 0")
        _require(math.isfinite(mix.spectrum_exponent) and mix.spectrum_exponent >= 0,
                 "mixture.spectrum_exponent", mix.spectrum_exponent, "a finite number >= 0")
        if mix.spectrum_exponent_rarest is not None:
            _require(math.isfinite(mix.spectrum_exponent_rarest) and mix.spectrum_exponent_rarest >= 0,
                     "mixture.spectrum_exponent_rarest", mix.spectrum_exponent_rarest,
                     "None or a finite number >= 0")
        _require(mix.spectrum_normalisation in SPECTRUM_NORMALISATIONS, "mixture.spectrum_normalisation",
                 mix.spectrum_normalisation, f"one of {SPECTRUM_NORMALISATIONS}")

        widths = tuple(train.widths)
        d = mix.ambient_dim
        _require(len(widths) >= 1, "training.widths", widths, "a non-empty sequence")
        _require(all(isinstance(n, int) and 1 <= n <= d for n in widths), "training.widths", widths,
                 f"integers between 1 and d = num_tasks * block_dim = {d}")
        _require(all(a < b for a, b in zip(widths, widths[1:])), "training.widths", widths, "strictly increasing")
        _require(train.steps >= 1, "training.steps", train.steps, "an integer >= 1")
        _require(train.batch_size >= 1, "training.batch_size", train.batch_size, "an integer >= 1")
        _require(train.learning_rate > 0, "training.learning_rate", train.learning_rate, "a number > 0")
        _require(train.warmup_steps >= 1, "training.warmup_steps", train.warmup_steps, "an integer >= 1")
        _require(train.weight_decay >= 0, "training.weight_decay", train.weight_decay, "a number >= 0")
        _require(0 <= train.adam_beta1 < 1, "training.adam_beta1", train.adam_beta1, "a number in [0, 1)")
        _require(0 <= train.adam_beta2 < 1, "training.adam_beta2", train.adam_beta2, "a number in [0, 1)")
        _require(train.adam_eps > 0, "training.adam_eps", train.adam_eps, "a number > 0")
        _require(train.grad_clip > 0, "training.grad_clip", train.grad_clip, "a number > 0")
        _require(train.eval_every >= 1, "training.eval_every", train.eval_every, "an integer >= 1")
        _require(train.dtype in DTYPES, "training.dtype", train.dtype, f"one of {DTYPES}")
        _require(train.device in DEVICES, "training.device", train.device, f"one of {DEVICES}")
        _require(0 < met.frequent_mass <= 1, "metrics.frequent_mass", met.frequent_mass, "a number in (0, 1]")
        _require(0 < met.learned_fraction < 1, "metrics.learned_fraction", met.learned_fraction,
                 "a number in (0, 1)")
        return self


def _require(condition: bool, name: str, value, allowed: str) -> None:
    if not condition:
        raise ValueError(f"{name} = {value!r} is invalid: must be {allowed}")


def with_overrides(config, overrides: Sequence[str]):
    """Return a copy of a (nested) dataclass config with dotted ``section.field=value`` overrides applied.

    Values are parsed by the field's declared type (tuples from comma lists, ``None`` for optional fields).
    Raises ``ValueError`` naming the override when the path or the value is not valid.
    """
    for override in overrides:
        path, sep, text = override.partition("=")
        if not sep:
            raise ValueError(f"override {override!r} is invalid: must look like section.field=value")
        config = _replace_path(config, path.split("."), text, override)
    return config


def _replace_path(node, parts, text, override):
    names = {f.name: f for f in fields(node)}
    if parts[0] not in names:
        raise ValueError(f"override {override!r} is invalid: {type(node).__name__} has no field {parts[0]!r} "
                         f"(fields: {sorted(names)})")
    current = getattr(node, parts[0])
    if len(parts) > 1:
        if not is_dataclass(current):
            raise ValueError(f"override {override!r} is invalid: {parts[0]!r} is not a section")
        return replace(node, **{parts[0]: _replace_path(current, parts[1:], text, override)})
    if is_dataclass(current):
        raise ValueError(f"override {override!r} is invalid: {parts[0]!r} is a section; set one of its fields")
    hint = get_type_hints(type(node))[parts[0]]
    return replace(node, **{parts[0]: _parse(hint, text, override)})


def _parse(hint, text: str, override: str):
    optional = get_origin(hint) is Union and type(None) in get_args(hint)
    if optional:
        if text.lower() in ("none", "null", ""):
            return None
        hint = next(a for a in get_args(hint) if a is not type(None))
    try:
        if get_origin(hint) is tuple:
            item = get_args(hint)[0]
            return tuple(item(v) for v in text.split(",") if v.strip())
        if hint is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        return hint(text)
    except (TypeError, ValueError):
        raise ValueError(f"override {override!r} is invalid: cannot read {text!r} as {hint}") from None
