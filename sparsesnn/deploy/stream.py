"""Streaming inference: a spiking model answering one time step at a time, its neurons' membranes carried over.

A model trained on samples ``[T, B, ...]`` runs every call from rest (``V[-1] = v_reset``, see
:mod:`sparsesnn.neuron.functional`). :func:`stream` turns it into a :class:`ModelStream`, which takes the input as
it arrives, a frame ``[B, ...]`` (or a few, ``[t, B, ...]``) per call, and keeps each neuron's membrane between
calls::

    s = stream(model)                  # the model as given, deploy's rewritten model, or its deployed model
    y_t = s.step(frame_t)              # [B, K]: the output of time step t
    s.reset()                          # back to rest (a new sample)

**Exactness.** Every spiking neuron (our :class:`~sparsesnn.neuron.lif.LIF` / :class:`~sparsesnn.neuron.lif.PLIF`,
or deploy's :class:`~sparsesnn.deploy.lif.InferenceLIF`) is replaced by a :class:`StreamingLIF`, which runs the
inference loop of :mod:`sparsesnn.deploy.lif` from the membrane the previous call left, ``V[-1]`` of this call =
``V[t_prev - 1]`` of the last one, in the same float32 operations as the training kernels. So for the same frames
``x[0] .. x[T-1]``::

    stack(s.step(x[t]) for t in range(T))  ==  model(x)          (after s.reset())

spikes bit for bit, and the outputs too wherever the stateless layers sum in the same order for a batch of ``B``
rows as for ``T * B`` rows (what torch's convolutions and matrix products do on the CPU for the models here; the
tests check it with ``torch.equal``). Stateless layers (convolutions, linear layers, pools, BatchNorm in eval mode,
deploy's event-driven layers, :class:`~sparsesnn.neuron.layers.SeqFolded` / ``TimeFolded``) just run on the steps
given. Deploy's :class:`~sparsesnn.deploy.passes.StepInvariant` computes one step of ``t`` when they are all equal,
which at one step per call is the step itself. A module declared spiking that the stream cannot carry state for (a
user's own neuron, a subclass of LIF whose forward may differ, a peer library's neuron) is refused by name
(:class:`StreamError`). The model must be time-major step by step: its output at step ``t`` a function of the steps
up to ``t`` (every model here; :meth:`ModelStream.check` confirms it on an example).

**Early decisions** (:func:`early_decision_curve`). With outputs ``y[0..T-1]`` (per-step class scores), the answer
after ``t + 1`` steps is ``argmax mean(y[0..t])``. The margin rule answers at the first step where the softmax of
that mean puts ``p1 - p2 >= theta`` between its two most likely classes (at step ``T`` otherwise). The curve gives,
per step, the accuracy of the answer so far, and per threshold the accuracy and the mean number of steps the rule
waited.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparsesnn.data.stream import EventBinner
from sparsesnn.deploy.block_fusion import unfuse
from sparsesnn.deploy.event_layers import EventBackend, EventConv2d, EventLinear
from sparsesnn.deploy.fused import fuse_event_blocks
from sparsesnn.deploy.lif import InferenceLIF, is_plain_lif
from sparsesnn.deploy.passes import set_child
from sparsesnn.deploy.stateful import StreamError, StreamingLIF
from sparsesnn.interop.export import prepare_export
from sparsesnn.neuron.spiking import is_spiking


def _frame_dims(model: nn.Module) -> int | None:
    """The rank of one step's input ``[B, ...]``, read from the first layer with weights: Conv1d/2d/3d -> 3/4/5,
    Linear -> 2 (their event-driven forms alike); None when there is none."""
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return len(m.kernel_size) + 2
        if isinstance(m, EventConv2d):
            return 4
        if isinstance(m, (nn.Linear, EventLinear)):
            return 2
    return None


def _map(out: Any, fn: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, (tuple, list)):
        return type(out)(_map(o, fn) for o in out)
    raise StreamError(f"the stream needs a model that returns a tensor or a tuple of tensors, got {type(out).__name__}")


class ModelStream:
    """A model run step by step with its neurons' state carried (see the module docstring); built by :func:`stream`.

    ``model`` is the copy that runs (eval mode, CPU, float32, its neurons :class:`StreamingLIF`); ``frame_dims`` the
    rank of one step's input ``[B, ...]``; ``steps`` how many steps ran since the last :meth:`reset`."""

    def __init__(self, model: nn.Module, neurons: dict[str, StreamingLIF], frame_dims: int | None) -> None:
        self.model = model
        self.neurons = neurons
        self.frame_dims = frame_dims
        self.steps = 0

    def reset(self) -> None:
        """Every neuron back to rest; the next :meth:`step` starts a new sample."""
        for n in self.neurons.values():
            n.reset()
        self.steps = 0

    @torch.no_grad()
    def step(self, frame: torch.Tensor | Any) -> Any:
        """Run ``frame``: one step ``[B, ...]`` -> that step's output ``[B, ...]``; or ``[t, B, ...]`` -> ``[t, B,
        ...]`` (``t`` steps). A numpy array is taken as float32. Which of the two a frame is, is told by its rank
        against :attr:`frame_dims` (from the first Conv / Linear, or as given to :func:`stream`)."""
        x = frame if isinstance(frame, torch.Tensor) else torch.as_tensor(frame)
        x = x.to(torch.float32)
        if self.frame_dims is None:
            raise StreamError("the stream cannot tell one step from several: pass frame_dims to stream()")
        if x.dim() == self.frame_dims:
            single, x = True, x.unsqueeze(0)
        elif x.dim() == self.frame_dims + 1:
            single = False
        else:
            raise StreamError(
                f"a step is [B, ...] with {self.frame_dims} dims (or [t, B, ...] with {self.frame_dims + 1}), "
                f"got shape {tuple(x.shape)}"
            )
        t = int(x.shape[0])
        out = self.model(x)

        def per_step(y: torch.Tensor) -> torch.Tensor:
            if y.dim() < 1 or y.shape[0] != t:
                raise StreamError(
                    f"the model's output {tuple(y.shape)} is not time-major for {t} step(s): the stream needs an "
                    "output per step"
                )
            return y[0] if single else y

        result = _map(out, per_step)
        self.steps += t
        return result

    def last_spikes(self) -> int:
        """How many spikes the neurons emitted in the last :meth:`step` call."""
        return sum(n.last_spikes for n in self.neurons.values())

    @torch.no_grad()
    def check(self, example: torch.Tensor, reference: nn.Module | None = None) -> float:
        """Run ``example`` ``[T, B, ...]`` step by step from rest and as one call of ``reference`` (by default this
        stream's own model from rest, i.e. its neurons' ``T``-step loop); returns the largest absolute difference of
        the outputs, and raises :class:`StreamError` when a spike or a prediction differs (the model is not
        time-major step by step) or the outputs are not equal up to float rounding. The stream is reset after."""
        self.reset()
        whole = reference(example) if reference is not None else self.model(example)
        self.reset()
        steps = [self.step(example[t]) for t in range(example.shape[0])]
        self.reset()
        wholes = list(whole) if isinstance(whole, (tuple, list)) else [whole]
        per = [list(s) if isinstance(s, (tuple, list)) else [s] for s in steps]
        worst = 0.0
        for i, w in enumerate(wholes):
            got = torch.stack([p[i] for p in per])
            if got.shape != w.shape:
                raise StreamError(f"step by step the output has shape {tuple(got.shape)}, in one call {tuple(w.shape)}")
            diff = float((got.double() - w.double()).abs().max()) if w.numel() else 0.0
            scale = max(1.0, float(w.abs().max())) if w.numel() else 1.0
            if not math.isfinite(diff) or diff > 1e-4 * scale:
                raise StreamError(f"step by step the outputs differ from one call by {diff:.3g} (scale {scale:.3g})")
            worst = max(worst, diff)
        return worst


