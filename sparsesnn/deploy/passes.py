"""Rewrites of an inference model that keep its outputs (up to float rounding) and drop work: the passes that
:func:`sparsesnn.deploy.deploy` runs before it chooses between dense and event-driven layers.

- :func:`fold_norms`: a BatchNorm right after a Conv2d / Linear in an ``nn.Sequential`` is folded into it with the
  running statistics (``W' = W * gamma / sqrt(var + eps)``, ``b' = beta + (b - mean) * gamma / sqrt(var + eps)``,
  computed in float64) and replaced by ``nn.Identity``: one pass over the activations fewer, and an event-driven
  layer then carries the normalisation in its synapses.
- :func:`replace_neurons`: our LIF / PLIF become :class:`~sparsesnn.inference_lif.InferenceLIF` (one compiled loop,
  no autograd dispatch).
- :func:`replace_pools`: a plain ``nn.MaxPool2d`` becomes :class:`~sparsesnn.inference_pool.InferenceMaxPool2d`
  (exact).
- :func:`wrap_step_invariant`: a :class:`~sparsesnn.layers.SeqFolded` of stateless layers whose input was the same at
  every time step on the example (direct encoding repeats the static image ``T`` times) is wrapped in
  :class:`StepInvariant`, which checks that at each call and then computes one step instead of ``T``.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from sparsesnn.deploy.event_layers import EventBackend
from sparsesnn.deploy.lif import InferenceLIF, is_plain_lif
from sparsesnn.deploy.pool import InferenceMaxPool2d, is_plain_max_pool
from sparsesnn.interop.fold import fold_batchnorm
from sparsesnn.neuron.layers import SeqFolded

_NORM_AFTER: dict[type[nn.Module], type[nn.Module]] = {nn.Conv2d: nn.BatchNorm2d, nn.Linear: nn.BatchNorm1d}


def fold_norms(model: nn.Module) -> list[str]:
    """Fold every eval-mode BatchNorm that directly follows a Conv2d / Linear inside an ``nn.Sequential`` into that
    layer, in place; returns the names of the folded norms. A norm without running statistics is left alone."""
    folded: list[str] = []
    for seq_name, seq in list(model.named_modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.named_children())
        for (_, layer), (norm_name, norm) in itertools.pairwise(children):
            want = _NORM_AFTER.get(type(layer))
            if want is None or type(norm) is not want:
                continue
            assert isinstance(layer, (nn.Conv2d, nn.Linear)) and isinstance(norm, nn.modules.batchnorm._BatchNorm)
            if norm.running_mean is None or norm.running_var is None:
                continue
            weight, bias = fold_batchnorm(layer.weight, layer.bias, norm)
            with torch.no_grad():
                layer.weight.copy_(weight)
                if layer.bias is None:
                    layer.bias = nn.Parameter(bias, requires_grad=False)
                else:
                    layer.bias.copy_(bias)
            setattr(seq, norm_name, nn.Identity())
            folded.append(f"{seq_name}.{norm_name}" if seq_name else norm_name)
    return folded


def replace_neurons(model: nn.Module, backend: EventBackend = "auto") -> list[str]:
    """Replace every :class:`LIF` / :class:`PLIF` (exactly those classes) by its :class:`InferenceLIF`, in place;
    returns their names."""
    names = [name for name, m in model.named_modules() if name and is_plain_lif(m)]
    for name in names:
        set_child(model, name, InferenceLIF(model.get_submodule(name), backend))
    return names


def replace_pools(model: nn.Module, backend: EventBackend = "auto") -> list[str]:
    """Replace every plain ``nn.MaxPool2d`` (:func:`is_plain_max_pool`) by its compiled loop, in place; returns
    their names."""
    names = [name for name, m in model.named_modules() if name and is_plain_max_pool(m)]
    for name in names:
        pool = model.get_submodule(name)
        assert isinstance(pool, nn.MaxPool2d)
        set_child(model, name, InferenceMaxPool2d(pool, backend))
    return names


class StepInvariant(nn.Module):
    """Runs stateless time-folded layers on one time step when all ``T`` steps of the input are equal, and expands
    the result over ``T``; otherwise on all of them. Exact: a stateless layer maps equal steps to equal outputs."""

    def __init__(self, layers: SeqFolded) -> None:
        super().__init__()
        self.layers = layers

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() >= 3 and x.shape[0] > 1 and bool((x[1:] == x[:1]).all()):
            y = self.layers(x[:1])
            return y.expand(x.shape[0], *y.shape[1:])
        return self.layers(x)


def wrap_step_invariant(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Wrap, in place, each :class:`SeqFolded` whose input on ``example`` was equal at every time step in a
    :class:`StepInvariant`; returns their names."""
    seen: dict[str, bool] = {}
    folded = {name: m for name, m in model.named_modules() if name and type(m) is SeqFolded}

    def record(name: str, x: torch.Tensor) -> None:
        seen.setdefault(name, x.dim() >= 3 and x.shape[0] > 1 and bool((x[1:] == x[:1]).all()))

    handles = [
        m.register_forward_pre_hook(lambda _m, args, name=name: record(name, args[0])) for name, m in folded.items()
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    names = [name for name, invariant in seen.items() if invariant]
    for name in names:
        set_child(model, name, StepInvariant(folded[name]))
    return names


def set_child(root: nn.Module, name: str, child: nn.Module) -> None:
    """Replace the submodule ``name`` (dotted) of ``root`` by ``child``."""
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, child)
