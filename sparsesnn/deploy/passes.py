"""Rewrites of an inference model that keep its outputs (up to float rounding) and drop work: the passes that
:func:`sparsesnn.deploy.deploy` runs before it chooses between dense and event-driven layers.

- :func:`fold_norms`: a BatchNorm right after a Conv2d / Linear in an ``nn.Sequential`` is folded into it with the
  running statistics (``W' = W * gamma / sqrt(var + eps)``, ``b' = beta + (b - mean) * gamma / sqrt(var + eps)``,
  computed in float64) where the example proves that it normalises that layer's output channels and nothing else
  reads that layer (its docstring gives the rule); every other norm is left, with the reason. One pass over the
  activations fewer, and an event-driven layer then carries the normalisation in its synapses.
- :func:`replace_neurons`: our LIF / PLIF become :class:`~sparsesnn.deploy.lif.InferenceLIF` (one compiled loop,
  no autograd dispatch).
- :func:`replace_pools`: a plain ``nn.MaxPool2d`` becomes :class:`~sparsesnn.deploy.pool.InferenceMaxPool2d`
  (exact).
- :func:`wrap_step_invariant`: a :class:`~sparsesnn.neuron.layers.SeqFolded` of stateless layers whose input was the
  same at every time step on the example (direct encoding repeats the static image ``T`` times) is wrapped in
  :class:`StepInvariant`, which checks that at each call and then computes one step instead of ``T``.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from sparsesnn.deploy.event_layers import EventBackend, inference
from sparsesnn.deploy.lif import InferenceLIF, is_plain_lif
from sparsesnn.deploy.pool import InferenceMaxPool2d, is_plain_max_pool
from sparsesnn.interop.fold import fold_batchnorm
from sparsesnn.neuron.layers import SeqFolded

_NORM_AFTER: dict[type[nn.Module], type[nn.Module]] = {nn.Conv2d: nn.BatchNorm2d, nn.Linear: nn.BatchNorm1d}
#: the rank of the layer's output the fold assumes: Conv2d -> BatchNorm2d on [N, C, H, W], Linear -> BatchNorm1d on
#: [N, features] (on [N, C, L] BatchNorm1d normalises axis 1, not the Linear's output features on the last axis)
_FOLD_RANK: dict[type[nn.Module], int] = {nn.Conv2d: 4, nn.Linear: 2}


def run_with_hooks(model: nn.Module, example: torch.Tensor, handles: list[torch.utils.hooks.RemovableHandle]) -> None:
    """Run ``model`` on ``example`` without gradients for the hooks in ``handles`` to record what they see, then
    remove them, also when the model raised."""
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()


class FoldedNorm(nn.Identity):
    """What stands where a BatchNorm was folded into the layer before it: passes its input through, and refuses an
    input of another rank than the fold was proven for (on it the norm would have acted on another axis, or failed)."""

    def __init__(self, norm_type: str, rank: int) -> None:
        super().__init__()
        self.norm_type = norm_type
        self.rank = rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.rank:
            raise ValueError(
                f"a {self.norm_type} was folded into the layer before it for {self.rank}-D input (deploy's example), "
                f"got shape {tuple(x.shape)}: deploy the model again on an example of this shape"
            )
        return x

    def extra_repr(self) -> str:
        return f"folded {self.norm_type}, {self.rank}-D input"


def _trusted_container(seq: nn.Module) -> bool:
    """A Sequential whose forward passes each child's output to the next child only: ``nn.Sequential``'s own, or
    :class:`SeqFolded`'s (one reshape around it)."""
    forward = type(seq).forward
    return forward is nn.Sequential.forward or forward is SeqFolded.forward


