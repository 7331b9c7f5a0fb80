"""A trained event-camera run streamed file by file as if live: real-time factor, per-window latency, and the
accuracy against time (issue 35).

For each test file (``--data``: ``LABEL/NAME.bin`` files, N-MNIST's layout; default the shared N-MNIST test subset),
on one thread, end to end: the file is decoded incrementally (:func:`sparsesnn.data.stream.iter_events`), binned with
the run's own framing (:meth:`~sparsesnn.data.stream.EventBinner.from_data_config`) and stepped window by window
through the run's deployed model at batch 1 with its membranes carried (:func:`sparsesnn.deploy.stream.stream_run`,
:func:`~sparsesnn.deploy.stream.stream_events`), every window of the file including the last, partial one. Reported:

- the real-time factor: the files' total event time span (first to last event) / the total wall time of decoding,
  binning and stepping them; and per file, its median and worst;
- the per-window step latency p50 / p99 over every window of every round;
- events handled per second;
- the accuracy of the answer at the end of each file (argmax of the mean output over its windows);
- the accuracy against time on the live windows: the first ``T`` windows of each file stepped from rest, the
  answer after each step (:func:`~sparsesnn.deploy.stream.early_decision_curve`), with the margin rule; the same on
  the dataset's own frames of the test split (each sample's span cut into ``T`` equal windows, which a live stream
  cannot know in advance) for comparison. Written as JSON and PNG beside ``--json``.

    PYTHONPATH=. python bench/stream_latency.py --run bench/out/nmnist_convnet_12ep --json bench/out/stream_latency.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import emit, loadavg, machine

from sparsesnn.data.stream import iter_events
from sparsesnn.deploy.stream import (
    early_decision_curve,
    stream_events,
    stream_outputs,
    stream_run,
    write_early_decision,
)

_BESIDE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nmnist" / "Test"
DEFAULT_DATA = _BESIDE if _BESIDE.is_dir() else Path("/work/shared/data/nmnist/Test")


def labelled_files(root: Path, limit: int | None) -> list[tuple[Path, int]]:
    files = sorted(
        (p, int(p.parent.name))
        for p in root.glob("*/*")
        if p.suffix in (".bin", ".bs2", ".aedat", ".aedat4") and p.parent.name.isdigit()
    )
    return files[:limit] if limit else files


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def stream_files(
    s: Any, binner: Any, paths: list[Path], rounds: int, unit: str = "file", **read: int
) -> tuple[dict[str, Any], list[int]]:
    """Every file of ``paths`` streamed ``rounds`` times through ``s`` and ``binner`` (:func:`stream_events`, one step
    per window), after one warm-up stream of the first file: the pooled figures (real-time factor over all files and
    per ``unit``, events/s, per-window step latency) and each file's final prediction in the first round."""
    stream_events(s, binner, iter_events(paths[0], **read))  # warm-up: numba, oneDNN primitives, file cache
    latencies: list[float] = []
    per_file_rtf: list[float] = []
    span = wall = 0.0
    events = windows = 0
    predictions: list[int] = []
    for r in range(rounds):
        for path in paths:
            window_ms: list[float] = []
            out = stream_events(
                s, binner, iter_events(path, **read), on_window=lambda w, acc=window_ms: acc.append(w["latency_ms"])
            )
            latencies.extend(window_ms)
            per_file_rtf.append(out["realtime_factor"])
            span += out["stream_s"]
            wall += out["wall_s"]
            events += out["events"]
            windows += out["windows"]
            if r == 0:
                predictions.append(int(out["final_prediction"]))
    figures = {
        "events": events,
        "windows": windows,
        "stream_s": span,
        "wall_s": wall,
        "realtime_factor": span / wall,
        f"realtime_factor_per_{unit}_median": statistics.median(per_file_rtf),
        f"realtime_factor_per_{unit}_min": min(per_file_rtf),
        "events_per_s": events / wall,
        "latency_ms_p50": percentile(latencies, 50),
        "latency_ms_p99": percentile(latencies, 99),
        "latency_ms_max": max(latencies),
    }
    return figures, predictions


