"""Feature presence for T_CMP: how linearly the order value is readable from the first layer's residual stream.

At each token position p (TOK1, TOK2), the value of the token at p is regressed (ordinary least squares) on the
top ``num_components`` principal components of the residual at p. R^2 is cross-validated with folds grouped by
value: a value's rows are never both fitted and scored, so a probe that merely memorises tokens scores ~0 and
only an order that generalises to unseen values scores near 1.

Two things keep the number honest on real checkpoints. The component count is capped by what the data can
carry: at most ``d_model`` components, and at most one per ``values_per_component`` distinct values in the
smallest training fold (the residual at TOK1 is a function of the token alone, so a fold's rows hold only as
many distinct points as it has values; 50 components fitted to 80 points overfit to a negative R^2). And every
R^2 comes with a shuffled-value null computed the same way: the values are relabelled by a random permutation
(``null_shuffles`` times, the same rows, folds and components), which keeps which rows share a value and destroys
the order; an R^2 means an order only above the null's 95th percentile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from math import factorial
from typing import Dict, List

import numpy as np
import torch
from olmo.model import OLMo

from olmo_injection.task_kinds import require_analysis
from olmo_injection.tasks import Task

from .residual_stream import residual_streams
from .task_prompts import TOKEN_POSITIONS, prompt_ids


@dataclass
class FeaturePresenceConfig:
    """How the order probe is fitted."""

    residual: int = 1
    """Residual index (0 = embedding, l + 1 = output of block l); the paper's "first layer" is 1."""

    num_components: int = 50
    """Principal components asked for (the paper: 50); capped by ``component_cap``."""

    values_per_component: int = 5
    """Distinct values the smallest training fold must hold per component fitted (caps the component count;
    5 is the usual minimum of observations per OLS predictor, and the null shows what overfitting is left)."""

    null_shuffles: int = 20
    """Random relabellings of the values for the shuffled-value null of each R^2."""

    num_folds: int = 5
    """Cross-validation folds, grouped by value."""

    max_instances: int = 4000
    """Instances sampled (without replacement) to fit on; all of them when the task has fewer."""

    seed: int = 0
    """Seeds the instance sample and the fold assignment of values."""

    positions: List[int] = field(default_factory=lambda: list(TOKEN_POSITIONS))
    """Token positions probed (0 = TOK1, 1 = TOK2)."""

    def validate(self) -> None:
        if self.num_components < 1:
            raise ValueError(f"num_components={self.num_components}: must be >= 1")
        if self.num_folds < 2:
            raise ValueError(f"num_folds={self.num_folds}: must be >= 2")
        if self.values_per_component < 1:
            raise ValueError(f"values_per_component={self.values_per_component}: must be >= 1")
        if self.null_shuffles < 1:
            raise ValueError(f"null_shuffles={self.null_shuffles}: must be >= 1")
        if self.max_instances < self.num_folds:
            raise ValueError(f"max_instances={self.max_instances}: must be >= num_folds={self.num_folds}")
        if not self.positions or any(p not in TOKEN_POSITIONS for p in self.positions):
            raise ValueError(f"positions={self.positions}: allowed positions are {list(TOKEN_POSITIONS)}")


def pca_probe_r2(features: np.ndarray, targets: np.ndarray, groups: np.ndarray, num_components: int,
                 num_folds: int, seed: int) -> float:
    """Cross-validated R^2 of OLS on the top principal components, folds grouped by ``groups``.

    ``features`` [n, d], ``targets`` [n], ``groups`` [n] (rows of one group share a fold). PCA and the
    regression are fitted on the training folds only. R^2 = 1 - SSE / SST over all held-out predictions,
    with SST about the mean of the targets (so it is <= 0 for a probe no better than the mean).
    Raises ValueError when the training folds have fewer rows than ``num_components`` + 1.
    """
    return float(pca_probe_r2s(features, np.asarray(targets)[:, None], groups, num_components, num_folds, seed)[0])


