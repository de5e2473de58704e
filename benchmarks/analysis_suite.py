"""Time every offline analysis on one 20M-parameter checkpoint on the CPU (target: whole suite < 10 min).

    python benchmarks/analysis_suite.py [--checkpoint RUN/stepN-unsharded --cmp-task cmp --add-task add]

Without ``--checkpoint`` it saves a new 20M model (docs/science.md#model-ladder: 16 layers, d_model 192, MLP 1536,
8 heads; 28,753,920 parameters) as an unsharded checkpoint in a temporary folder and builds T_CMP and T_ADD
(100 values each) with the real tokenizer. Prints and writes (``--out``, JSON) seconds per analysis, with the
machine's load average (other jobs on a shared machine slow every number).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from olmo.config import ModelConfig
from olmo.model import OLMo

from analysis.checkpoint_loading import checkpoint_task, load_checkpoint
from analysis.das import DasConfig, das_sweep
from analysis.feature_presence import FeaturePresenceConfig, feature_presence
from analysis.fourier_modes import FourierConfig, fourier_modes
from analysis.hf_conversion import assert_same_logits, convert_to_hf
from analysis.layer_localisation import LocalisationConfig, mlp_ablation, task_neurons
from olmo_injection.config import InjectionTrainConfig, TaskConfig
from olmo_injection.tasks import OLMO_TOKENIZER_FILE

MODEL_20M = dict(d_model=192, n_layers=16, n_heads=8, mlp_hidden_size=1536, activation_type="swiglu",
                 weight_tying=False, vocab_size=50280, embedding_size=50304, include_bias=False,
                 layer_norm_with_affine=False, rope=True, init_device="cpu", attention_dropout=0.0,
                 residual_dropout=0.0, embedding_dropout=0.0, max_sequence_length=256, eos_token_id=50279,
                 pad_token_id=1)


def save_20m_checkpoint(folder: Path) -> Path:
    """An unsharded checkpoint as ``FullCheckpointer`` lays it out: ``model.pt`` + ``config.yaml``."""
    cfg = InjectionTrainConfig(model=ModelConfig(**MODEL_20M), save_folder=str(folder))
    cfg.tokenizer.identifier = OLMO_TOKENIZER_FILE
    cfg.injection.tasks = [TaskConfig(name="cmp", kind="cmp", seed=0), TaskConfig(name="add", kind="add", seed=1)]
    torch.manual_seed(0)
    model = OLMo(cfg.model)
    assert model.num_params() == 28_753_920
    path = folder / "step0-unsharded"
    path.mkdir(parents=True)
    torch.save(model.state_dict(), path / "model.pt")
    cfg.save(path / "config.yaml")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--cmp-task", default="cmp")
    parser.add_argument("--add-task", default="add")
    parser.add_argument("--das-layers", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; on a shared 2-core machine 2 OpenMP threads ran DAS 3.7x slower than 1")
    parser.add_argument("--out", default="analysis_suite_timings.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    timings = {}

    def timed(name, fn):
        started = time.perf_counter()
        value = fn()
        timings[name] = round(time.perf_counter() - started, 2)
        print(f"{name:>28}: {timings[name]:8.2f} s", flush=True)
        return value

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.checkpoint) if args.checkpoint else save_20m_checkpoint(Path(tmp) / "run")
        checkpoint = timed("load checkpoint", lambda: load_checkpoint(path))
        cmp_task, add_task = timed(
            "build/load tasks",
            lambda: (checkpoint_task(checkpoint, args.cmp_task), checkpoint_task(checkpoint, args.add_task)),
        )
        model = checkpoint.model
        hf = timed("convert to HF", lambda: convert_to_hf(model))
        ids = torch.as_tensor(cmp_task.sequences(range(16)))
        difference = timed("logit check", lambda: assert_same_logits(model, hf, ids))
        probe = timed("feature presence (probe)", lambda: feature_presence(model, cmp_task, FeaturePresenceConfig()))
        fourier = timed("fourier modes", lambda: fourier_modes(model, add_task, FourierConfig()))
        timed("MLP ablation", lambda: mlp_ablation(model, cmp_task, LocalisationConfig()))
        timed("task neurons", lambda: task_neurons(model, cmp_task, LocalisationConfig()))
        das = timed("DAS sweep", lambda: das_sweep(hf, cmp_task, DasConfig(layers=args.das_layers), progress=False))
    timings["total"] = round(sum(timings.values()), 2)
    print(f"{'total':>28}: {timings['total']:8.2f} s")
    summary = {"timings_s": timings, "max_logit_difference": difference, "probe_r2": probe["r2"],
               "fourier_total_modes": fourier["total_modes"], "das_best_iia": das["best"]["iia"],
               "das_sites": [{k: r[k] for k in ("layer", "position", "variable", "iia", "source_value_baseline")}
                             for r in das["results"]],
               "das_layers": args.das_layers, "threads": torch.get_num_threads(),
               "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()}}
    print(f"load average (1, 5, 15 min) before {load_before}, after {os.getloadavg()}")
    Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