def stream(
    model: nn.Module, *, frame_dims: int | None = None, backend: EventBackend = "auto", fuse: bool = True
) -> ModelStream:
    """A :class:`ModelStream` of ``model``: the model as given (our LIF / PLIF), deploy's rewritten model or its
    deployed model (:func:`sparsesnn.deploy.deploy`, :func:`~sparsesnn.deploy.load_deployed`), copied (eval mode,
    CPU, float32) with every neuron made a :class:`StreamingLIF`. ``frame_dims``: the rank of one step's input
    ``[B, ...]`` (default: 4 for a first Conv2d, 2 for a first Linear). Raises :class:`StreamError` naming every
    spiking module whose state the stream cannot carry. With ``fuse`` (the default) each event-driven conv block is
    one call (:func:`~sparsesnn.deploy.fused.fuse_event_blocks`, outputs equal bit for bit)."""
    copied = copy.deepcopy(model).cpu().float().eval()
    unfuse(copied)  # deploy's fused (block, pool) loops start from rest: a stream carries the membrane between calls
    names = [name for name, m in copied.named_modules() if is_plain_lif(m) or isinstance(m, InferenceLIF)]
    if "" in names:
        raise StreamError("stream() takes a model containing neurons, not a single neuron: wrap it in nn.Sequential")
    neurons: dict[str, StreamingLIF] = {}
    for name in names:
        neurons[name] = StreamingLIF.of(copied.get_submodule(name), backend)
        set_child(copied, name, neurons[name])
    refused = [
        f"{name or '(the model)'} ({type(m).__name__})"
        for name, m in copied.named_modules()
        if not isinstance(m, StreamingLIF) and is_spiking(m)
    ]
    if refused:
        raise StreamError(
            "the stream carries the membrane of sparsesnn's LIF / PLIF only; it cannot keep the state of "
            + ", ".join(refused)
        )
    dims = frame_dims if frame_dims is not None else _frame_dims(copied)
    if fuse:
        fuse_event_blocks(copied)
    return ModelStream(copied, neurons, dims)