def live_frames(binner: Any, path: Path, steps: int) -> torch.Tensor:
    """The first ``steps`` live windows of a file (zero frames appended if it ends earlier): ``[steps, 2, H, W]``."""
    binner.reset()
    frames = binner.frames(iter_events(path))[:steps]
    if len(frames) < steps:
        frames = np.concatenate([frames, np.zeros((steps - len(frames), *binner.frame_shape), np.float32)])
    return torch.from_numpy(np.ascontiguousarray(frames))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a trained run on event data (e.g. configs/nmnist_convnet)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LABEL/FILE event files (default: N-MNIST Test)")
    p.add_argument("--model", type=Path, help="a model.deploy.pt of the run (default: deploy it here)")
    p.add_argument("--rounds", type=int, default=3, help="passes over the files (latencies pooled)")
    p.add_argument("--limit", type=int, default=None, help="only the first N files")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sample-duration-us", type=int, default=None, help="for framings without a nominal duration")
    p.add_argument(
        "--chunk-events", type=int, default=None, help="events per read (default: the reader's; 256 is ~20 ms here)"
    )
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    read = {} if args.chunk_events is None else {"chunk_events": args.chunk_events}
    load = loadavg()
    torch.set_num_threads(args.threads)
    rs = stream_run(args.run, model_path=args.model, sample_duration_us=args.sample_duration_us)
    files = labelled_files(args.data, args.limit)
    if not files:
        p.error(f"no LABEL/FILE event files under {args.data}")
    s, binner = rs.stream, rs.binner
    figures, predictions = stream_files(s, binner, [path for path, _ in files], args.rounds, **read)
    correct_end = sum(prediction == label for prediction, (_, label) in zip(predictions, files, strict=True))
    steps = int(binner.time_steps or rs.config.data.time_steps)
    labels = torch.tensor([label for _, label in files])
    frames = torch.stack([live_frames(binner, path, steps) for path, _ in files], 1)  # [T, N, 2, H, W]
    outputs, _ = stream_outputs(s, [(frames[:, i : i + 25], labels[i : i + 25]) for i in range(0, len(files), 25)])
    out_dir = (args.json.parent if args.json is not None else Path("bench/out")) / "stream_latency"
    live = write_early_decision(
        early_decision_curve(outputs, labels), out_dir, "live_windows", f"{rs.config.run.name}: live windows"
    )
    dataset = write_early_decision(
        early_decision_curve(*stream_outputs(s, rs.test_batches(50))),
        out_dir,
        "dataset_frames",
        f"{rs.config.run.name}: the dataset's frames",
    )
    result = {
        "run": str(args.run),
        "data": str(args.data),
        "model": rs.source,
        "deploy_chosen": rs.chosen,
        "window_us": float(binner.window_us),
        "time_steps": steps,
        "files": len(files),
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "chunk_events": args.chunk_events,
        **figures,
        "accuracy_end_of_file": correct_end / len(files),
        "live_windows": live,
        "dataset_frames": dataset,
        "machine": machine(load, malloc_tuned=False),
    }
    emit(result, markdown(result), args.json)
    return 0


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"## Streaming {r['files']} files x {r['rounds']} rounds ({r['run']}, {r['threads']} thread(s), batch 1, "
        f"{r['chunk_events'] or 'default'} events per read)",
        "",
        "| windows | events | real-time factor | per file: median / worst | events/s | step p50 ms | step p99 ms | "
        "accuracy at end of file |",
        "|---|---|---|---|---|---|---|---|",
        f"| {r['windows']:,} | {r['events']:,} | **{r['realtime_factor']:.0f}x** | "
        f"{r['realtime_factor_per_file_median']:.0f}x / {r['realtime_factor_per_file_min']:.0f}x | "
        f"{r['events_per_s']:,.0f} | {r['latency_ms_p50']:.3f} | {r['latency_ms_p99']:.3f} | "
        f"{r['accuracy_end_of_file'] * 100:.1f} % |",
        "",
        "## Accuracy against time (answer = argmax of the mean output so far)",
        "",
        "| fraction of T | " + " | ".join(f"{f:.3g}" for f in r["live_windows"]["fraction_of_T"]) + " |",
        "|---|" + "---|" * len(r["live_windows"]["accuracy"]),
    ]
    for key, label in (("live_windows", "live windows, %"), ("dataset_frames", "dataset frames, %")):
        lines.append(f"| {label} | " + " | ".join(f"{a * 100:.1f}" for a in r[key]["accuracy"]) + " |")
    lines += [
        "",
        "final accuracy - 1 pt reached at fraction of T: "
        f"{r['live_windows']['within_1pt_fraction']:.3g} (live), {r['dataset_frames']['within_1pt_fraction']:.3g} "
        "(dataset frames)",
        "",
        "## Margin rule (answer once p1 - p2 of the softmax of the mean output >= threshold)",
        "",
        "| frames | threshold | accuracy % | mean fraction of T waited | decided before T |",
        "|---|---|---|---|---|",
    ]
    for key in ("live_windows", "dataset_frames"):
        for m in r[key]["margin_rule"]:
            lines.append(
                f"| {key.replace('_', ' ')} | {m['threshold']:g} | {m['accuracy'] * 100:.1f} | "
                f"{m['mean_fraction_of_T']:.3f} | {m['decided_before_T'] * 100:.0f} % |"
            )
    return "\n".join([*lines, ""])


if __name__ == "__main__":
    sys.exit(main())