def pca_probe_r2s(features: np.ndarray, targets: np.ndarray, groups: np.ndarray, num_components: int,
                  num_folds: int, seed: int) -> np.ndarray:
    """``pca_probe_r2`` for each column of ``targets`` [n, m] at once (same folds and PCs): [m] R^2."""
    features = np.asarray(features, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    unique_groups = np.unique(groups)
    if len(unique_groups) < num_folds:
        raise ValueError(f"num_folds={num_folds}: only {len(unique_groups)} distinct values to split")
    fold_of_group = dict(zip(np.random.default_rng(seed).permutation(unique_groups),
                             np.arange(len(unique_groups)) % num_folds))
    fold = np.array([fold_of_group[g] for g in groups])
    predictions = np.empty_like(targets)
    for k in range(num_folds):
        train, test = fold != k, fold == k
        if train.sum() <= num_components:
            raise ValueError(f"num_components={num_components}: needs more than {int(train.sum())} training rows")
        mean = features[train].mean(axis=0)
        _, _, vt = np.linalg.svd(features[train] - mean, full_matrices=False)
        basis = vt[:num_components].T
        design = lambda x: np.hstack([(x - mean) @ basis, np.ones((len(x), 1))])  # noqa: E731
        coef, *_ = np.linalg.lstsq(design(features[train]), targets[train], rcond=None)
        predictions[test] = design(features[test]) @ coef
    sst = ((targets - targets.mean(axis=0)) ** 2).sum(axis=0)
    return 1.0 - ((targets - predictions) ** 2).sum(axis=0) / sst


def component_cap(d_model: int, num_values: int, cfg: FeaturePresenceConfig) -> int:
    """The most components the probe fits: ``min(d_model, values in the smallest training fold //
    values_per_component)``. ValueError (naming the numbers) when that is below one, or when the task has too
    few values for the folds or the shuffled-value null."""
    if num_values < cfg.num_folds:
        raise ValueError(f"probe: the task has {num_values} values, fewer than num_folds={cfg.num_folds}")
    if factorial(num_values) < cfg.null_shuffles:
        raise ValueError(f"probe null: {num_values} values have only {factorial(num_values)} relabellings, fewer "
                         f"than null_shuffles={cfg.null_shuffles}")
    fold_values = num_values - -(-num_values // cfg.num_folds)  # values left after holding out the largest fold
    cap = min(d_model, fold_values // cfg.values_per_component)
    if cap < 1:
        raise ValueError(f"probe: a training fold holds {fold_values} of the task's {num_values} values, fewer than "
                         f"values_per_component={cfg.values_per_component} for one component; use a task with "
                         "more values or lower values_per_component")
    return cap


def feature_presence(model: OLMo, task: Task, cfg: FeaturePresenceConfig) -> Dict:
    """R^2 of the order probe per position for one model, each with its shuffled-value null.

    Returns ``{"r2": {"tok1": .., "tok2": ..}, "null_r2": {"tok1": {"mean", "q95", "max"}, ..},
    "num_components_used", "component_cap", "config"}``.
    """
    cfg.validate()
    require_analysis(task, "probe")  # the task's kind says whether this analysis is defined for it
    cap = component_cap(model.config.d_model, task.num_values, cfg)
    used = min(cfg.num_components, cap)
    rng = np.random.default_rng(cfg.seed)
    num_instances = task.num_values**2
    ids = np.sort(rng.choice(num_instances, size=min(cfg.max_instances, num_instances), replace=False))
    residuals = residual_streams(model, prompt_ids(task, ids), cfg.positions)[cfg.residual]
    values = task.values[ids]
    relabellings = np.stack([rng.permutation(task.num_values) for _ in range(cfg.null_shuffles)], axis=1)
    r2, null = {}, {}
    for column, position in enumerate(cfg.positions):
        value = values[:, position]
        targets = np.column_stack([value, relabellings[value]])  # column 0: the values; then the shuffles
        scores = pca_probe_r2s(residuals[:, column].numpy(), targets, value, used, cfg.num_folds, cfg.seed)
        name = f"tok{position + 1}"
        r2[name] = float(scores[0])
        null[name] = {"mean": float(scores[1:].mean()), "q95": float(np.quantile(scores[1:], 0.95)),
                      "max": float(scores[1:].max())}
    return {
        "r2": r2,
        "null_r2": null,
        "num_components_used": used,
        "component_cap": cap,
        "cap_rule": f"min(d_model={model.config.d_model}, training-fold values // values_per_component="
                    f"{cfg.values_per_component})",
        "config": asdict(cfg),
    }