# ------------------------------------------------------------------------------------------------ early decisions


def cumulative_mean(outputs: torch.Tensor) -> torch.Tensor:
    """``m[t] = mean(outputs[0..t])`` over the leading (time) axis, in float64."""
    y = outputs.double()
    steps = torch.arange(1, y.shape[0] + 1, dtype=torch.float64).view(-1, *([1] * (y.dim() - 1)))
    return y.cumsum(0) / steps


def softmax_margin(mean: torch.Tensor) -> torch.Tensor:
    """``p1 - p2``: the gap between the two largest softmax probabilities of class scores ``[..., K]``."""
    top2 = torch.softmax(mean.double(), dim=-1).topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


@dataclass
class EarlyDecisionCurve:
    """Accuracy against time on labelled outputs ``[T, N, K]`` (see :func:`early_decision_curve`)."""

    steps: int
    samples: int
    #: accuracy of ``argmax mean(y[0..t])``, t = 0 .. T-1 (``accuracy[-1]`` is the whole-sample accuracy)
    accuracy: list[float]
    #: per margin threshold: accuracy of the rule's answers, mean and median steps waited, fraction decided early
    rule: list[dict[str, float]] = field(default_factory=list)
    #: the first fraction ``t / T`` at which the accuracy is within 1 point of the final accuracy
    within_1pt_fraction: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "samples": self.samples,
            "fraction_of_T": [(t + 1) / self.steps for t in range(self.steps)],
            "accuracy": list(self.accuracy),
            "final_accuracy": self.accuracy[-1] if self.accuracy else None,
            "within_1pt_fraction": self.within_1pt_fraction,
            "margin_rule": list(self.rule),
        }


DEFAULT_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)


