"""DVS128 Gesture clips streamed through the recipe's VGGSNN as if live: real-time factor and per-window latency on
one thread (issue 35's second target, >= 10x real time). The accuracy is not the point: the labels are synthetic.

The shared data holds no original DvsGesture recording (AEDAT 3.1), only ten real DVS128 Gesture clips re-encoded
as SLAYER .bs2 (``slayer_bs2_1450ms/1..10.bs2``, 1,450 ms each, no labels; see its PROVENANCE.md). So:

1. a small folder in the original DvsGesture layout is built under ``--out``: clip ``i`` is written as the AEDAT 3.1
   recording ``userNN_natural.aedat`` (NN = i) whose ``_labels.csv`` holds one gesture spanning the whole clip, of
   class ``(i mod 11) + 1`` -- **a synthetic label** (the clips' real classes are unknown) -- and
   ``trials_to_train.txt`` / ``trials_to_test.txt`` list clips 1-8 / 9-10;
2. ``configs/dvs_gesture_vggsnn.toml`` (VGGSNN, T = 16 frames of 2x48x48, split_by time) is trained on it for a few
   epochs on the CPU (``sparsesnn train`` with ``--set`` overrides: no compile, no channels-last, small batches), or
   ``--run RUN_DIR`` reuses a run;
3. every clip's .bs2 file is streamed end to end (:func:`sparsesnn.data.stream.iter_events`, decoding incremental)
   through :func:`sparsesnn.deploy.stream.stream_run` (the run deployed at batch 1, binned with its own framing:
   split_by time over a nominal 1,450 ms sample, so one window = 1,450 ms / 16 = 90.625 ms) and
   :func:`~sparsesnn.deploy.stream.stream_events`, one thread, one step per window, ``--rounds`` passes.

Reported: the real-time factor (the clips' event time span / wall time of decoding + binning + stepping), the
per-window step latency p50 / p99, which layers deploy made event-driven, and where a step's time goes: one step of
the model as trained (dense, its neurons streaming) against the deployed model on the same frames, and the deployed
model's time per top-level layer.

    PYTHONPATH=. python bench/dvs_gesture_stream.py --json bench/out/dvs_gesture_stream.json
    PYTHONPATH=. python bench/dvs_gesture_stream.py --run bench/out/dvs_gesture_stream/run --json ...
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.event_writers (the AEDAT 3.1 writer)
from benchutil import emit, loadavg, machine
from stream_latency import stream_files

from sparsesnn.data.events import read_bs2
from sparsesnn.data.stream import iter_events
from sparsesnn.deploy.event_layers import EventConv2d, EventLinear
from sparsesnn.deploy.stream import stream, stream_run
from sparsesnn.interop.export import prepare_export
from tests.event_writers import write_aedat31

ROOT = Path(__file__).resolve().parents[1]
_BESIDE = ROOT.parent / "shared" / "data" / "dvs_gesture" / "slayer_bs2_1450ms"
DEFAULT_CLIPS = _BESIDE if _BESIDE.is_dir() else Path("/work/shared/data/dvs_gesture/slayer_bs2_1450ms")
CONFIG = ROOT / "configs" / "dvs_gesture_vggsnn.toml"
CLIP_US = 1_450_000
N_TRAIN = 8


def synthetic_label(i: int) -> int:
    """The class (1..11, the CSV's numbering) given to clip ``i``: synthetic, the clips carry no labels."""
    return i % 11 + 1


def clip_files(clips: Path) -> list[Path]:
    files = sorted(clips.glob("*.bs2"), key=lambda p: int(p.stem))
    if not files:
        raise SystemExit(f"no .bs2 clips under {clips}")
    return files


def build_folder(clips: list[Path], root: Path) -> dict[str, Any]:
    """The DvsGesture-layout folder: one AEDAT 3.1 recording and labels CSV per clip, 8 train / the rest test."""
    root.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    labels: dict[str, int] = {}
    for path in clips:
        i = int(path.stem)
        name = f"user{i:02d}_natural"
        events = read_bs2(path)
        write_aedat31(root / f"{name}.aedat", events)
        label = synthetic_label(i)
        rows = ["class,startTime_usec,endTime_usec", f"{label},{int(events['t'][0])},{int(events['t'][-1]) + 1}"]
        (root / f"{name}_labels.csv").write_text("\r\n".join(rows) + "\r\n")
        names.append(name)
        labels[path.name] = label
    (root / "trials_to_train.txt").write_text("".join(f"{n}.aedat\n" for n in names[:N_TRAIN]))
    (root / "trials_to_test.txt").write_text("".join(f"{n}.aedat\n" for n in names[N_TRAIN:]))
    return {"root": str(root), "train": names[:N_TRAIN], "test": names[N_TRAIN:], "labels_1_based": labels}


def train(folder: Path, run_dir: Path, epochs: int, threads: int, batch: int) -> float:
    sets = {
        "data.root": str(folder),
        "data.params.cache_dir": str(run_dir.parent / "cache"),
        "data.batch_size": batch,
        "data.eval_batch_size": batch,
        "run.epochs": epochs,
        "run.compile": "false",
        "run.channels_last": "false",
        "run.threads": threads,
    }
    cmd = [sys.executable, "-m", "sparsesnn", "train", "--config", str(CONFIG), "--run-dir", str(run_dir)]
    cmd += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    if run_dir.exists():
        cmd.append("--overwrite")
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def time_steps(model: nn.Module, frames: torch.Tensor, repeats: int) -> float:
    """Median ms of one :meth:`ModelStream.step` of the stream ``model`` over ``frames`` ``[n, 1, C, H, W]``."""
    s = model
    per: list[float] = []
    for _ in range(repeats):
        s.reset()
        for f in frames:
            t0 = time.perf_counter()
            s.step(f)
            per.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(per)


def layer_times(s: Any, frames: torch.Tensor) -> list[dict[str, Any]]:
    """Mean ms per step spent in each leaf module of the stream's model (forward hooks; the hooks' own cost is
    included), in call order, over ``frames`` stepped once from rest."""
    totals: dict[str, float] = defaultdict(float)
    starts: dict[str, float] = {}
    handles = []
    named = [(n, m) for n, m in s.model.named_modules() if n and not any(True for _ in m.children())]
    for name, m in named:
        handles.append(m.register_forward_pre_hook(lambda _m, _a, n=name: starts.__setitem__(n, time.perf_counter())))
        handles.append(
            m.register_forward_hook(
                lambda _m, _a, _o, n=name: totals.__setitem__(n, totals[n] + time.perf_counter() - starts[n])
            )
        )
    try:
        s.reset()
        for f in frames:
            s.step(f)
    finally:
        for h in handles:
            h.remove()
    kinds = {n: type(m).__name__ for n, m in named}
    return [{"layer": n, "kind": kinds[n], "ms_per_step": totals[n] * 1e3 / len(frames)} for n in totals]


def rates_and_step_ms(s: Any, frames: torch.Tensor, repeats: int) -> tuple[dict[str, float], float]:
    """Each neuron layer's spike rate over ``frames`` stepped from rest, and the median ms of a step."""
    spikes: dict[str, int] = defaultdict(int)
    size: dict[str, int] = defaultdict(int)
    s.reset()
    for f in frames:
        s.step(f)
        for name, n in s.neurons.items():
            spikes[name] += n.last_spikes
            size[name] += n.v.numel()
    return {n: spikes[n] / size[n] for n in spikes}, time_steps(s, frames, repeats)


def threshold_sweep(s: Any, frames: torch.Tensor, scales: list[float]) -> list[dict[str, Any]]:
    """The deployed stream with every neuron's threshold scaled by each of ``scales`` (a stand-in for a better trained
    network's higher spike rates: the event-driven layers cost grows with their input's spikes), restored after."""
    original = {name: n.params for name, n in s.neurons.items()}
    rows = []
    try:
        for scale in scales:
            for name, n in s.neurons.items():
                n.params = original[name]._replace(v_threshold=original[name].v_threshold * scale)
            rates, ms = rates_and_step_ms(s, frames, 2)
            rows.append({"threshold_scale": scale, "step_ms": ms, "spike_rates": rates})
    finally:
        for name, n in s.neurons.items():
            n.params = original[name]
        s.reset()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=Path, default=DEFAULT_CLIPS, help="the .bs2 clips (default: the shared ten)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "dvs_gesture_stream")
    p.add_argument("--run", type=Path, default=None, help="a trained run of the recipe on the clips (skips training)")
    p.add_argument("--model", type=Path, help="a model.deploy.pt of the run (default: deploy it here)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3, help="passes over the clips (latencies pooled)")
    p.add_argument("--threads", type=int, default=1, help="threads while streaming")
    p.add_argument(
        "--threshold-scales",
        type=float,
        nargs="*",
        default=[1.0, 0.5, 0.25, 0.1],
        help="step cost with every threshold scaled (higher spike rates than a briefly trained net has)",
    )
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    load = loadavg()
    clips = clip_files(args.clips)
    folder = build_folder(clips, args.out / "DvsGesture")
    train_s = None
    run_dir = args.run
    if run_dir is None:
        run_dir = args.out / "run"
        train_s = train(Path(folder["root"]), run_dir, args.epochs, args.train_threads, args.batch_size)
    rs = stream_run(run_dir, model_path=args.model, sample_duration_us=CLIP_US)
    # prepare_export sets the run's own run.threads (the recipe's 2, which deploy measured its choices with): the
    # stream runs on --threads
    torch.set_num_threads(args.threads)
    s, binner = rs.stream, rs.binner
    event_layers = [n for n, m in s.model.named_modules() if isinstance(m, (EventConv2d, EventLinear))]
    dense_layers_kept = [n for n, m in s.model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    figures, finals = stream_files(s, binner, clips, args.rounds, unit="clip")
    predictions = {path.name: final + 1 for path, final in zip(clips, finals, strict=True)}  # 1-based like the labels
    test_clips = [c.name for c in clips[N_TRAIN:]]
    # where a step's time goes: the same live frames through the model as trained (dense) and the deployed one
    binner.reset()
    frames = torch.from_numpy(np.ascontiguousarray(binner.frames(iter_events(clips[-1])))).unsqueeze(1)
    dense = stream(prepare_export(run_dir, device="cpu").model, frame_dims=4)
    torch.set_num_threads(args.threads)  # prepare_export set the run's threads again
    assert torch.get_num_threads() == args.threads
    dense.step(frames[0])
    dense_ms = time_steps(dense, frames, 2)
    deployed_ms = time_steps(s, frames, 2)
    layers = layer_times(s, frames)
    dense_layers = layer_times(dense, frames)
    sweep = threshold_sweep(s, frames, args.threshold_scales)
    result = {
        "run": str(run_dir),
        "clips": str(args.clips),
        "folder": folder,
        "labels": "SYNTHETIC: clip i -> class (i mod 11) + 1; the clips carry no labels",
        "model": rs.source,
        "deploy_chosen": rs.chosen,
        "event_driven_layers": event_layers,
        "dense_layers": dense_layers_kept,
        "deploy_report": "not reachable: RunStream keeps only report.chosen",
        "window_us": float(binner.window_us),
        "time_steps": int(binner.time_steps or rs.config.data.time_steps),
        "train_s": train_s,
        "train_epochs": args.epochs if args.run is None else None,
        "n_clips": len(clips),
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        **figures,
        "predictions_1_based": predictions,
        "accuracy_test_clips": sum(predictions[c] == folder["labels_1_based"][c] for c in test_clips) / len(test_clips),
        "accuracy_train_clips": sum(predictions[c.name] == folder["labels_1_based"][c.name] for c in clips[:N_TRAIN])
        / N_TRAIN,
        "step_ms_dense": dense_ms,
        "step_ms_deployed": deployed_ms,
        "layer_ms_deployed": layers,
        "layer_ms_dense": dense_layers,
        "threshold_sweep": sweep,
        "machine": machine(load, malloc_tuned=False),
    }
    emit(result, markdown(result), args.json)
    return 0


def markdown(r: dict[str, Any]) -> str:
    train = f"{r['train_s']:.0f} s ({r['train_epochs']} epochs)" if r["train_s"] is not None else "given"
    lines = [
        f"## Streaming {r['n_clips']} DVS Gesture clips x {r['rounds']} rounds ({r['run']}, {r['threads']} thread(s), "
        f"batch 1, window {r['window_us'] / 1e3:.3f} ms, T = {r['time_steps']}; labels synthetic)",
        "",
        "| windows | events | real-time factor | per clip: median / worst | events/s | step p50 ms | step p99 ms | "
        "one step dense / deployed ms | training | accuracy test / train clips |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {r['windows']:,} | {r['events']:,} | **{r['realtime_factor']:.1f}x** | "
        f"{r['realtime_factor_per_clip_median']:.1f}x / {r['realtime_factor_per_clip_min']:.1f}x | "
        f"{r['events_per_s']:,.0f} | {r['latency_ms_p50']:.2f} | {r['latency_ms_p99']:.2f} | "
        f"{r['step_ms_dense']:.2f} / {r['step_ms_deployed']:.2f} | {train} | "
        f"{r['accuracy_test_clips'] * 100:.0f} % / {r['accuracy_train_clips'] * 100:.0f} % |",
        "",
        f"deploy chose: {r['deploy_chosen']}; event-driven: {', '.join(r['event_driven_layers']) or 'none'}; "
        f"dense: {', '.join(r['dense_layers']) or 'none'}",
        "",
        "## A step's time per layer (ms, mean over one clip's windows)",
        "",
        "| layer | deployed | ms | as trained | ms |",
        "|---|---|---|---|---|",
    ]
    dense = {d["layer"]: d for d in r["layer_ms_dense"]}
    for d in r["layer_ms_deployed"]:
        o = dense.get(d["layer"], {"kind": "-", "ms_per_step": float("nan")})
        lines.append(f"| {d['layer']} | {d['kind']} | {d['ms_per_step']:.3f} | {o['kind']} | {o['ms_per_step']:.3f} |")
    total = sum(d["ms_per_step"] for d in r["layer_ms_deployed"])
    total_dense = sum(d["ms_per_step"] for d in r["layer_ms_dense"])
    lines.append(f"| **sum** | | {total:.3f} | | {total_dense:.3f} |")
    names = list(r["threshold_sweep"][0]["spike_rates"]) if r["threshold_sweep"] else []
    lines += [
        "",
        "## Step cost against spike rates (every threshold scaled; one clip, deployed model, dense step "
        f"{r['step_ms_dense']:.2f} ms)",
        "",
        "| threshold x | step ms | real-time factor of the step alone | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for row in r["threshold_sweep"]:
        rates = " | ".join(f"{row['spike_rates'][n] * 100:.2f} %" for n in names)
        lines.append(
            f"| {row['threshold_scale']:g} | {row['step_ms']:.2f} | {r['window_us'] / 1e3 / row['step_ms']:.1f}x | "
            f"{rates} |"
        )
    return "\n".join([*lines, ""])


if __name__ == "__main__":
    sys.exit(main())
