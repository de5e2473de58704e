"""``olmo-inject analyze <analysis> ...``: the offline analyses over a directory of checkpoints, and the figures.

    olmo-inject analyze convert  RUN/step1000-unsharded              # HF conversion + logit check
    olmo-inject analyze das      RUN --task cmp --layers 0 1 2       # DAS sweep per checkpoint, directions saved
    olmo-inject analyze probe    RUN --task cmp                      # feature presence (R^2) per checkpoint + Fig. 7
    olmo-inject analyze fourier  RUN --task add --tau 3              # Fourier modes per checkpoint
    olmo-inject analyze localise RUN --task cmp                      # MLP ablations + task neurons per checkpoint
    olmo-inject analyze figures  SAVE_FOLDER ... --task cmp          # Figs. 5, 6, 8, 9, 11, 12 from metrics.jsonl

``RUN`` is a checkpoint directory or a save folder holding ``stepN[-unsharded]`` directories. Results go to
``--out`` (default ``<RUN>/analysis``) as ``<analysis>.json``: one entry per checkpoint plus the settings used.
Each entry of das, probe and fourier carries its null or baselines and, under ``step0``, the same numbers on the
run's step-0 checkpoint (``null`` with a note when the run has none); one line per checkpoint says both.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from tqdm import tqdm

from .checkpoint_loading import LoadedCheckpoint, checkpoint_task, find_checkpoints, load_checkpoint
from .das import DasConfig, das_sweep, save_direction
from .feature_presence import FeaturePresenceConfig, feature_presence
from .fourier_modes import FourierConfig, fourier_modes
from .hf_conversion import assert_same_logits, convert_to_hf
from .layer_localisation import LocalisationConfig, mlp_ablation, task_neurons
from olmo_injection.neurons import save_task_neurons


def _add_config_arguments(parser: argparse.ArgumentParser, config_class) -> None:
    """One ``--field`` option per dataclass field (lists take several values), defaults from the dataclass."""
    for f in fields(config_class):
        default = getattr(config_class(), f.name)
        kind = type(default[0]) if isinstance(default, list) and default else type(default)
        if default is None:
            kind = int
        nargs = "+" if isinstance(default, list) or f.name == "residuals" else None
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, nargs=nargs, default=default)


def _config_from_args(config_class, args: argparse.Namespace):
    cfg = config_class(**{f.name: getattr(args, f.name) for f in fields(config_class)})
    cfg.validate()  # bad input fails here, before any checkpoint is loaded
    return cfg


Headline = Callable[[Dict], Dict[str, Any]]
"""The numbers of one checkpoint's result that are compared with the step-0 checkpoint's."""


def _over_checkpoints(args: argparse.Namespace, name: str, analyse: Callable[[LoadedCheckpoint, Path], Dict],
                      headline: Optional[Headline] = None, describe: Optional[Callable[[Dict], str]] = None
                      ) -> List[Dict]:
    """Run ``analyse`` on every checkpoint of ``args.run`` and write ``<name>.json``.

    With ``headline``, each result gets ``step0``: the headline numbers of the step-0 checkpoint's result (None,
    and the JSON a ``step0_note``, when the run has no step-0 checkpoint); ``describe`` prints one line per result.
    """
    paths = find_checkpoints(args.run)
    out = Path(args.out) if args.out else Path(args.run) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path in tqdm(paths, desc=f"{name}: checkpoints"):
        started = time.perf_counter()
        checkpoint = load_checkpoint(path)
        result = analyse(checkpoint, out)
        results.append({"run": Path(args.run).name, "checkpoint": str(path), "step": checkpoint.step,
                        "seconds": time.perf_counter() - started, **result})
    written: Dict[str, Any] = {"analysis": name, "arguments": _jsonable(vars(args)), "results": results}
    if headline is not None:
        step0 = next((r for r in results if r["step"] == 0), None)
        for result in results:
            result["step0"] = headline(step0) if step0 is not None else None
        if step0 is None:
            written["step0_note"] = f"no step-0 checkpoint under {args.run}: nothing to compare with"
            print(f"{name}: {written['step0_note']}")
    for result in results if describe is not None else []:
        print(f"{name} step {result['step']}: {describe(result)}")
    target = out / f"{name}.json"
    target.write_text(json.dumps(written, indent=1))
    print(f"{name}: {len(results)} checkpoint(s) -> {target}")
    return results


def _jsonable(arguments: Dict[str, Any]) -> Dict[str, Any]:
    kept = (str, int, float, bool, list, type(None))
    return {k: v for k, v in arguments.items() if k != "func" and isinstance(v, kept)}


def _convert(args: argparse.Namespace) -> int:
    def analyse(checkpoint: LoadedCheckpoint, out: Path) -> Dict:
        hf = convert_to_hf(checkpoint.model)
        generator = torch.Generator().manual_seed(args.seed)
        vocab = checkpoint.config.model.vocab_size
        ids = torch.randint(0, vocab, (4, min(32, checkpoint.config.model.max_sequence_length)), generator=generator)
        difference = assert_same_logits(checkpoint.model, hf, ids, atol=args.atol)
        if args.save_hf:
            hf.save_pretrained(out / f"hf-step{checkpoint.step}")
        return {"max_logit_difference": difference}

    _over_checkpoints(args, "convert", analyse)
    return 0


def _das(args: argparse.Namespace) -> int:
    cfg = _config_from_args(DasConfig, args)

    def analyse(checkpoint: LoadedCheckpoint, out: Path) -> Dict:
        hf = convert_to_hf(checkpoint.model)
        sweep = das_sweep(hf, checkpoint_task(checkpoint, args.task), cfg)
        stem = out / f"das_direction_step{checkpoint.step}"
        save_direction(sweep["best"], stem)
        for r in sweep["results"]:
            r.pop("direction")
        return {"sweep": sweep["results"], "best_iia": sweep["best"]["iia"], "best_site": _site(sweep["best"]),
                "best_exceeds_baselines": sweep["best"]["exceeds_baselines"], "direction_file": str(stem) + ".pt"}

    def headline(result: Dict) -> Dict[str, Any]:
        return {"best_iia": result["best_iia"], "iia": {_site(r): r["iia"] for r in result["sweep"]}}

    def describe(result: Dict) -> str:
        best = next(r for r in result["sweep"] if _site(r) == result["best_site"])
        verdict = "above both baselines" if best["exceeds_baselines"] else "NOT above its baselines"
        step0 = result["step0"]
        return (f"best IIA {best['iia']:.3f} at {result['best_site']} ({verdict}: source value "
                f"{best['source_value_baseline']:.3f}, base answer {best['base_answer_baseline']:.3f}); "
                + (f"same site at step 0: {step0['iia'].get(result['best_site'], float('nan')):.3f}"
                   if step0 else "no step-0 checkpoint"))

    _over_checkpoints(args, "das", analyse, headline, describe)
    return 0


def _site(result: Dict) -> str:
    return f"layer{result['layer']}/pos{result['position']}/{result['variable']}"


def _probe(args: argparse.Namespace) -> int:
    from .figures import feature_presence_over_checkpoints

    cfg = _config_from_args(FeaturePresenceConfig, args)
    out = Path(args.out) if args.out else Path(args.run) / "analysis"
    def headline(result: Dict) -> Dict[str, Any]:
        return {"r2": result["r2"], "null_r2_q95": {k: v["q95"] for k, v in result["null_r2"].items()}}

    def describe(result: Dict) -> str:
        parts = [f"R^2 {k} {v:.3f} (null 95th pct {result['null_r2'][k]['q95']:.3f}"
                 + (f", step 0 {result['step0']['r2'][k]:.3f})" if result["step0"] else ")")
                 for k, v in result["r2"].items()]
        return f"{', '.join(parts)}; {result['num_components_used']} PCs (cap {result['component_cap']})"

    results = _over_checkpoints(
        args, "probe", lambda c, _out: feature_presence(c.model, checkpoint_task(c, args.task), cfg), headline, describe
    )
    feature_presence_over_checkpoints(results, out)
    return 0


def _fourier(args: argparse.Namespace) -> int:
    cfg = _config_from_args(FourierConfig, args)

    def headline(result: Dict) -> Dict[str, Any]:
        return {"total_modes": result["total_modes"], "total_modes_tau": result["total_modes_tau"]}

    def describe(result: Dict) -> str:
        step0 = result["step0"]
        at_step0 = f"step 0: {step0['total_modes']} ({step0['total_modes_tau']})" if step0 else "no step-0 checkpoint"
        return (f"{result['total_modes']} modes against the value-relabelling null "
                f"({result['total_modes_tau']} against tau={cfg.tau} alone); {at_step0}")

    _over_checkpoints(args, "fourier", lambda c, _out: fourier_modes(c.model, checkpoint_task(c, args.task), cfg),
                      headline, describe)
    return 0


def _localise(args: argparse.Namespace) -> int:
    cfg = _config_from_args(LocalisationConfig, args)

    def analyse(checkpoint: LoadedCheckpoint, out: Path) -> Dict:
        task = checkpoint_task(checkpoint, args.task)
        neurons = task_neurons(checkpoint.model, task, cfg, source=str(checkpoint.path))
        save_task_neurons(neurons, out / f"task_neurons_{args.task}_step{checkpoint.step}.json")
        return {"ablation": mlp_ablation(checkpoint.model, task, cfg), "task_neurons": asdict(neurons)}

    from .figures import mlp_ablation_over_checkpoints

    results = _over_checkpoints(args, "localise", analyse)
    mlp_ablation_over_checkpoints(results, args.task, Path(args.out) if args.out else Path(args.run) / "analysis")
    return 0


def _figures(args: argparse.Namespace) -> int:
    from .figures import all_log_figures
    from .run_logs import find_run_folders, read_online_run, read_run_folder

    runs = []
    for source in args.runs:
        if Path(source).exists():
            folders = find_run_folders(source)
            if not folders:
                raise ValueError(f"runs: {source!r} holds no save folder (config.yaml + metrics.jsonl) at any depth")
            runs += [read_run_folder(p) for p in tqdm(folders, desc=f"reading {source}")]
        else:
            runs.append(read_online_run(source))  # entity/project/run_id
    out = Path(args.out or "figures")
    all_log_figures(runs, args.task[0] if len(args.task) == 1 else args.task, out)
    print(f"figures for {len(runs)} run(s) -> {out}")
    return 0


def _learning_curves(args: argparse.Namespace) -> int:
    from .learning_curves import format_learning_table, learning_curve_figure, learning_table

    run = Path(args.run)
    out = Path(args.out) if args.out else run
    out.mkdir(parents=True, exist_ok=True)
    rows = learning_table(run, threshold=args.threshold)  # refuses a bad threshold before drawing anything
    learning_curve_figure(run, out / "learning_curves.png")
    (out / "learning_table.json").write_text(json.dumps({"save_folder": str(run), "rows": rows}, indent=1))
    print(format_learning_table(rows))
    print(f"figure: {out / 'learning_curves.png'} (data: .csv/.json next to it); table: {out / 'learning_table.json'}")
    return 0


def register(subparsers) -> None:
    """Add ``analyze`` and its sub-commands to ``olmo-inject``'s parser."""
    analyze = subparsers.add_parser("analyze", help="offline analyses of checkpoints and runs", description=__doc__)
    commands = analyze.add_subparsers(dest="analysis", required=True)

    def checkpoint_command(name: str, help_text: str, func, config_class=None, needs_task=True):
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("run", help="checkpoint directory, or a save folder of stepN[-unsharded] directories")
        parser.add_argument("--out", default=None, help="results folder (default: <run>/analysis)")
        if needs_task:
            parser.add_argument("--task", required=True, help="name of the injected task (injection.tasks[*].name)")
        if config_class is not None:
            _add_config_arguments(parser, config_class)
        parser.set_defaults(func=func)
        return parser

    convert = checkpoint_command("convert", "convert to HF OlmoForCausalLM and check the logits", _convert,
                                 needs_task=False)
    convert.add_argument("--atol", type=float, default=1e-4, help="largest allowed |logit difference|")
    convert.add_argument("--seed", type=int, default=0, help="seeds the random check batch")
    convert.add_argument("--save-hf", action="store_true", help="also write the HF model (save_pretrained)")
    checkpoint_command("das", "distributed alignment search (pyvene) for a cmp task", _das, DasConfig)
    checkpoint_command("probe", "order-value probe R^2 on top PCs (feature presence) + Fig. 7", _probe,
                       FeaturePresenceConfig)
    checkpoint_command("fourier", "Fourier modes of a modular task's residual streams (e.g. add)", _fourier,
                       FourierConfig)
    checkpoint_command("localise", "MLP-layer ablations and first-layer task neurons", _localise,
                       LocalisationConfig)

    curves = commands.add_parser("learning-curves", help="one run's task loss and accuracy against step, and when "
                                                         "each task was learned (table)")
    curves.add_argument("run", help="save folder (config.yaml + metrics.jsonl)")
    curves.add_argument("--threshold", type=float, default=0.8, help="test accuracy that counts as learned")
    curves.add_argument("--out", default=None, help="folder for learning_curves.png/.csv/.json and "
                                                     "learning_table.json (default: the save folder)")
    curves.set_defaults(func=_learning_curves)

    figures = commands.add_parser("figures", help="Figs. 5, 6, 8, 9, 11, 12 from runs' metrics records")
    figures.add_argument("runs", nargs="+", help="save folders (or folders of them, any depth) with config.yaml and "
                                                 "metrics.jsonl, or entity/project/run_id on a wandb server")
    figures.add_argument("--task", required=True, nargs="+", help="name(s) of the injected task(s); with several, "
                                                                  "each run gives one row per task it injects")
    figures.add_argument("--out", default=None, help="figures folder (default: ./figures)")
    figures.set_defaults(func=_figures)


def main(argv=None) -> int:
    """``python -m analysis.cli <analysis> ...``: the same sub-commands without the ``olmo-inject`` entry point."""
    parser = argparse.ArgumentParser(prog="python -m analysis.cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["analyze", *(argv if argv is not None else __import__("sys").argv[1:])])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