def early_decision_curve(
    outputs: torch.Tensor, labels: torch.Tensor, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> EarlyDecisionCurve:
    """The accuracy of the answer after each step, and of the margin rule per threshold, on per-step class scores
    ``outputs`` ``[T, N, K]`` of ``N`` samples with ``labels`` ``[N]``.

    After ``t + 1`` steps the answer is ``argmax m[t]``, ``m[t] = mean(outputs[0..t])``. The rule with threshold
    ``theta`` answers at the first ``t`` where :func:`softmax_margin` of ``m[t]`` is at least ``theta``, else at
    ``T - 1``; its latency is ``t + 1`` steps. ``within_1pt_fraction`` is the smallest ``(t + 1) / T`` whose accuracy
    is at least the final accuracy minus 0.01."""
    if outputs.dim() != 3 or labels.dim() != 1 or outputs.shape[1] != labels.shape[0]:
        raise ValueError(f"need outputs [T, N, K] and labels [N], got {tuple(outputs.shape)} and {tuple(labels.shape)}")
    steps, n = int(outputs.shape[0]), int(outputs.shape[1])
    mean = cumulative_mean(outputs)
    correct = mean.argmax(-1) == labels.view(1, -1)  # [T, N]
    accuracy = [float(c.double().mean()) for c in correct]
    final = accuracy[-1]
    within = next(((t + 1) / steps for t, a in enumerate(accuracy) if a >= final - 0.01 - 1e-12), 1.0)
    margin = softmax_margin(mean)  # [T, N]
    rule = []
    for theta in thresholds:
        sure = margin >= theta
        sure[-1] = True
        at = sure.double().argmax(0)  # first step where the rule answers
        right = correct.gather(0, at.view(1, -1)).view(-1)
        waited = at.double() + 1
        rule.append(
            {
                "threshold": float(theta),
                "accuracy": float(right.double().mean()),
                "mean_steps": float(waited.mean()),
                "mean_fraction_of_T": float(waited.mean()) / steps,
                "median_steps": float(waited.median()),
                "decided_before_T": float((at < steps - 1).double().mean()),
            }
        )
    return EarlyDecisionCurve(steps, n, accuracy, rule, within)


@torch.no_grad()
def stream_outputs(
    s: ModelStream, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run labelled batches ``([T, B, ...], [B])`` through the stream one step per call, each batch from rest;
    returns the per-step outputs ``[T, N, K]`` and the labels ``[N]``."""
    outs, labels = [], []
    for x, y in batches:
        s.reset()
        outs.append(torch.stack([s.step(x[t]) for t in range(x.shape[0])]))
        labels.append(y)
    s.reset()
    if not outs:
        raise ValueError("no batches to stream")
    return torch.cat(outs, 1), torch.cat(labels)


def plot_early_decision(curve: EarlyDecisionCurve, path: str | Path, title: str = "") -> Path:
    """The curve as a PNG: accuracy of the answer so far against the fraction of ``T`` seen, and the margin rule's
    (accuracy, mean fraction waited) per threshold. matplotlib is imported here."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = curve.as_dict()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(d["fraction_of_T"], [a * 100 for a in d["accuracy"]], marker="o", label="argmax of the mean so far")
    xs = [r["mean_fraction_of_T"] for r in curve.rule]
    ys = [r["accuracy"] * 100 for r in curve.rule]
    ax.plot(xs, ys, marker="s", linestyle="--", label="margin rule (mean time waited)")
    for r, x, y in zip(curve.rule, xs, ys, strict=True):
        ax.annotate(f"{r['threshold']:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.axhline(d["final_accuracy"] * 100 - 1, color="grey", linewidth=0.8, linestyle=":", label="final - 1 pt")
    ax.set_xlabel("fraction of T seen")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or f"accuracy against time ({curve.samples} samples, T = {curve.steps})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------------------- a run on an event file


@dataclass
class RunStream:
    """What streaming a run needs: its stream, the binner of its framing, and the pieces read with it."""

    stream: ModelStream
    binner: EventBinner
    config: Any
    #: the whole test split, time-major, with targets (:meth:`~sparsesnn.train.run_reader.FinishedRun.test_batches`)
    test_batches: Any
    #: where the model came from: "deployed here" or the path of a ``model.deploy.pt``
    source: str
    chosen: str | None = None


def stream_run(
    run_dir: str | Path,
    *,
    checkpoint: str = "last",
    model_path: str | Path | None = None,
    sample_duration_us: int | None = None,
    backend: EventBackend = "auto",
) -> RunStream:
    """A run's model as a stream with the run's own framing: the finalized, compacted model
    (:func:`~sparsesnn.interop.export.prepare_export`, read on the CPU) deployed at batch 1 on its first test sample
    as ``export --format deploy`` does, or the deploy export at ``model_path`` (:func:`~sparsesnn.deploy.api.
    load_deployed`); the binner is :meth:`EventBinner.from_data_config` of the run's ``[data]`` table."""
    from sparsesnn.deploy.api import deploy, load_deployed

    bundle = prepare_export(run_dir, checkpoint=checkpoint, device="cpu")
    binner = EventBinner.from_data_config(bundle.config.data, sample_duration_us=sample_duration_us)
    if model_path is not None:
        model, report, _meta = load_deployed(model_path, backend=backend)
        source = str(model_path)
    else:
        model, report = deploy(bundle.model, bundle.example[:, :1], backend=backend)
        source = "deployed here"
    frame_dims = bundle.example.dim() - 1
    return RunStream(
        stream(model, frame_dims=frame_dims, backend=backend), binner, bundle.config, bundle.test_batches, source,
        report.chosen,
    )  # fmt: skip


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@torch.no_grad()
def stream_events(
    s: ModelStream,
    binner: EventBinner,
    chunks: Iterable[np.ndarray],
    *,
    realtime: bool = False,
    reset_every: int = 0,
    warmup: bool = True,
    on_window: Callable[[dict[str, Any]], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Stream time-ordered event chunks (e.g. :func:`~sparsesnn.data.stream.iter_events`) through ``binner`` and
    ``s`` at batch 1, one :meth:`ModelStream.step` per window as soon as the binner closes it (the open window at the
    end too); returns the summary. Decoding (pulling the next chunk), binning and stepping are all inside the
    measured wall time.

    Per window, ``on_window`` gets ``{"window": k, "end_us": o + (k + 1) w, "prediction", "confidence", "margin",
    "spikes", "latency_ms"}``: the answer so far is ``argmax`` of the mean output since the stream's start (or its
    last reset), ``confidence`` its softmax probability, ``margin`` :func:`softmax_margin`, ``spikes`` the neurons'
    spikes in this step and ``latency_ms`` the wall time of the step. ``reset_every = n > 0`` resets the neurons and
    the mean every ``n`` windows (a fresh sample every ``n`` windows of an endless stream). With ``realtime`` a chunk
    is taken only when the wall clock since the first event has reached its last event's timestamp (a replay at the
    camera's pace). ``warmup`` steps one zero frame (then resets) before the clock starts.

    The summary: events, windows, ``stream_s`` (first to last event), ``wall_s``, ``events_per_s`` (events /
    ``wall_s``), ``realtime_factor`` (``stream_s / wall_s``), ``compute_s`` (``wall_s`` less the pacing sleeps) and
    its factor, the step latency's p50 / p99 / max in ms, and the final answer."""
    binner.reset()
    if warmup:  # the first call at a new shape pays for allocation and kernel set-up: not a latency of the stream
        s.reset()
        s.step(torch.zeros((1, *binner.frame_shape)))
    s.reset()
    latencies: list[float] = []
    total: np.ndarray | None = None
    since_reset = 0
    events = 0
    first_t: int | None = None
    last_t: int | None = None
    slept = 0.0
    last: dict[str, Any] = {}
    # an integral window (every dataset's but a fraction of a sample) is added in integers, not Fractions
    window = int(binner.window_us) if binner.window_us == int(binner.window_us) else None
    start = clock()

    def run(frames: list[np.ndarray]) -> None:
        nonlocal total, since_reset, last
        for frame in frames:
            if reset_every and since_reset == reset_every:
                s.reset()
                total, since_reset = None, 0
            t0 = clock()
            out = s.step(torch.from_numpy(frame).unsqueeze(0))
            latency = (clock() - t0) * 1e3
            latencies.append(latency)
            y = (out[0] if isinstance(out, (tuple, list)) else out)[0].numpy().astype(np.float64)
            total = y if total is None else total + y
            since_reset += 1
            mean = total / since_reset
            e = np.exp(mean - mean.max())
            probs = e / e.sum()
            top2 = np.sort(probs)[-2:] if probs.size > 1 else np.array([0.0, probs[0]])
            index = len(latencies) - 1
            assert binner.origin_us is not None
            last = {
                "window": index,
                "end_us": int(binner.origin_us) + (index + 1) * window
                if window is not None
                else int(binner.origin_us + (index + 1) * binner.window_us),
                "prediction": int(mean.argmax()),
                "confidence": round(float(top2[1]), 6),
                "margin": round(float(top2[1] - top2[0]), 6),
                "spikes": s.last_spikes(),
                "latency_ms": round(latency, 4),
            }
            if on_window is not None:
                on_window(last)

    for chunk in chunks:
        if chunk.size == 0:
            continue
        t_last = int(chunk["t"][-1])
        if first_t is None:
            first_t = int(chunk["t"][0])
        if realtime:
            wait = (t_last - first_t) / 1e6 - (clock() - start)
            if wait > 0:
                t0 = clock()
                sleep(wait)
                slept += clock() - t0
        events += int(chunk.size)
        last_t = t_last
        run(binner.push(chunk))
    run(binner.flush())
    wall = clock() - start
    stream_s = 0.0 if first_t is None or last_t is None else (last_t - first_t) / 1e6
    compute = max(wall - slept, 1e-12)
    return {
        "events": events,
        "windows": len(latencies),
        "window_us": float(binner.window_us),
        "stream_s": stream_s,
        "wall_s": wall,
        "compute_s": compute,
        "events_per_s": events / wall if wall > 0 else None,
        "realtime_factor": stream_s / wall if wall > 0 else None,
        "realtime_factor_compute": stream_s / compute,
        "latency_ms_p50": _percentile(latencies, 50),
        "latency_ms_p99": _percentile(latencies, 99),
        "latency_ms_max": max(latencies) if latencies else None,
        "final_prediction": last.get("prediction"),
        "final_confidence": last.get("confidence"),
        "realtime": realtime,
    }


def write_early_decision(
    curve: EarlyDecisionCurve, out_dir: str | Path, name: str = "early_decision", title: str = ""
) -> dict[str, Any]:
    """Write ``curve`` as ``OUT_DIR/NAME.json`` and ``OUT_DIR/NAME.png``; returns the JSON's dict (with both paths)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = curve.as_dict()
    data["json"] = str(out / f"{name}.json")
    data["png"] = str(plot_early_decision(curve, out / f"{name}.png", title))
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    return data


def run_early_decision(
    rs: RunStream, out_dir: str | Path, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, batch_size: int = 64
) -> dict[str, Any]:
    """The early-decision curve (:func:`early_decision_curve`) of a run's stream on its whole test split (the
    dataset's own frames, each batch streamed one step per call from rest), written by :func:`write_early_decision`."""
    outputs, labels = stream_outputs(rs.stream, rs.test_batches(batch_size))
    if isinstance(outputs, (tuple, list)):
        outputs = outputs[0]
    curve = early_decision_curve(outputs, labels, thresholds)
    return write_early_decision(curve, out_dir, title=f"{rs.config.run.name}: accuracy against time (test split)")
