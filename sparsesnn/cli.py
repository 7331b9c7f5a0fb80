"""Command line: ``sparsesnn train | eval | export | info``.

    sparsesnn train --config configs/digits_rigl.toml [--set sparse.density=0.05 ...] [--run-dir DIR] [--quiet]
    sparsesnn train --resume RUN_DIR
    sparsesnn eval RUN_DIR [--deploy]
    sparsesnn export RUN_DIR --format pt|safetensors|nir|deploy [--out PATH] [--dt SECONDS]
    sparsesnn sweep --config FILE --grid sparse.method=rigl,set --grid sparse.density=0.5,0.1 [--seeds 3] [--jobs N]
    sparsesnn report RUN_OR_SWEEP_DIR... [--out DIR] [--reference FILE]
    sparsesnn stream RUN_DIR --input FILE [--window-us W] [--realtime] | --curve DIR
    sparsesnn info [METHOD|MODEL|DATASET|NEURON] [--config-keys]

Exit codes: 0 success, 2 bad input (config, data, checkpoint; also a run directory another process is training into),
3 training diverged, 128 + the signal when stopped by one with the checkpoint written first: 130 (Ctrl-C), 143
(SIGTERM), 138 (SIGUSR1).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from sparsesnn.core.errors import ConfigError, SparseSNNError, TrainingDivergedError
from sparsesnn.core.settings import describe_settings
from sparsesnn.sparse.settings import SHARED_KEYS
from sparsesnn.train.runtime import tune_allocator

_CHECKPOINT_ARG: dict[str, object] = {
    "choices": ("last", "selected"),
    "default": "last",
    "help": "last: the run's latest checkpoint (default); selected: the epoch of best validation accuracy "
    "(runs with data.validation_samples > 0)",
}

_DEVICE_HELP = "device to rebuild the run on (default: the run's own, or cpu where this machine lacks it)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sparsesnn", description="Sparse structure learning for spiking neural networks")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a TOML config, or resume a run")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, help="TOML recipe (see configs/)")
    src.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set sparse.density=0.05 (repeatable)",
    )
    t.add_argument("--run-dir", type=Path, help="run directory (default: run.out_dir/run.name)")
    t.add_argument("--device", help="with --resume: continue on this device (cpu, cuda, cuda:N, auto)")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="with --config: start a new run in a --run-dir that already holds a run's files (or your own "
        "config.toml); they are moved to RUN_DIR/previous-<time>/ first, nothing is deleted",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")

    e = sub.add_parser("eval", help="evaluate the checkpoint of a run on its test split")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--checkpoint", **_CHECKPOINT_ARG)
    e.add_argument("--device", help=_DEVICE_HELP)
    e.add_argument("--quiet", action="store_true")
    e.add_argument(
        "--deploy",
        action="store_true",
        help="the finalized, compacted model deployed (event-driven layers where they measure faster, on the CPU) "
        "against the compacted model: accuracy, identical predictions, time per sample at batch 1",
    )

    x = sub.add_parser("export", help="write the finalized, compacted model of a run (pt, safetensors or NIR)")
    x.add_argument("run_dir", type=Path)
    x.add_argument(
        "--format",
        required=True,
        choices=("pt", "safetensors", "nir", "deploy"),
        help="pt: torch.save state dict + description; safetensors; nir: Neuromorphic IR (HDF5); deploy: pt plus "
        "the event-driven layer choices measured on this machine (sparsesnn.deploy.load_deployed)",
    )
    x.add_argument("--checkpoint", **_CHECKPOINT_ARG)
    x.add_argument("--device", help=_DEVICE_HELP)
    x.add_argument(
        "--out", type=Path, metavar="PATH", help="output file (default: RUN_DIR/model.<ext>, model_selected.<ext>)"
    )
    x.add_argument(
        "--force",
        action="store_true",
        help="export even while another process trains the run (its checkpoint as it is at this moment)",
    )
    x.add_argument(
        "--dt",
        type=float,
        metavar="SECONDS",
        help="NIR only: duration of one time step; each neuron is written with tau = dt * its time constant in steps "
        "(default 1e-4, the step snnTorch's and SpikingJelly's NIR readers assume)",
    )

    s = sub.add_parser(
        "sweep", help="train every combination of --grid values x seeds, resumable (sparsesnn.experiments.sweep)"
    )
    s.add_argument("--config", type=Path, required=True, help="the base TOML recipe")
    s.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="values of one config key, parsed like --set values (repeatable: the cartesian product)",
    )
    s.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value in every run (repeatable)",
    )
    seeds = s.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, default=1, metavar="S", help="run.seed = 0..S-1 (default 1)")
    seeds.add_argument("--seed-list", metavar="A,B,...", help="these seeds instead of 0..S-1")
    s.add_argument("--out", type=Path, help="directory of the run dirs and sweep.json (default runs/sweeps/<stem>)")
    s.add_argument("--jobs", type=int, help="runs at a time (default: cores // threads per run)")
    s.add_argument("--threads", type=int, help="run.threads of each run (default: cores // jobs)")
    s.add_argument("--dry-run", action="store_true", help="validate and list the runs; train nothing")
    s.add_argument("--report", action="store_true", help="then write the HTML report to OUT/report")

    r = sub.add_parser(
        "report", help="HTML report (plots, tables, results.json) of runs or sweeps (sparsesnn.experiments.report)"
    )
    r.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="run directories or sweep directories")
    r.add_argument("--out", type=Path, help="output directory (default: the runs' common parent/report)")
    r.add_argument(
        "--reference",
        type=Path,
        metavar="FILE",
        help="the papers' reported points to draw (e.g. configs/reference/reported_points.toml)",
    )

    i = sub.add_parser("info", help="list models, datasets and methods, or the settings of one")
    i.add_argument(
        "name", nargs="?", help="a method, model, dataset or neuron kind: its settings, type, default, meaning"
    )
    i.add_argument("--config-keys", action="store_true", help="list every config key with its default")
    _add_stream_parser(sub)
    return p


def _cmd_train(args: argparse.Namespace) -> int:
    from sparsesnn.train.config import load_config
    from sparsesnn.train.trainer import Trainer, new_run_dir

    if args.resume is not None:
        if args.overrides or args.run_dir or args.overwrite:
            raise SystemExit(
                "sparsesnn train: --resume takes the run's own config and continues it; --set, --run-dir and "
                "--overwrite do not apply"
            )
        trainer = Trainer.resume(args.resume, quiet=args.quiet, device=args.device)
        if trainer.dist.is_main:
            print(f"sparsesnn: resuming {args.resume}: {trainer.resume_position()}", file=sys.stderr, flush=True)
    else:
        if args.device:
            raise SystemExit(
                "sparsesnn train: --device moves a run given with --resume; for a new run use --set run.device=..."
            )
        config = load_config(args.config, name_from_run_dir(args.overrides, args.run_dir))
        from sparsesnn.interop.export import EXTENSIONS

        run_dir = new_run_dir(
            config,
            args.run_dir,
            overwrite=args.overwrite,
            exports=tuple("." + ext for ext in EXTENSIONS.values()),
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )
        trainer = Trainer(config, run_dir, quiet=args.quiet)
    summary = trainer.fit()
    if trainer.dist.is_main:
        _print_result(trainer.learner.summary(), summary)
    return 0


def name_from_run_dir(overrides: list[str], run_dir: Path | None) -> list[str]:
    """``overrides`` plus ``run.name = <the run directory's name>`` when ``--run-dir`` is given and no ``--set``
    names the run: a run launched from a recipe is then named after its directory, not after the recipe (whose
    ``run.name`` every run from it would share). Characters ``run.name`` does not allow become '-'.

    >>> name_from_run_dir(["run.epochs=5"], Path("bench/out/fmnist sdsnn"))
    ['run.epochs=5', 'run.name="fmnist-sdsnn"']
    >>> name_from_run_dir(['run.name="mine"'], Path("bench/out/x"))
    ['run.name="mine"']
    """
    from sparsesnn.experiments.sweep import sanitize

    named = any(item.split("=", 1)[0].strip().replace(" ", "") == "run.name" for item in overrides)
    if run_dir is None or named:
        return list(overrides)
    name = sanitize(run_dir.resolve().name.replace(" ", "-"))
    return [*overrides, f"run.name={json.dumps(name)}"]


def _print_result(table: str, summary: dict[str, object]) -> None:
    """The learner's per-layer table (it ends with the whole network's live parameter count), then the run's result
    line, and a reminder when the run ended right after a structural change."""
    print(table)
    if summary.get("final_structure_trained") is False:
        print("note: the final structure changed after the last training step (see the warning above)")
    acc = summary.get("final_test_acc")
    print(
        f"\nfinal test accuracy {float(acc) * 100:.2f} %  (best {float(summary['best_test_acc']) * 100:.2f} % at epoch "  # type: ignore[arg-type]
        f"{summary['best_epoch']})  connection density {float(summary['density']) * 100:.2f} %"  # type: ignore[arg-type]
        f"  run: {summary['run_dir']}"
        if acc is not None
        else "no epoch completed"
    )
    if summary.get("selected_epoch") is not None:
        print(
            f"selected by validation accuracy ({float(summary['selected_val_acc']) * 100:.2f} %): epoch "  # type: ignore[arg-type]
            f"{summary['selected_epoch']}, test accuracy {float(summary['selected_test_acc']) * 100:.2f} %"  # type: ignore[arg-type]
        )


def _cmd_eval(args: argparse.Namespace) -> int:
    from sparsesnn.train.rundir import RunDirLock, describe_holder

    holder = RunDirLock(args.run_dir).holder()
    if holder is not None:
        print(
            f"sparsesnn: warning: {args.run_dir} is being trained by {describe_holder(holder)}; evaluating its "
            "checkpoint as it is now (it changes every epoch)",
            file=sys.stderr,
            flush=True,
        )
    if args.deploy:
        from sparsesnn.deploy.api import evaluate_deployed

        print(json.dumps(evaluate_deployed(args.run_dir, checkpoint=args.checkpoint), indent=2, sort_keys=True))
        return 0

    from sparsesnn.train.run_reader import read_run

    run = read_run(args.run_dir, checkpoint=args.checkpoint, device=args.device)
    result = run.evaluate()
    result["density"] = run.learner.density()
    result["epoch"] = run.epoch
    if not args.quiet:
        print(run.learner.summary())
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from sparsesnn.deploy import export_run_deployed
    from sparsesnn.interop.export import export_dt, export_run

    if args.format == "deploy":
        export_dt("deploy", args.dt)
        result = export_run_deployed(
            args.run_dir, args.out, checkpoint=args.checkpoint, device=args.device, force=args.force
        )
    else:
        result = export_run(
            args.run_dir,
            args.format,
            args.out,
            checkpoint=args.checkpoint,
            device=args.device,
            dt=args.dt,
            force=args.force,
        )
    report = result.report
    print(result.path)
    print(f"parameters: {report.params_before:,} before compaction, {report.params_after:,} after")
    for layer, (before, after) in report.removed.items():
        print(f"  removed {before - after} of {before} units of {layer} ({after} left)")
    for layer, why in report.kept.items():
        print(f"  kept {layer}: {why}")
    if not report.removed and not report.kept:
        print("  no dead units")
    if result.deploy is not None:
        event = [name for name, c in result.deploy["layers"].items() if c["event"]]
        print(f"deploy: event-driven layers {event or 'none'} (measured here at batch 1)")
        for key, label in (("model_ms", "as trained"), ("rewritten_ms", "rewritten"), ("deployed_ms", "deployed")):
            if result.deploy.get(key) is not None:
                print(f"  {label}: {result.deploy[key]:.3f} ms per sample")
    if result.dt is not None:
        print(f"NIR time step dt = {result.dt:g} s (each neuron's tau = dt * its time constant in steps)")
    if result.nir_max_diff is not None:
        print(
            f"NIR file re-simulated on {result.samples} test samples: max |output difference| {result.nir_max_diff:.3g}"
        )
        if result.nir_max_diff > 1e-5:
            print(
                "  (BatchNorm folded into the convs rounds differently; a neuron within ~1e-7 of its threshold "
                "can fire differently: see sparsesnn.interop.nir_write)"
            )
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from sparsesnn.core.errors import ConfigError
    from sparsesnn.experiments.sweep import run_sweep

    if args.seed_list is not None:
        try:
            seeds = [int(v) for v in args.seed_list.split(",")]
        except ValueError:
            raise ConfigError(f"--seed-list expects integers like 0,1,2, got {args.seed_list!r}") from None
    else:
        seeds = list(range(args.seeds))
    result = run_sweep(
        args.config,
        args.grid,
        seeds=seeds,
        sets=args.overrides,
        out_dir=args.out,
        jobs=args.jobs,
        threads=args.threads,
        dry_run=args.dry_run,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    if args.dry_run:
        return 2 if result.invalid else 0
    counts = {st: sum(r.status == st for r in result.runs) for st in ("finished", "failed")}
    print(
        f"sweep: {counts['finished']} of {len(result.runs)} runs finished, {counts['failed']} failed: {result.manifest}"
    )
    if args.report:
        from sparsesnn.experiments.report import build_report

        print(build_report([result.out_dir], result.out_dir / "report"))
    return 1 if result.failed else 0


def _cmd_report(args: argparse.Namespace) -> int:
    import os

    from sparsesnn.experiments.report import build_report, expand_run_dirs

    out = args.out
    if out is None:
        dirs = expand_run_dirs(args.run_dirs)
        out = Path(os.path.commonpath([d.resolve().parent for d in dirs])) / "report"
    print(build_report(args.run_dirs, out, args.reference))
    return 0


def settings_table(kind: str, name: str, settings: type[BaseModel], shared: frozenset[str] = frozenset()) -> str:
    """A plugin's settings as Markdown tables: its own (``[<section>.params]``), then those set elsewhere."""
    rows = describe_settings(settings)
    doc = " ".join((settings.__doc__ or "").strip().split("\n\n")[0].split())
    section = {"method": "sparse", "model": "model", "dataset": "data", "neuron": "neuron"}[kind]
    lines = [f"{kind} {name!r}: {doc}", ""]
    own = [r for r in rows if r["name"] not in shared]
    groups = [(f"[{section}.params]", own)] if own or name != "(every kind)" else []
    if shared:
        where = "shared ([sparse] and the run)" if kind == "method" else f"[{section}] itself"
        groups.append((where, [r for r in rows if r["name"] in shared and r["name"] not in ("kind", "params")]))
    for title, group in groups:
        lines += [f"{title}:", "", "| setting | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['type']} | {r['default']} | {r['description']} |" for r in group]
        if not group:
            lines.append("| (none) | | | |")
        lines.append("")
    return "\n".join(lines).rstrip()


