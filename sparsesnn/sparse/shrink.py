"""Compaction: physically remove dead neurons / channels to get a smaller dense model with the same outputs.

A unit (output row of a Linear, output channel of a Conv) is *dead* when its input is identically zero: every
weight of its row is 0, its bias is 0 (or absent), and the entries of a BatchNorm that directly follows the layer
have ``gamma = beta = 0`` (so the BN output is 0 whatever its statistics). A spiking neuron driven by 0 never fires
(``v_reset < v_threshold``), so removing the unit, its BN entries, and the matching fan-in columns of the next layer
changes nothing downstream.

Which layer consumes a layer's output is read from the module order (the next Conv/Linear), the common layout of
sequential SNNs; a Linear after a flattened conv map loses the whole ``H*W`` block of each dead channel. Residual
connections break this assumption, so :func:`compact` checks every removal by running ``example_input`` through
the model and comparing with the original output; a removal that changes the output (or fails) is undone and the
layer is reported as kept. The result is therefore always equivalent on the example, and faster where units died.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sparsesnn.sparse.masks import MASK_BUFFER, NEURON_BUFFER, following_norm, prunable_layers


@dataclass
class CompactionReport:
    """What :func:`compact` removed: per layer, units before and after; layers it could not compact and why."""

    removed: dict[str, tuple[int, int]] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "removed": {k: {"before": a, "after": b} for k, a, b in ((k, *v) for k, v in self.removed.items())},
            "kept": dict(self.kept),
            "params_before": self.params_before,
            "params_after": self.params_after,
        }


def dead_units(module: nn.Module, norm: nn.Module | None) -> torch.Tensor:
    """Bool vector over output units: True where the unit's input is identically zero (see the module docstring)."""
    w = module.weight.detach()
    dead = (w.reshape(w.shape[0], -1) == 0).all(1)
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor):
        dead &= bias.detach() == 0
    if norm is not None:
        for p in (norm.weight, norm.bias):
            if isinstance(p, torch.Tensor):
                dead &= p.detach() == 0
    return dead


def _slice_param(module: nn.Module, name: str, index: torch.Tensor, dim: int) -> None:
    value = getattr(module, name, None)
    if value is None:
        return
    sliced = value.detach().index_select(dim, index.to(value.device)).clone()
    if isinstance(value, nn.Parameter):
        setattr(module, name, nn.Parameter(sliced, requires_grad=value.requires_grad))
    else:
        module._buffers[name] = sliced  # a registered buffer keeps its registration


def _shrink_outputs(module: nn.Module, keep: torch.Tensor) -> None:
    for name in ("weight", "bias", MASK_BUFFER, NEURON_BUFFER):
        _slice_param(module, name, keep, 0)
    if isinstance(module, nn.Linear):
        module.out_features = int(keep.numel())
    else:
        module.out_channels = int(keep.numel())


