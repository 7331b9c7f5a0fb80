"""An inference-only model whose sparse layers run event-driven where that is faster, chosen by measurement.

:func:`deploy` takes a finished model (masks baked in, e.g. by ``learner.finalize()``, dead units removed by
:func:`~sparsesnn.sparse.shrink.compact`) and an example input. It records the input every Conv2d and Linear sees on
the example, times the layer as it is and as its event-driven form (:mod:`sparsesnn.deploy.event_layers`) on that
input, on this machine, and keeps whichever is faster. The report says, per layer, the input's nonzero fraction, the
weight density, both times and the choice. ``force=True`` makes every eligible layer event-driven (for tests and maps).
The outputs equal the model's up to the order of float summation; a spike exactly at threshold can therefore flip,
which the tests bound on real data. Every rewrite is checked on the example (:func:`deploy`, "the equality guard"):
a rewrite that changes the outputs beyond that is a :class:`DeployMismatchError` naming the pass, never a silent
change.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsesnn.core.errors import CheckpointError, SparseSNNError
from sparsesnn.deploy.block_fusion import fuse_spiking_blocks
from sparsesnn.deploy.event_layers import EventBackend, EventConv2d, EventLinear, resolve_backend
from sparsesnn.deploy.passes import (
    fold_norms,
    replace_neurons,
    replace_pools,
    run_with_hooks,
    set_child,
    wrap_step_invariant,
)
from sparsesnn.interop.export import ExportResult, export_pt, export_target, prepare_export, read_pt, rebuild_model


@dataclass
class LayerChoice:
    """What :func:`deploy` measured for one layer and what it chose."""

    kind: str
    input_nonzero: float
    weight_density: float
    dense_ms: float
    event_ms: float
    event: bool
    #: the event form's weight layout (:mod:`sparsesnn.deploy.event_layers`): the fastest measured, or the recorded
    #: or cost-model one when nothing was timed
    layout: str = ""
    #: the event form's time per layout, where several were measured
    layout_ms: dict[str, float] = field(default_factory=dict)
    #: the whole deployed model's time on the example with this layer "event" and "dense", the other layers as chosen
    #: before it (:func:`deploy`'s step 4); empty where it was not timed
    context_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class DeployReport:
    """Per layer, what was measured and chosen; for the whole model, its time on the example before and after (the
    layer choices are kept only when the whole model got faster, unless forced)."""

    layers: dict[str, LayerChoice] = field(default_factory=dict)
    #: what the rewriting passes did (:mod:`sparsesnn.deploy.passes`): norms folded, neurons replaced, layer groups
    #: run on one time step
    folded_norms: list[str] = field(default_factory=list)
    inference_neurons: list[str] = field(default_factory=list)
    inference_pools: list[str] = field(default_factory=list)
    step_invariant: list[str] = field(default_factory=list)
    #: (spiking block, 2x2 max pool) runs made one loop each (:mod:`sparsesnn.deploy.block_fusion`), as
    #: ``"block+pool"`` names
    fused: list[str] = field(default_factory=list)
    #: every BatchNorm the fold left as it is, with the reason (:func:`~sparsesnn.deploy.passes.fold_norms`)
    not_folded: dict[str, str] = field(default_factory=dict)
    model_ms: float | None = None  # the model as given
    rewritten_ms: float | None = None  # after the passes, every layer dense
    deployed_ms: float | None = None  # after the passes, with the chosen event-driven layers
    #: which of the three was fastest on the example and returned ("model", "rewritten" or "deployed"; None when
    #: nothing was timed: forced or recorded choices)
    chosen: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "layers": {name: c.as_dict() for name, c in self.layers.items()},
            "folded_norms": list(self.folded_norms),
            "not_folded": dict(self.not_folded),
            "inference_neurons": list(self.inference_neurons),
            "inference_pools": list(self.inference_pools),
            "step_invariant": list(self.step_invariant),
            "fused": list(self.fused),
            "model_ms": self.model_ms,
            "rewritten_ms": self.rewritten_ms,
            "deployed_ms": self.deployed_ms,
            "chosen": self.chosen,
        }


class DeployMismatchError(SparseSNNError, RuntimeError):
    """A rewrite of :func:`deploy` changed the model's outputs on the example beyond float rounding."""