def _cmd_info(args: argparse.Namespace) -> int:
    from sparsesnn.data import DATASETS
    from sparsesnn.models import MODELS
    from sparsesnn.neuron.kinds import NEURONS
    from sparsesnn.sparse import METHODS
    from sparsesnn.train.config import NeuronConfig, config_keys

    if args.config_keys:
        print("\n".join(config_keys()))
        return 0
    if args.name is not None:
        if args.name in METHODS:
            print(settings_table("method", args.name, METHODS[args.name].Settings, SHARED_KEYS))
        elif args.name in MODELS:
            print(settings_table("model", args.name, MODELS[args.name].Settings))
        elif args.name in DATASETS:
            print(settings_table("dataset", args.name, DATASETS[args.name].Settings))
        elif args.name in NEURONS:
            print(settings_table("neuron", args.name, NEURONS[args.name].Settings))
            print("\n" + settings_table("neuron", "(every kind)", NeuronConfig, frozenset(NeuronConfig.model_fields)))
        else:
            known = sorted({*METHODS.names(), *MODELS.names(), *DATASETS.names(), *NEURONS.names()})
            raise ConfigError(f"info {args.name!r}: not a method, model, dataset or neuron kind; choose one of {known}")
        return 0
    print("models:   " + ", ".join(MODELS.names()))
    print("datasets: " + ", ".join(DATASETS.names()))
    print("methods:  " + ", ".join(METHODS.names()))
    return 0


