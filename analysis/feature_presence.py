"""Feature presence for T_CMP: how linearly the order value is readable from the first layer's residual stream.

At each token position p (TOK1, TOK2), the value of the token at p is regressed (ordinary least squares) on the
top ``num_components`` principal components of the residual at p. R^2 is cross-validated with folds grouped by
value: a value's rows are never both fitted and scored, so a probe that merely memorises tokens scores ~0 and
only an order that generalises to unseen values scores near 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List

import numpy as np
import torch
from olmo.model import OLMo

from olmo_injection.tasks import Task

from .residual_stream import residual_streams
from .task_prompts import TOKEN_POSITIONS, prompt_ids


@dataclass
class FeaturePresenceConfig:
    """How the order probe is fitted."""

    residual: int = 1
    """Residual index (0 = embedding, l + 1 = output of block l); the paper's "first layer" is 1."""

    num_components: int = 50
    """Principal components kept (the paper: 50)."""

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
    sst = ((targets - targets.mean()) ** 2).sum()
    return float(1.0 - ((targets - predictions) ** 2).sum() / sst)


def feature_presence(model: OLMo, task: Task, cfg: FeaturePresenceConfig) -> Dict:
    """R^2 of the order probe per position for one model: ``{"r2": {"tok1": .., "tok2": ..}, "config": ..}``."""
    cfg.validate()
    if task.kind != "cmp":
        raise ValueError(f"task {task.name!r} has kind {task.kind!r}: feature presence is defined for 'cmp'")
    rng = np.random.default_rng(cfg.seed)
    num_instances = task.num_values**2
    ids = np.sort(rng.choice(num_instances, size=min(cfg.max_instances, num_instances), replace=False))
    residuals = residual_streams(model, prompt_ids(task, ids), cfg.positions)[cfg.residual]
    values = task.values[ids]
    r2 = {}
    for column, position in enumerate(cfg.positions):
        value = values[:, position]
        r2[f"tok{position + 1}"] = pca_probe_r2(
            residuals[:, column].numpy(), value, value, cfg.num_components, cfg.num_folds, cfg.seed
        )
    return {"r2": r2, "config": asdict(cfg)}