#: the deploy passes in the order they run, by the name a :class:`DeployMismatchError` gives them
PASS_NAMES = ("fold", "neurons", "pools", "step-invariant")


def _run(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """``model(x)`` as a list of tensors (one, or a tuple's), with torch's random generator at a fixed seed (a Poisson
    encoder draws the same spikes every time)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        out = model(x)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    if not outs or not all(isinstance(o, torch.Tensor) for o in outs):
        raise TypeError(f"deploy needs a model that returns a tensor or a tuple of tensors, got {type(out).__name__}")
    return [o.detach() for o in outs]


def _outputs_mismatch(reference: list[torch.Tensor], out: list[torch.Tensor], tolerance: float) -> str | None:
    if len(out) != len(reference):
        return f"{len(out)} outputs instead of {len(reference)}"
    for i, (r, o) in enumerate(zip(reference, out, strict=True)):
        problem = _mismatch(r, o, tolerance)
        if problem is not None:
            return problem if len(reference) == 1 else f"output {i}: {problem}"
    return None


def _mismatch(reference: torch.Tensor, out: torch.Tensor, tolerance: float) -> str | None:
    """Why ``out`` is not ``reference`` up to ``tolerance`` (None: it is). The outputs must have the same shape, differ
    by at most ``tolerance * max(1, max|reference|)`` anywhere, and, for a ``[B, K]`` or time-major ``[T, B, K]``
    output, give the same predictions (argmax of the time mean) wherever the reference's top two scores are further
    apart than twice that bound."""
    if out.shape != reference.shape:
        return f"output shape {tuple(out.shape)} instead of {tuple(reference.shape)}"
    if not torch.equal(torch.isfinite(out), torch.isfinite(reference)):
        return "non-finite outputs where the model's are finite (or the other way round)"
    finite = torch.isfinite(reference)
    ref, got = reference.double()[finite], out.double()[finite]
    scale = max(1.0, float(ref.abs().max())) if ref.numel() else 1.0
    bound = tolerance * scale
    diff = float((got - ref).abs().max()) if ref.numel() else 0.0
    if diff > bound:
        return f"largest output difference {diff:.4g} > {bound:.4g} (tolerance {tolerance:g} x scale {scale:.4g})"
    if reference.dim() in (2, 3) and reference.shape[-1] > 1 and bool(finite.all()):
        a = (reference.mean(0) if reference.dim() == 3 else reference).double()
        b = (out.mean(0) if out.dim() == 3 else out).double()
        top2 = a.topk(2, dim=-1).values
        clear = (top2[..., 0] - top2[..., 1]) > 2 * bound
        differ = (a.argmax(-1) != b.argmax(-1)) & clear
        if bool(differ.any()):
            return f"{int(differ.sum())} of {differ.numel()} predictions differ"
    return None


def _eligible(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.Conv2d) and EventConv2d.unsupported(module) is None


def _event_form(module: nn.Module, backend: EventBackend, layout: str = "auto") -> nn.Module:
    if isinstance(module, nn.Linear):
        return EventLinear(module, backend, layout)  # type: ignore[arg-type]
    return EventConv2d(module, backend, layout)  # type: ignore[arg-type]


def _layouts(module: nn.Module, backend: EventBackend) -> list[str]:
    """The weight layouts the event form of ``module`` can take (only the cost model's, "auto", without numba)."""
    if resolve_backend(backend) != "numba":
        return ["auto"]
    if isinstance(module, nn.Linear):
        return list(EventLinear.LAYOUTS)
    return list(EventConv2d.layouts_for(module))


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (and numba's compilation on first use)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@torch.no_grad()
def deploy(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    backend: EventBackend = "auto",
    repeats: int = 5,
    force: bool = False,
    margin: float = 0.1,
    rewrite: bool = True,
    choices: dict[str, bool | str] | None = None,
    tolerance: float = 1e-3,
) -> tuple[nn.Module, DeployReport]:
    """A copy of ``model`` (eval mode, CPU, float32) for inference, faster where this machine measures it faster.

    1. With ``rewrite``, the passes of :mod:`sparsesnn.deploy.passes` run on the copy: BatchNorm folded into the
       layer before it, LIF / PLIF and max pools replaced by their inference loops, layer groups whose input is
       equal over time run on one step.
    2. Each eligible Conv2d / Linear is replaced by its event-driven form where that measured faster, on the input it
       sees for ``example_input``, by more than ``margin`` (a fraction of the dense time). With the compiled backend
       every weight layout of the event form is timed (:mod:`sparsesnn.deploy.event_layers`: whole rows or
       columns, blocks of 8 output channels, single weights) and the fastest kept (``layout``, ``layout_ms``).
    3. A spiking block followed by a 2x2 max pool in a plain ``nn.Sequential`` runs as one loop, and a spiking block
       alone runs its conv or linear layer straight into its neurons' loop (:mod:`sparsesnn.deploy.block_fusion`,
       ``report.fused``; outputs equal bit for bit, names unchanged).
    4. Each layer's event/dense choice is checked in the whole model (``context_ms``): the deployed model is timed
       with the layer's event form and with its dense form, the others as chosen, and the faster kept (a layer timed
       alone runs hot; inside the model it runs colder, and its two forms pay that unequally).
    5. The model as given, the rewritten copy with every layer dense and the copy with the chosen event-driven
       layers are timed whole on the example, and the fastest is returned (``report.chosen``): per-call overheads
       the layer timings miss can undo their gains, and at large batches the rewrites can lose to the training
       kernels (the N-MNIST convnet at batch 64, one thread: 12.8 ms against 6.5 ms per sample).

    ``force``: every eligible layer event-driven, no timing (the cost model's layouts). ``choices``: the event/dense
    choice per layer name, as a report's ``layers`` gives it (e.g. read back from an export), applied without timing;
    a layout name in place of True also fixes the layout.

    **The equality guard.** The rewritten model (after all passes) and the deployed one (with its event-driven
    layers) are run on ``example_input`` and compared with the model as given (torch's generator at one seed for
    each run): same output shapes, largest absolute difference at most ``tolerance * max(1, max|output|)``, and the
    same predictions (argmax of the time mean of a ``[T, B, K]`` or ``[B, K]`` output) wherever the model's top two
    scores are further apart than twice that bound. A mismatch raises :class:`DeployMismatchError` naming the pass
    that caused it (``fold``, ``neurons``, ``pools``, ``step-invariant``, found by replaying the passes one at a time,
    ``event layers`` or ``fuse``). A spike that float rounding flips at the threshold can change a spiking model's
    output by more than rounding; raise ``tolerance`` if the error says so for a pass you trust. A model whose output
    on the example differs between two calls (state kept between calls) cannot be checked and raises too. BatchNorms
    the fold leaves are in ``report.not_folded`` with the reason."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    if not tolerance > 0.0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    original = copy.deepcopy(model).cpu().float().eval()
    rewritten = copy.deepcopy(original)
    x = example_input.cpu().float()
    report = DeployReport()
    reference = _run(original, x)
    again = _outputs_mismatch(reference, _run(original, x), tolerance)
    if again is not None:
        raise DeployMismatchError(
            f"the model's output on the example differs between two calls ({again}): state kept between calls (reset "
            "it in forward) or randomness outside torch's generator; deploy cannot check its rewrites on such a model"
        )
    if rewrite:
        _rewrite(rewritten, x, backend, report)
        problem = _outputs_mismatch(reference, _run(rewritten, x), tolerance)
        if problem is not None:
            culprit = _replay(original, x, backend, reference, tolerance)
            raise DeployMismatchError(
                f"deploy's {culprit} pass changed the model's outputs on the example: {problem}. This is a bug of "
                "deploy for this model; deploy(..., rewrite=False) skips the passes"
            )
    deployed = copy.deepcopy(rewritten)
    candidates = {name: m for name, m in deployed.named_modules() if name and _eligible(m)}
    if choices is not None:
        unknown = sorted(set(choices) - set(candidates))
        if unknown:
            raise ValueError(f"choices name layers this model does not have (or cannot run event-driven): {unknown}")
    seen: dict[str, torch.Tensor] = {}

    def record(name: str, inp: torch.Tensor) -> None:  # a pre-hook that returns a value would replace the input
        seen.setdefault(name, inp.detach().clone())

    handles = [
        m.register_forward_pre_hook(lambda _m, args, name=name: record(name, args[0])) for name, m in candidates.items()
    ]
    run_with_hooks(deployed, x, handles)
    timed = not force and choices is None
    both_forms: dict[str, tuple[nn.Module, nn.Module]] = {}  # layer -> (dense, event form)
    for name, module in candidates.items():
        inp = seen.get(name)
        if inp is None:  # not on the example's path
            continue
        recorded = None if choices is None else choices.get(name, False)
        layout_ms: dict[str, float] = {}
        if timed:  # every layout timed, the fastest kept
            forms = {lay: _event_form(module, backend, lay) for lay in _layouts(module, backend)}
            layout_ms = {lay: _median_ms(lambda m=f, v=inp: m(v), repeats) for lay, f in forms.items()}
            event = forms[min(layout_ms, key=layout_ms.__getitem__)]
        else:
            event = _event_form(module, backend, recorded if isinstance(recorded, str) else "auto")
        dense_ms = _median_ms(lambda m=module, v=inp: m(v), repeats) if timed else float("nan")
        event_ms = min(layout_ms.values()) if timed else float("nan")
        if force:
            chosen = True
        elif recorded is not None:
            chosen = bool(recorded)
        else:
            chosen = event_ms < dense_ms * (1.0 - margin)
        report.layers[name] = LayerChoice(
            kind=type(module).__name__,
            input_nonzero=float((inp != 0).float().mean()),
            weight_density=float((module.weight != 0).float().mean()),
            dense_ms=dense_ms,
            event_ms=event_ms,
            event=chosen,
            layout=str(getattr(event, "layout", "")),
            layout_ms=layout_ms,
        )
        both_forms[name] = (module, event)
        if chosen:
            set_child(deployed, name, event)
    if any(c.event for c in report.layers.values()):
        _check_event_layers(deployed, x, reference, tolerance, report, "")
    if rewrite:  # after the event layers: the fused loop calls the event conv's kernel itself
        report.fused = _fuse(deployed, x, reference, tolerance)
    if not timed:
        return deployed, report
    if _choose_in_context(deployed, x, both_forms, report, repeats, rewrite):
        _check_event_layers(deployed, x, reference, tolerance, report, ", chosen in the whole model")
        if rewrite:
            report.fused = _fuse(deployed, x, reference, tolerance)
    if rewrite:  # timed against the deployed copy, and returned when it is the faster
        _fuse(rewritten, x, reference, tolerance)
    report.model_ms = _median_ms(lambda: original(x), repeats)
    report.rewritten_ms = _median_ms(lambda: rewritten(x), repeats)
    candidates_ms = {"model": report.model_ms, "rewritten": report.rewritten_ms}
    if any(c.event for c in report.layers.values()):
        report.deployed_ms = _median_ms(lambda: deployed(x), repeats)
        candidates_ms["deployed"] = report.deployed_ms
    report.chosen = min(candidates_ms, key=lambda k: candidates_ms[k])
    if report.chosen != "deployed":  # the layers' gains do not survive the whole model: keep it dense
        for choice in report.layers.values():
            choice.event = False
    if report.chosen == "model":  # the rewrites made it slower here (e.g. large batches): keep the model as given
        report.folded_norms, report.inference_neurons, report.inference_pools, report.step_invariant = [], [], [], []
        report.fused = []
        report.not_folded = {}
        return original, report
    return (deployed if report.chosen == "deployed" else rewritten), report


#: a layer's choice is turned over in the whole model only where that makes the model faster by this fraction
CONTEXT_MARGIN = 0.02
#: rounds per ``repeats`` of the whole-model check (a layer's share of the whole is small, so it needs more rounds)
CONTEXT_ROUNDS = 2
#: calls timed in a row per round: over 3 calls torch's first MNIST conv measured as fast as its event form, over 8
#: or more 60-70 us slower, as in a long run
CONTEXT_CALLS = 8
#: seconds the whole-model check of the layer choices may take: layers are checked in order until it is spent
CONTEXT_BUDGET_S = 2.0


def _choose_in_context(
    model: nn.Module,
    x: torch.Tensor,
    forms: dict[str, tuple[nn.Module, nn.Module]],
    report: DeployReport,
    repeats: int,
    fuse: bool,
) -> bool:
    """Check each layer's event/dense choice in the whole deployed ``model``, in place, one layer after the other in
    the model's order: the model with the layer's event form and with its dense form is timed alternately on ``x``
    (:data:`CONTEXT_ROUNDS` x ``repeats`` rounds of a warm-up and :data:`CONTEXT_CALLS` calls each; medians), and the
    other form is kept where the whole model is faster with it by more than :data:`CONTEXT_MARGIN`.

    A layer timed alone runs hot, its weights and code in cache; between the other layers it runs colder, and the two
    forms of a small layer pay that unequally (on the MNIST convnet at batch 1, torch's first conv took 30 us alone
    and about 60 us inside the model, 35 us more than the event form there). Layers are checked until
    :data:`CONTEXT_BUDGET_S` is spent (a large model at a large batch keeps the rest as chosen alone). Returns
    whether any choice changed; ``report.layers`` gets the times (``context_ms``, empty for a layer not checked) and
    the final choices."""
    changed = False
    started = time.perf_counter()
    for name, (dense, event) in forms.items():
        if time.perf_counter() - started > CONTEXT_BUDGET_S:
            break
        choice = report.layers[name]
        states = {"event": event, "dense": dense}
        times: dict[str, list[float]] = {"event": [], "dense": []}
        for _ in range(CONTEXT_ROUNDS * repeats):
            for state, module in states.items():
                set_child(model, name, module)
                if fuse:
                    fuse_spiking_blocks(model)
                model(x)
                t0 = time.perf_counter()
                for _ in range(CONTEXT_CALLS):
                    model(x)
                times[state].append((time.perf_counter() - t0) * 1e3 / CONTEXT_CALLS)
        choice.context_ms = {state: statistics.median(v) for state, v in times.items()}
        current, other = ("event", "dense") if choice.event else ("dense", "event")
        if choice.context_ms[other] < choice.context_ms[current] * (1.0 - CONTEXT_MARGIN):
            choice.event = not choice.event
            changed = True
        set_child(model, name, states["event" if choice.event else "dense"])
        if fuse:
            fuse_spiking_blocks(model)
    return changed


def _check_event_layers(
    model: nn.Module, x: torch.Tensor, reference: list[torch.Tensor], tolerance: float, report: DeployReport, how: str
) -> None:
    """The equality guard for the chosen event layers (``how``: said after their names in the error)."""
    problem = _outputs_mismatch(reference, _run(model, x), tolerance)
    if problem is not None:
        events = [name for name, c in report.layers.items() if c.event]
        raise DeployMismatchError(
            f"deploy's event layers pass ({', '.join(events) or 'none'}{how}) changed the model's outputs on the "
            f"example: {problem}"
        )


def _fuse(model: nn.Module, x: torch.Tensor, reference: list[torch.Tensor], tolerance: float) -> list[str]:
    """:func:`~sparsesnn.deploy.block_fusion.fuse_spiking_blocks` on ``model`` in place, checked on the example
    like every pass (a mismatch is a :class:`DeployMismatchError` naming ``fuse``); the fused runs' names."""
    fused = fuse_spiking_blocks(model)
    if fused:
        problem = _outputs_mismatch(reference, _run(model, x), tolerance)
        if problem is not None:
            raise DeployMismatchError(
                f"deploy's fuse pass ({', '.join(fused)}) changed the model's outputs on the example: {problem}. This "
                "is a bug of deploy for this model; deploy(..., rewrite=False) skips the passes"
            )
    return fused


def _passes(backend: EventBackend, report: DeployReport) -> list[tuple[str, Callable[[nn.Module, torch.Tensor], None]]]:
    """The rewriting passes in order, each recording what it did in ``report``."""

    def fold(m: nn.Module, x: torch.Tensor) -> None:
        report.folded_norms, report.not_folded = fold_norms(m, x)

    def neurons(m: nn.Module, _x: torch.Tensor) -> None:
        report.inference_neurons = replace_neurons(m, backend)

    def pools(m: nn.Module, _x: torch.Tensor) -> None:
        report.inference_pools = replace_pools(m, backend)

    def step_invariant(m: nn.Module, x: torch.Tensor) -> None:
        report.step_invariant = wrap_step_invariant(m, x)

    return list(zip(PASS_NAMES, (fold, neurons, pools, step_invariant), strict=True))


def _rewrite(model: nn.Module, x: torch.Tensor, backend: EventBackend, report: DeployReport) -> None:
    for _name, apply in _passes(backend, report):
        apply(model, x)


def _replay(
    original: nn.Module, x: torch.Tensor, backend: EventBackend, reference: list[torch.Tensor], tolerance: float
) -> str:
    """The first pass after which the outputs no longer match, replaying them on a fresh copy one at a time."""
    model = copy.deepcopy(original)
    scratch = DeployReport()
    for name, apply in _passes(backend, scratch):
        apply(model, x)
        if _outputs_mismatch(reference, _run(model, x), tolerance) is not None:
            return name
    return "/".join(PASS_NAMES) + " (together, not one alone)"


@torch.no_grad()
def evaluate_deployed(
    run_dir: str | Path,
    *,
    checkpoint: str = "last",
    backend: EventBackend = "auto",
    latency_samples: int = 64,
    repeats: int = 5,
) -> dict[str, Any]:
    """Deploy a run's finalized, compacted model (choices measured at batch 1 on its first test sample) and evaluate
    it against the compacted model on the whole test split: accuracy of both, how many predictions are identical,
    and the median time per sample at batch 1 over the first ``latency_samples`` test samples, for the compacted
    model, the rewritten one (the passes of :mod:`sparsesnn.deploy.passes`, every layer dense) and the deployed one,
    timed in turn on each sample. The run is read on the CPU by :func:`~sparsesnn.interop.export.prepare_export`
    (:func:`~sparsesnn.train.run_reader.read_run`: no trainer is built)."""
    bundle = prepare_export(run_dir, checkpoint=checkpoint, device="cpu")
    assert bundle.test_batches is not None
    compacted = bundle.model
    example = bundle.example[:, :1]
    deployed, report = deploy(compacted, example, backend=backend, repeats=repeats)
    rewritten, _ = deploy(compacted, example, backend=backend, choices={})
    n = correct_compacted = correct_deployed = identical = 0
    single: list[torch.Tensor] = []
    for x, y in bundle.test_batches(256):
        a = compacted(x).mean(0).argmax(-1)
        b = deployed(x).mean(0).argmax(-1)
        correct_compacted += int((a == y).sum())
        correct_deployed += int((b == y).sum())
        identical += int((a == b).sum())
        n += int(y.numel())
        single.extend(x[:, i : i + 1] for i in range(x.shape[1]) if len(single) < latency_samples)
    models = {"compacted": compacted, "rewritten": rewritten, "deployed": deployed}
    times: dict[str, list[float]] = {name: [] for name in models}
    for x in single:
        for name, m in models.items():
            times[name].append(_median_ms(lambda m=m, x=x: m(x), 1))
    ms = {name: statistics.median(t) for name, t in times.items()}
    return {
        "run": str(run_dir),
        "samples": n,
        "test_acc_compacted": correct_compacted / n,
        "test_acc_deployed": correct_deployed / n,
        "identical_predictions": identical,
        "latency_samples": len(single),
        "ms_per_sample_compacted": ms["compacted"],
        "ms_per_sample_rewritten": ms["rewritten"],
        "ms_per_sample_deployed": ms["deployed"],
        "speedup": ms["compacted"] / ms["deployed"],
        "speedup_rewritten": ms["compacted"] / ms["rewritten"],
        "threads": torch.get_num_threads(),
        "deploy": report.as_dict(),
    }


def export_deployed(model: nn.Module, path: str | Path, meta: dict[str, Any], example: torch.Tensor) -> dict[str, Any]:
    """Deploy ``model`` (a finalized, compacted export model) on ``example`` (time-major, batch 1), and write the
    ``deploy`` export format: the ``pt`` payload, the report under ``meta["deploy"]`` and the example; returns the
    report as a dict."""
    _, report = deploy(model, example)
    data = report.as_dict()
    export_pt(model, path, {**meta, "deploy": data}, extra={"deploy_example": example.detach().cpu().contiguous()})
    return data


def export_run_deployed(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    samples: int = 32,
    checkpoint: str = "last",
    device: str | None = None,
    force: bool = False,
) -> ExportResult:
    """The ``deploy`` export of a run: its finalized, compacted model (:func:`~sparsesnn.interop.export.prepare_export`)
    deployed on one test sample and written by :func:`export_deployed` to ``out`` (default
    ``RUN_DIR/model.deploy.pt``). The target is checked first, as every export's is
    (:func:`~sparsesnn.interop.export.export_target`; ``force`` exports a run that is being trained)."""
    path = export_target(run_dir, "deploy", out, checkpoint, force=force)
    bundle = prepare_export(run_dir, samples=samples, checkpoint=checkpoint, device=device)
    report = export_deployed(bundle.model, path, bundle.meta(), bundle.example[:, :1])
    return ExportResult(path, "deploy", bundle.report, int(bundle.example.shape[1]), deploy=report)


def load_deployed(
    path: str | Path, *, remeasure: bool = False, backend: EventBackend = "auto"
) -> tuple[nn.Module, DeployReport, dict[str, Any]]:
    """Rebuild a ``deploy`` export: the model with the layer choices recorded at export, or, with ``remeasure``,
    with choices measured again on this machine on the stored example. Returns ``(model, report, meta)``."""
    payload = read_pt(path)
    meta = payload["meta"]
    if "deploy" not in meta or "deploy_example" not in payload:
        raise CheckpointError(f"{path} is a model export without deploy choices: write it with --format deploy")
    model = rebuild_model(meta, payload["state_dict"])
    example = payload["deploy_example"]
    if remeasure:
        deployed, report = deploy(model, example, backend=backend)
    else:
        recorded = {  # the layout too, where the export recorded one
            name: (c.get("layout") or True) if c["event"] else False for name, c in meta["deploy"]["layers"].items()
        }
        deployed, report = deploy(model, example, backend=backend, choices=recorded)
    return deployed, report, meta