def fold_norms(model: nn.Module, example: torch.Tensor) -> tuple[list[str], dict[str, str]]:
    """Fold, in place, each eval-mode BatchNorm that provably normalises the output channels of the Conv2d / Linear
    before it; returns the names of the folded norms and, for every other BatchNorm, why it was left.

    A norm is folded only when all of these hold (the rest of the model is run once on ``example`` to check them):

    - it directly follows a Conv2d (a BatchNorm2d) or a Linear (a BatchNorm1d) inside an ``nn.Sequential`` whose
      forward is ``nn.Sequential``'s or :class:`SeqFolded`'s (each child's output goes to the next child only);
    - it has running statistics;
    - the layer and the norm are each registered once in the model, the layer's parameters belong to it alone, and
      on the example every call of the layer was followed by a call of the norm on exactly the tensor the layer
      returned (the layer's output feeds only that norm: a module used on two paths is never folded);
    - its input had the rank the fold assumes: 4-D ``[N, C, H, W]`` after a Conv2d, and 2-D ``[N, features]`` after a
      Linear (a Linear over the last axis of ``[N, C, L]`` followed by ``BatchNorm1d(C)`` normalises another axis
      than the Linear's outputs, and is left as it is).

    A folded norm becomes a :class:`FoldedNorm`, which raises on input of another rank."""
    names_of: dict[int, list[str]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        names_of.setdefault(id(m), []).append(name)
    owners: dict[int, int] = {}
    for m in model.modules():
        for p in m.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    norms = {name: m for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    not_folded = {name: "it does not directly follow a Conv2d or Linear in an nn.Sequential" for name in norms}
    candidates: list[tuple[str, nn.Module, str, nn.Module, nn.Module, str]] = []  # norm, seq, child, layer, norm
    for seq_name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for (layer_child, layer), (norm_child, norm) in itertools.pairwise(seq.named_children()):
            name = f"{seq_name}.{norm_child}" if seq_name else norm_child
            if name not in norms:
                continue
            layer_name = f"{seq_name}.{layer_child}" if seq_name else layer_child
            want = _NORM_AFTER.get(type(layer))
            if want is None:
                continue
            if type(norm) is not want:
                not_folded[name] = (
                    f"a {type(norm).__name__} after the {type(layer).__name__} {layer_name} (only "
                    "Conv2d -> BatchNorm2d and Linear -> BatchNorm1d are folded)"
                )
            elif not _trusted_container(seq):
                not_folded[name] = (
                    f"its container {type(seq).__name__} overrides nn.Sequential.forward, so where the output of "
                    f"{layer_name} goes cannot be checked"
                )
            elif norm.running_mean is None or norm.running_var is None:
                not_folded[name] = "it has no running statistics (it normalises with batch statistics)"
            elif len(names_of[id(layer)]) > 1 or len(names_of[id(norm)]) > 1:
                shared = layer if len(names_of[id(layer)]) > 1 else norm
                not_folded[name] = (
                    f"{type(shared).__name__} is registered more than once in the model "
                    f"({', '.join(names_of[id(shared)])}): folding would change it on every path"
                )
            elif any(owners[id(p)] > 1 for p in layer.parameters(recurse=False)):
                not_folded[name] = f"the parameters of {layer_name} are shared with another module"
            else:
                candidates.append((name, seq, norm_child, layer, norm, layer_name))
    # on the example: does every output of the layer go to the norm, and with which rank?
    calls: dict[str, list[int]] = {name: [0, 0, 0] for name, *_ in candidates}  # layer calls, norm calls, fed ranks
    last: dict[str, torch.Tensor | None] = {}
    bad_rank: dict[str, int] = {}
    handles = []

    def after_layer(name: str, out: object) -> None:
        calls[name][0] += 1
        last[name] = out if isinstance(out, torch.Tensor) else None

    def before_norm(name: str, rank: int, x: object) -> None:
        calls[name][1] += 1
        if x is not None and x is last.get(name):
            calls[name][2] += 1
            if isinstance(x, torch.Tensor) and x.dim() != rank:
                bad_rank.setdefault(name, x.dim())
        last[name] = None

    for name, _seq, _child, layer, norm, _layer_name in candidates:
        rank = _FOLD_RANK[type(layer)]
        handles.append(layer.register_forward_hook(lambda _m, _a, out, name=name: after_layer(name, out)))
        handles.append(
            norm.register_forward_pre_hook(lambda _m, args, name=name, rank=rank: before_norm(name, rank, args[0]))
        )
    run_with_hooks(model, example, handles)
    folded: list[str] = []
    for name, seq, norm_child, layer, norm, layer_name in candidates:
        layer_calls, norm_calls, fed = calls[name]
        if layer_calls == 0:
            not_folded[name] = f"{layer_name} did not run on the example"
            continue
        if not layer_calls == norm_calls == fed:
            not_folded[name] = (
                f"on the example {layer_name} ran {layer_calls} time(s) and fed this norm {fed} time(s) (it ran "
                f"{norm_calls} time(s)): a layer whose output goes elsewhere too, or a norm called more than once "
                "per layer call, is not folded"
            )
            continue
        rank = _FOLD_RANK[type(layer)]
        if name in bad_rank:
            not_folded[name] = f"its input from {layer_name} was {bad_rank[name]}-D, not {rank}-D: " + (
                f"{type(norm).__name__} normalises axis 1, not the Linear's output features on the last axis"
                if isinstance(layer, nn.Linear)
                else "the fold is only proven for that rank"
            )
            continue
        assert isinstance(layer, (nn.Conv2d, nn.Linear)) and isinstance(norm, nn.modules.batchnorm._BatchNorm)
        weight, bias = fold_batchnorm(layer.weight, layer.bias, norm)
        with torch.no_grad():
            layer.weight.copy_(weight)
            if layer.bias is None:
                layer.bias = nn.Parameter(bias, requires_grad=False)
            else:
                layer.bias.copy_(bias)
        setattr(seq, norm_child, FoldedNorm(type(norm).__name__, rank))
        folded.append(name)
        del not_folded[name]
    return folded, not_folded


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

    @inference
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() >= 3 and x.shape[0] > 1 and (x.stride(0) == 0 or torch.equal(x[1:], x[:-1])):
            y = self.layers(x[:1])  # every step equals the next (one comparison op), or x is one step expanded
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
    run_with_hooks(model, example, handles)
    names = [name for name, invariant in seen.items() if invariant]
    for name in names:
        set_child(model, name, StepInvariant(folded[name]))
    return names


def set_child(root: nn.Module, name: str, child: nn.Module) -> None:
    """Replace the submodule ``name`` (dotted) of ``root`` by ``child``."""
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, child)