def _shrink_norm(norm: nn.Module, keep: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        _slice_param(norm, name, keep, 0)
    norm.num_features = int(keep.numel())


def _shrink_inputs(consumer: nn.Module, keep: torch.Tensor, n_units: int) -> None:
    """Drop the fan-in of ``consumer`` that came from removed units (a conv's channels, or flattened blocks)."""
    fan_in = consumer.weight.shape[1] * (consumer.groups if isinstance(consumer, nn.modules.conv._ConvNd) else 1)
    if isinstance(consumer, nn.modules.conv._ConvNd):
        if consumer.groups != 1 or fan_in != n_units:
            raise ValueError("consumer conv does not take these channels one to one")
        cols = keep
        consumer.in_channels = int(keep.numel())
    else:
        if fan_in % n_units:
            raise ValueError(f"consumer fan-in {fan_in} is not a multiple of {n_units} units")
        block = fan_in // n_units
        cols = (keep.unsqueeze(1) * block + torch.arange(block)).reshape(-1)
        consumer.in_features = int(cols.numel())
    for name in ("weight", MASK_BUFFER):
        _slice_param(consumer, name, cols, 1)


class StatefulModelError(ValueError):
    """The model's output on one input differs between two calls: something (usually a neuron's membrane) carries
    state from one forward call to the next, so no removal can be verified."""


def _outputs(model: nn.Module, example: torch.Tensor, reset: Callable[[nn.Module], Any] | None) -> torch.Tensor:
    if reset is not None:
        reset(model)
    with torch.no_grad():
        return model(example)


def _close(out: torch.Tensor, reference: torch.Tensor, tolerance: float) -> bool:
    # written as "not <=" so that a NaN difference counts as changed
    return out.shape == reference.shape and (out.numel() == 0 or float((out - reference).abs().max()) <= tolerance)


def compact(
    model: nn.Module,
    example_input: torch.Tensor,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    reset: Callable[[nn.Module], Any] | None = None,
) -> tuple[nn.Module, CompactionReport]:
    """Return a copy of ``model`` (in eval mode) with dead units removed, and a report.

    Every removal is verified on ``example_input``: ``max |out - ref| <= atol + rtol * max |ref|``. The relative
    part is for analog outputs (logits of a non-spiking readout): a matrix product over fewer, but the same nonzero,
    terms rounds differently, by a few float32 ulps of the output's scale (about 1e-6 on logits near 15); a removal
    that changes the network (a residual connection) moves outputs by far more.
    Masks and hooks of a structure learner should be baked in first (``learner.finalize()``); mask buffers that are
    still present are sliced along.

    ``reset``: called on the model before every verifying forward call, for models whose neurons keep their state
    between calls and are reset by the training loop instead of in ``forward`` (SpikingJelly's
    ``functional.reset_net``; snnTorch's ``utils.reset``). Without it, a model whose output on ``example_input``
    differs between two calls raises :class:`StatefulModelError`, because no removal could be verified against it.
    """
    base = copy.deepcopy(model).eval()
    reference = _outputs(base, example_input, reset)
    tolerance = atol + rtol * (float(reference.abs().max()) if reference.numel() else 0.0)
    again = _outputs(base, example_input, reset)
    repeatable = again.shape == reference.shape and torch.allclose(
        again, reference, rtol=0.0, atol=tolerance, equal_nan=True
    )
    if not repeatable:
        fix = (
            "the reset callable did not clear it"
            if reset is not None
            else "pass reset= a callable that clears it, e.g. compact(model, x, reset=spikingjelly.activation_based."
            "functional.reset_net), or reset the neurons inside forward"
        )
        raise StatefulModelError(
            f"compact: two calls of {type(model).__name__} on the same example_input gave different outputs "
            f"(max |difference| {float((again - reference).abs().max()) if again.shape == reference.shape else 'n/a'}"
            f" > {tolerance:.3g}): a module carries state between forward calls (a neuron's membrane potential not "
            f"reset in forward), so removals cannot be verified; {fix}"
        )
    report = CompactionReport(params_before=sum(p.numel() for p in base.parameters()))
    names = [n for n, _ in prunable_layers(base)]
    for i, name in enumerate(names[:-1]):  # the last layer's outputs are the model's outputs: never removed
        modules = dict(base.named_modules())
        layer = modules[name]
        norm = following_norm(base, name)
        norm_name = next((n for n, m in modules.items() if m is norm), None) if norm is not None else None
        dead = dead_units(layer, norm)
        n_dead = int(dead.sum())
        if n_dead == 0:
            continue
        n_units = int(dead.numel())
        if n_dead == n_units:
            report.kept[name] = "every unit is dead: the layer would vanish"
            continue
        keep = torch.nonzero(~dead).flatten().cpu()
        trial = copy.deepcopy(base)
        trial_modules = dict(trial.named_modules())
        try:
            _shrink_outputs(trial_modules[name], keep)
            if norm_name is not None:
                _shrink_norm(trial_modules[norm_name], keep)
            _shrink_inputs(trial_modules[names[i + 1]], keep, n_units)
            out = _outputs(trial, example_input, reset)
        except (ValueError, RuntimeError, IndexError) as exc:
            report.kept[name] = f"not compactable: {exc}"
            continue
        if not _close(out, reference, tolerance):
            report.kept[name] = "removing its dead units changed the output (e.g. a residual connection)"
            continue
        base = trial
        report.removed[name] = (n_units, int(keep.numel()))
    report.params_after = sum(p.numel() for p in base.parameters())
    return base, report