def _add_stream_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    st = sub.add_parser("stream", help="run a run's deployed model on an event file as a live stream, window by window")
    st.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    what = st.add_mutually_exclusive_group(required=True)
    what.add_argument("--input", type=Path, metavar="FILE", help="event file (.bin, .bs2, .aedat, .aedat4)")
    what.add_argument(
        "--curve", type=Path, metavar="DIR", help="write the accuracy-against-time curve of the test split to DIR"
    )
    st.add_argument("--model", type=Path, metavar="PATH", help="a model.deploy.pt (default: deploy the run here)")
    st.add_argument("--window-us", type=int, help="window length in us (default: the run's own framing)")
    st.add_argument("--sample-duration-us", type=int, help="for framings split by sample duration (DVS Gesture)")
    st.add_argument("--realtime", action="store_true", help="pace the file to its timestamps")
    st.add_argument("--reset-every", type=int, default=0, metavar="N", help="reset the neurons every N windows")
    st.add_argument("--checkpoint", **_CHECKPOINT_ARG)  # type: ignore[arg-type]


def _cmd_stream(args: argparse.Namespace) -> int:
    from sparsesnn.data.stream import EventBinner, iter_events
    from sparsesnn.deploy.stream import run_early_decision, stream_events, stream_run

    rs = stream_run(
        args.run_dir, checkpoint=args.checkpoint, model_path=args.model, sample_duration_us=args.sample_duration_us
    )
    if args.curve is not None:
        print(json.dumps(run_early_decision(rs, args.curve), sort_keys=True))
        return 0
    binner = rs.binner
    if args.window_us is not None:
        binner = EventBinner(binner.sensor_size, args.window_us, size=binner.output_hw, time_steps=binner.time_steps)
    summary = stream_events(
        rs.stream,
        binner,
        iter_events(args.input, chunk_events=256) if args.realtime else iter_events(args.input),
        realtime=args.realtime,
        reset_every=args.reset_every,
        on_window=lambda w: print(json.dumps(w), flush=True),
    )
    print(json.dumps({"summary": summary, "input": str(args.input), "model": rs.source}), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    tune_allocator()
    handlers = {
        "train": _cmd_train,
        "eval": _cmd_eval,
        "export": _cmd_export,
        "sweep": _cmd_sweep,
        "report": _cmd_report,
        "info": _cmd_info,
        "stream": _cmd_stream,
    }
    try:
        return handlers[args.command](args)
    except TrainingDivergedError as exc:
        print(f"sparsesnn: {exc}", file=sys.stderr)
        return 3
    except SparseSNNError as exc:
        print(f"sparsesnn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # RunInterrupted: a checkpoint was written first
        print(f"\nsparsesnn: {exc or 'interrupted'}", file=sys.stderr)
        return 128 + int(getattr(exc, "signum", signal.SIGINT))


if __name__ == "__main__":
    sys.exit(main())
