"""Per-run facts the figures group by, read from a run's logged config: model size, task frequency, gap, tokens.

Parameter counts follow OLMo 0.6.0's layout (SwiGLU, no biases, non-parametric layer norm, untied embeddings
unless ``weight_tying``): they reproduce the paper's Table 2 (4M: 6,963,200; 20M: 28,753,920).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from .wandb_logs import RunLog


def model_params(model: Dict[str, Any]) -> int:
    """Parameters of an OLMo model given its logged ``model`` config section."""
    d, layers, heads = model["d_model"], model["n_layers"], model["n_heads"]
    hidden = model.get("mlp_hidden_size") or model.get("mlp_ratio", 4) * d
    kv_dim = (model.get("n_kv_heads") or heads) * (d // heads)
    embedding = (model.get("embedding_size") or model["vocab_size"]) * d
    per_block = d * (d + 2 * kv_dim) + d * d + d * hidden + (hidden // 2) * d
    return embedding * (1 if model.get("weight_tying", True) else 2) + layers * per_block


def tokens_per_step(config: Dict[str, Any]) -> int:
    """Training tokens per optimiser step: global batch (sequences) x sequence length."""
    return int(config["global_train_batch_size"]) * int(config["model"]["max_sequence_length"])


def task_schedule(config: Dict[str, Any], task: str) -> Dict[str, Any]:
    """The logged ``schedule`` of task ``task``; ValueError when the run has no such task."""
    for entry in config.get("injection", {}).get("tasks", []):
        if entry.get("name") == task:
            return entry.get("schedule", {})
    raise ValueError(f"task={task!r}: the run's config has no injected task of that name")


def instances_per_token(config: Dict[str, Any], task: str) -> float:
    """The task's injection frequency in instances per token (gap mode: n / (gap x tokens per step))."""
    schedule = task_schedule(config, task)
    if schedule.get("mode", "frequency") == "gap":
        return schedule.get("n", 1) / (schedule.get("gap", 1) * tokens_per_step(config))
    return float(schedule.get("instances_per_token", 0.0))


def gap(config: Dict[str, Any], task: str) -> Optional[int]:
    """Batches between injections of a gap-mode task; None for frequency mode."""
    schedule = task_schedule(config, task)
    return int(schedule.get("gap", 1)) if schedule.get("mode") == "gap" else None


def run_facts(run: RunLog, task: str) -> Dict[str, Any]:
    """One row of facts about a run: name, params, instances per token, gap, tokens per step."""
    return {
        "run": run.name,
        "params": model_params(run.config["model"]),
        "instances_per_token": instances_per_token(run.config, task),
        "gap": gap(run.config, task),
        "tokens_per_step": tokens_per_step(run.config),
    }
