"""An inference-only model whose sparse layers run event-driven where that is faster, chosen by measurement.

:func:`deploy` takes a finished model (masks baked in, e.g. by ``learner.finalize()``, dead units removed by
:func:`~sparsesnn.sparse.shrink.compact`) and an example input. It records the input every Conv2d and Linear sees on
the example, times the layer as it is and as its event-driven form (:mod:`sparsesnn.event_layers`) on that input, on
this machine, and keeps whichever is faster. The report says, per layer, the input's nonzero fraction, the weight
density, both times and the choice. ``force=True`` makes every eligible layer event-driven (for tests and maps).
The outputs equal the model's up to the order of float summation; a spike exactly at threshold can therefore flip,
which the tests bound on real data.
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

from sparsesnn.event_layers import EventBackend, EventConv2d, EventLinear


@dataclass
class LayerChoice:
    """What :func:`deploy` measured for one layer and what it chose."""

    kind: str
    input_nonzero: float
    weight_density: float
    dense_ms: float
    event_ms: float
    event: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class DeployReport:
    """Per layer, what was measured and chosen; for the whole model, its time on the example before and after (the
    layer choices are kept only when the whole model got faster, unless forced)."""

    layers: dict[str, LayerChoice] = field(default_factory=dict)
    model_ms: float | None = None
    deployed_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "layers": {name: c.as_dict() for name, c in self.layers.items()},
            "model_ms": self.model_ms,
            "deployed_ms": self.deployed_ms,
        }


def _eligible(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
        and module.stride[0] == module.stride[1]
        and module.dilation[0] == module.dilation[1]
    )


def _event_form(module: nn.Module, backend: EventBackend) -> nn.Module:
    return EventLinear(module, backend) if isinstance(module, nn.Linear) else EventConv2d(module, backend)


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (and numba's compilation on first use)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _set_child(root: nn.Module, name: str, child: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, child)


@torch.no_grad()
def deploy(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    backend: EventBackend = "auto",
    repeats: int = 5,
    force: bool = False,
    margin: float = 0.1,
) -> tuple[nn.Module, DeployReport]:
    """A copy of ``model`` (eval mode, CPU, float32) with each eligible Conv2d / Linear replaced by its event-driven
    form where that measured faster on the input it sees for ``example_input`` by more than ``margin`` (a fraction
    of the dense time); then the whole copy is timed against the model on the example, and if it is not faster
    every layer stays dense (per-call overheads the layer timings miss). ``force``: every eligible layer, no checks."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    original = copy.deepcopy(model).cpu().float().eval()
    deployed = copy.deepcopy(original)
    candidates = {name: m for name, m in deployed.named_modules() if name and _eligible(m)}
    seen: dict[str, torch.Tensor] = {}
    handles = [
        m.register_forward_pre_hook(lambda _m, args, name=name: seen.setdefault(name, args[0].detach().clone()))
        for name, m in candidates.items()
    ]
    try:
        deployed(example_input.cpu().float())
    finally:
        for h in handles:
            h.remove()
    report = DeployReport()
    for name, module in candidates.items():
        x = seen.get(name)
        if x is None:  # not on the example's path
            continue
        event = _event_form(module, backend)
        weight = module.weight
        dense_ms = _median_ms(lambda m=module, x=x: m(x), repeats)
        event_ms = _median_ms(lambda m=event, x=x: m(x), repeats)
        chosen = force or event_ms < dense_ms * (1.0 - margin)
        report.layers[name] = LayerChoice(
            kind=type(module).__name__,
            input_nonzero=float((x != 0).float().mean()),
            weight_density=float((weight != 0).float().mean()),
            dense_ms=dense_ms,
            event_ms=event_ms,
            event=chosen,
        )
        if chosen:
            _set_child(deployed, name, event)
    if force or not any(c.event for c in report.layers.values()):
        return deployed, report
    x = example_input.cpu().float()
    report.model_ms = _median_ms(lambda: original(x), repeats)
    report.deployed_ms = _median_ms(lambda: deployed(x), repeats)
    if report.deployed_ms >= report.model_ms:  # the layers' gains do not survive the whole model: keep it dense
        for choice in report.layers.values():
            choice.event = False
        return original, report
    return deployed, report


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
    and the median time per sample at batch 1 over the first ``latency_samples`` test samples (the two models
    timed in turn on each sample)."""
    from sparsesnn.export import prepare_export

    bundle = prepare_export(run_dir, checkpoint=checkpoint, device="cpu")
    assert bundle.test_batches is not None
    compacted = bundle.model
    deployed, report = deploy(compacted, bundle.example[:, :1], backend=backend, repeats=repeats)
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
    times: dict[str, list[float]] = {"compacted": [], "deployed": []}
    for x in single:
        for name, m in (("compacted", compacted), ("deployed", deployed)):
            times[name].append(_median_ms(lambda m=m, x=x: m(x), 1))
    compacted_ms, deployed_ms = (statistics.median(times[k]) for k in ("compacted", "deployed"))
    return {
        "run": str(run_dir),
        "samples": n,
        "test_acc_compacted": correct_compacted / n,
        "test_acc_deployed": correct_deployed / n,
        "identical_predictions": identical,
        "latency_samples": len(single),
        "ms_per_sample_compacted": compacted_ms,
        "ms_per_sample_deployed": deployed_ms,
        "speedup": compacted_ms / deployed_ms,
        "threads": torch.get_num_threads(),
        "deploy": report.as_dict(),
    }
