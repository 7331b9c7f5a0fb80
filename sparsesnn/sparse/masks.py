"""Synapse masks as module buffers: selection of prunable layers, initial density distributions, optimiser hygiene.

Invariant kept by this module: **an absent synapse has weight exactly 0 and optimiser moments exactly 0**. It is
established when a mask is attached or changed, restored after every step of the optimiser the masks were given (a
step post-hook), after every ``learner.step()`` (:meth:`MaskSet.restore`: whatever optimiser stepped), after every
``load_state_dict`` of a masked module, before its ``state_dict`` is read, and **before every forward call** of a masked
layer whose weight (or, with pruned neurons, bias / following BatchNorm) was written in place since the invariant
last held: a forward pre-hook compares the tensors' version counters, so any optimiser, the one the masks were
given, another one or none, and any in-place update, cannot bring an absent synapse back into the computation (the
forward pass uses masked weights whatever is stepped). The step hook remains for the moments of the optimiser it
knows: a different optimiser's moments are not masked, so its stale moments keep moving absent weights between
forwards, and the pre-hook zeroes them again. Writes through ``.data`` bypass version counters and are not seen
until the next optimiser step or forward after a tracked write. Under ``torch.compile`` the pre-hook multiplies by
the masks unconditionally (version counters are not traceable): one elementwise product per layer and call. The
forward pass therefore computes ``W * M`` without a multiply, and
the gradient that autograd produces for ``W`` is the *dense* gradient ``dL/d(W * M)``; a tensor hook on the weight
multiplies it by ``M`` before the optimiser sees it, after handing the dense copy to a structure learner on the steps
that need it (RigL-style growth). Compared with a parametrization (``W_eff = W * M`` in forward) this keeps
``state_dict`` keys unchanged, costs no extra forward op, survives a weight used at every time step of a
user's own loop, and gives the dense gradient for free.

Masks are ``bool`` buffers named ``weight_mask`` on the module, so they travel with ``model.state_dict()``. Beside
it, ``neuron_mask`` (one entry per output unit / channel) marks neurons as alive or pruned: a pruned neuron has no
input synapses, and its bias and the entries of a BatchNorm that directly follows the layer (``gamma``, ``beta``)
are held at zero too, so its input is exactly 0 and it never fires (for ``v_reset < v_threshold``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
MASK_BUFFER = "weight_mask"
NEURON_BUFFER = "neuron_mask"
DISTRIBUTIONS = ("uniform", "er", "erk")


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv/Linear of ``model`` (any ``nn.Module``: ours, SpikingJelly's, snnTorch's), in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES) and m.weight is not None]


def select_layers(
    model: nn.Module,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    dense_first: bool = False,
    dense_last: bool = False,
) -> list[tuple[str, nn.Module]]:
    """The layers to mask: all Conv/Linear, filtered by fnmatch ``include``/``exclude`` patterns on module names.

    ``dense_first`` / ``dense_last`` keep the first / last Conv/Linear of the model dense (unmasked).

    Warns (``UserWarning``) for each ``include`` / ``exclude`` pattern that matches no Conv/Linear, naming the
    pattern and the layer names it could match (a typo would otherwise mask what it meant to keep dense, or the
    reverse). A frozen layer (weight with ``requires_grad=False``) is not masked: a mask could never regrow there
    and its gradient hook cannot be registered; the selection skips it with a warning naming it. Layers whose weight
    is one shared Parameter (tied weights) are refused (``ValueError``, naming them): one tensor cannot carry two
    masks. Exclude all but one of them; its mask then holds for the shared weight wherever it is used.
    """
    layers = prunable_layers(model)
    if not layers:
        raise ValueError("the model has no Conv/Linear layers to sparsify")
    names = [n for n, _ in layers]
    for kind, patterns in (("include", include), ("exclude", exclude)):
        for p in patterns:
            if not any(fnmatch.fnmatchcase(n, p) for n in names):
                warnings.warn(
                    f"{kind} pattern {p!r} matches no layer, so it {kind}s nothing; the Conv/Linear layers are "
                    f"{names} (fnmatch patterns on these names, e.g. 'features.*')",
                    UserWarning,
                    stacklevel=3,
                )
    first, last = layers[0][0], layers[-1][0]
    chosen = []
    frozen = []
    for name, module in layers:
        if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in exclude):
            continue
        if (dense_first and name == first) or (dense_last and name == last):
            continue
        if not module.weight.requires_grad:
            frozen.append(name)
            continue
        chosen.append((name, module))
    if frozen:
        warnings.warn(
            f"frozen layers (weight with requires_grad=False) are left dense, not masked: {frozen}; exclude them "
            "to silence this, or unfreeze them before building the learner to sparsify them",
            UserWarning,
            stacklevel=3,
        )
    if not chosen:
        raise ValueError(
            f"no layer left to sparsify after include={list(include)}, exclude={list(exclude)}, "
            f"dense_first={dense_first}, dense_last={dense_last}"
            + (f", frozen layers skipped {frozen}" if frozen else "")
            + f"; layers are {names}"
        )
    check_untied(chosen)
    return chosen


def check_untied(layers: Sequence[tuple[str, nn.Module]]) -> None:
    """Refuse layers that share one weight Parameter (tied weights), naming them: one tensor cannot carry a mask per
    layer (two masks on it made autograd fail with "modified by an inplace operation")."""
    by_weight: dict[int, list[str]] = {}
    for name, module in layers:
        by_weight.setdefault(id(module.weight), []).append(name)
    for tied in by_weight.values():
        if len(tied) > 1:
            raise ValueError(
                f"layers {' and '.join(repr(n) for n in tied)} share one weight Parameter (tied weights), which "
                "cannot carry a mask per layer: exclude all but one of them (sparse.exclude); the one left masks the "
                "shared weight wherever it is used"
            )


def following_norm(model: nn.Module, name: str) -> nn.Module | None:
    """The BatchNorm that directly follows layer ``name`` in registration order, if its size matches the outputs.

    This is how our blocks (``SeqFolded(conv, bn)``), SpikingJelly's and most hand-written SNNs are laid out; a
    norm that is not the very next leaf module is not assumed to belong to the layer.
    """
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    names = [n for n, _ in leaves]
    if name not in names:
        return None
    idx = names.index(name)
    layer = leaves[idx][1]
    if idx + 1 < len(leaves):
        nxt = leaves[idx + 1][1]
        if isinstance(nxt, nn.modules.batchnorm._BatchNorm) and nxt.num_features == layer.weight.shape[0]:
            return nxt
    return None


def fan_shape(weight: torch.Tensor) -> tuple[int, int, int]:
    """``(n_out, n_in, kernel_elems)`` of a Linear/Conv weight."""
    n_out, n_in = weight.shape[0], weight.shape[1]
    kernel = int(math.prod(weight.shape[2:])) if weight.dim() > 2 else 1
    return n_out, n_in, kernel


def raw_density_scale(weight: torch.Tensor, distribution: str) -> float:
    """The un-normalised per-layer density ``d_l / eps`` of ER / ERK (Mocanu et al. 2018; Evci et al. 2020).

    ER: ``(n_in + n_out) / (n_in * n_out)`` over channels (a conv's kernel size ignored, as in RigL's
    ``erdos_renyi``); ERK (conv): ``(c_in + c_out + k_h + k_w) / (c_in * c_out * k_h * k_w)``. For a Linear layer
    ERK equals ER.
    """
    n_out, n_in, kernel = fan_shape(weight)
    if distribution == "er" or weight.dim() == 2:
        return (n_in + n_out) / (n_in * n_out)
    if distribution == "erk":
        return (n_in + n_out + sum(weight.shape[2:])) / (n_in * n_out * kernel)
    raise ValueError(f"unknown distribution {distribution!r}; choose one of {DISTRIBUTIONS}")


def layer_densities(
    weights: Sequence[torch.Tensor], density: float, distribution: str, costs: Sequence[float] | None = None
) -> list[float]:
    """Per-layer densities whose cost-weighted mean is ``density``.

    ``costs[l]`` is what layer ``l`` weighs in the budget: its number of weights ``n_l`` by default (the parameter
    budget), its dense MACs with the MAC budget (:mod:`sparsesnn.sparse.budget`). ``uniform`` gives every layer
    ``density``. ER/ERK solve ``sum_l min(1, eps * s_l) * c_l = density * sum_l c_l`` for ``eps``: a layer whose
    density would exceed 1 is made dense and ``eps`` is re-solved over the rest (RigL's ``get_sparsities``
    procedure, there with ``c_l = n_l``).
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; choose one of {DISTRIBUTIONS}")
    sizes = [float(w.numel()) for w in weights] if costs is None else [float(c) for c in costs]
    if len(sizes) != len(weights):
        raise ValueError(f"{len(costs or ())} costs for {len(weights)} layers")
    if distribution == "uniform" or density == 1.0:
        return [density] * len(weights)
    scales = [raw_density_scale(w, distribution) for w in weights]
    dense: set[int] = set()
    total = sum(sizes)
    while True:
        budget = density * total - sum(sizes[i] for i in dense)
        denom = sum(scales[i] * sizes[i] for i in range(len(sizes)) if i not in dense)
        eps = budget / denom
        over = [i for i in range(len(sizes)) if i not in dense and eps * scales[i] > 1.0]
        if not over:
            return [1.0 if i in dense else eps * scales[i] for i in range(len(sizes))]
        dense.update(over)


def active_count(numel: int, density: float) -> int:
    """Number of synapses a layer of ``numel`` weights keeps at ``density`` (rounded, at least 1)."""
    return max(1, min(numel, round(density * numel)))


def random_mask(shape: torch.Size, n_active: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A bool mask with exactly ``n_active`` True entries at uniformly random positions."""
    numel = int(math.prod(shape))
    idx = torch.randperm(numel, generator=generator)[:n_active].to(device)
    mask = torch.zeros(numel, dtype=torch.bool, device=device)
    mask[idx] = True
    return mask.view(shape)


@dataclass
class MaskedLayer:
    """One masked Conv/Linear: its name, module, and the hook handles that keep its invariant."""

    name: str
    module: nn.Module
    norm: nn.Module | None = None
    handles: list[RemovableHandle] = field(default_factory=list)
    #: the version counters of :meth:`guarded` when the invariant was last restored (``None``: never)
    clean_versions: tuple[int, ...] | None = None

    def guarded(self) -> list[torch.Tensor]:
        """The tensors the invariant zeroes: the weight, the bias, and the entries of a following BatchNorm."""
        tensors = [self.weight]
        bias = getattr(self.module, "bias", None)
        if isinstance(bias, torch.Tensor):
            tensors.append(bias)
        if self.norm is not None:
            tensors.extend(p for p in (self.norm.weight, self.norm.bias) if isinstance(p, torch.Tensor))
        return tensors

    def versions(self) -> tuple[int, ...]:
        return tuple(t._version for t in self.guarded())

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight  # type: ignore[return-value]

    @property
    def mask(self) -> torch.Tensor:
        return getattr(self.module, MASK_BUFFER)

    @property
    def neuron_mask(self) -> torch.Tensor:
        return getattr(self.module, NEURON_BUFFER)

    def rows(self) -> torch.Tensor:
        """The mask viewed as ``[n_out, fan_in]``."""
        return self.mask.reshape(self.mask.shape[0], -1)

    def alive_synapse_slots(self) -> torch.Tensor:
        """Bool mask (weight-shaped) of positions whose output neuron is alive: the only places growth may use."""
        shape = (-1,) + (1,) * (self.mask.dim() - 1)
        return self.neuron_mask.view(shape).expand_as(self.mask)

    def active(self) -> int:
        return int(self.mask.sum())

    def numel(self) -> int:
        return self.mask.numel()


GradSink = Callable[[str, torch.Tensor], None]


class MaskSet:
    """The masks of a model and the hooks that enforce them.

    ``grad_sink`` (optional) receives ``(layer_name, dense_grad)`` whenever ``capture`` is True, before the gradient
    is masked; a structure learner arms it only on the steps where it needs dense gradients.
    """

    def __init__(
        self,
        layers: list[tuple[str, nn.Module]],
        optimizer: torch.optim.Optimizer | None = None,
        model: nn.Module | None = None,
    ) -> None:
        self.layers: list[MaskedLayer] = []
        self.optimizer = optimizer
        self.capture = False
        self.grad_sink: GradSink | None = None
        self._opt_handle: RemovableHandle | None = None
        check_untied(layers)
        for name, module in layers:
            if hasattr(module, MASK_BUFFER):
                raise ValueError(f"layer {name!r} already carries a {MASK_BUFFER!r}: is the model prepared twice?")
            weight = module.weight
            if not weight.requires_grad:
                raise ValueError(
                    f"layer {name!r} is frozen (weight with requires_grad=False) and cannot be masked: its gradient "
                    "cannot be masked; leave it out of the masked layers (select_layers skips frozen layers)"
                )
            module.register_buffer(MASK_BUFFER, torch.ones_like(weight, dtype=torch.bool))
            module.register_buffer(NEURON_BUFFER, torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device))
            layer = MaskedLayer(name, module, following_norm(model, name) if model is not None else None)
            layer.handles.append(weight.register_hook(self._grad_hook(layer)))
            layer.handles.append(module.register_forward_pre_hook(self._before_forward(layer)))
            layer.handles.append(module.register_load_state_dict_post_hook(self._after_load(layer)))
            layer.handles.append(module.register_state_dict_pre_hook(self._before_save(layer)))
            self.layers.append(layer)
        if optimizer is not None:
            self._opt_handle = optimizer.register_step_post_hook(lambda *_: self.apply())

    # -- hooks ------------------------------------------------------------------------------------------------------
    def _grad_hook(self, layer: MaskedLayer) -> Callable[[torch.Tensor], torch.Tensor]:
        def hook(grad: torch.Tensor) -> torch.Tensor:
            if self.capture and self.grad_sink is not None:
                self.grad_sink(layer.name, grad.detach())
            return grad * layer.mask

        return hook

    def _before_forward(self, layer: MaskedLayer) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: object) -> None:
            if torch.compiler.is_compiling():
                self._mask_in_graph(layer)
            elif layer.versions() != layer.clean_versions:
                self.apply_layer(layer)

        return hook

    @torch.no_grad()
    def _mask_in_graph(self, layer: MaskedLayer) -> None:
        """The traceable form of :meth:`apply_layer` for the weights: unconditional products with the masks."""
        layer.weight.mul_(layer.mask)
        alive = layer.neuron_mask
        for t in layer.guarded()[1:]:
            t.mul_(alive)

    def _before_save(self, layer: MaskedLayer) -> Callable[..., None]:
        def hook(_module: nn.Module, _prefix: str, _keep_vars: bool) -> None:
            self.restore_layer(layer)

        return hook

    def _after_load(self, layer: MaskedLayer) -> Callable[..., None]:
        def hook(_module: nn.Module, _incompatible: object) -> None:
            self.apply_layer(layer)

        return hook

    # -- enforcing the invariant ------------------------------------------------------------------------------------
    @torch.no_grad()
    def apply_layer(self, layer: MaskedLayer) -> None:
        """Zero the absent weights of ``layer``, their optimiser moments, and a pruned neuron's bias / BN entries."""
        self._zero(layer.weight, layer.mask)
        alive = layer.neuron_mask
        if not bool(alive.all()):
            for t in layer.guarded()[1:]:
                self._zero(t, alive)
        layer.clean_versions = layer.versions()

    def _zero(self, param: torch.Tensor, keep: torch.Tensor) -> None:
        param.mul_(keep)
        if self.optimizer is not None:
            state = self.optimizer.state.get(param)
            if state:
                for value in state.values():
                    if isinstance(value, torch.Tensor) and value.shape == keep.shape:
                        value.mul_(keep)

    def apply(self) -> None:
        for layer in self.layers:
            self.apply_layer(layer)

    def restore_layer(self, layer: MaskedLayer) -> None:
        """:meth:`apply_layer` if ``layer``'s guarded tensors were written in place since the invariant last held."""
        if layer.versions() != layer.clean_versions:
            self.apply_layer(layer)

    def restore(self) -> None:
        """Restore the invariant wherever an in-place write (an optimiser step, the masks' own or another's) broke
        it: what :class:`~sparsesnn.sparse.learner.StructureLearner` does after every optimiser step it is told of."""
        for layer in self.layers:
            self.restore_layer(layer)

    @torch.no_grad()
    def set_mask(self, layer: MaskedLayer, mask: torch.Tensor) -> None:
        """Replace ``layer``'s mask (same shape, bool) and restore the invariant."""
        if mask.shape != layer.mask.shape or mask.dtype != torch.bool:
            raise ValueError(f"mask for {layer.name} must be bool of shape {tuple(layer.mask.shape)}")
        layer.mask.copy_(mask)
        self.apply_layer(layer)

    @torch.no_grad()
    def set_neuron_mask(self, layer: MaskedLayer, alive: torch.Tensor) -> None:
        """Mark output neurons alive (True) or pruned (False); a pruned neuron loses every input synapse."""
        if alive.shape != layer.neuron_mask.shape or alive.dtype != torch.bool:
            raise ValueError(f"neuron mask for {layer.name} must be bool of shape {tuple(layer.neuron_mask.shape)}")
        layer.neuron_mask.copy_(alive)
        layer.mask.mul_(layer.alive_synapse_slots())
        self.apply_layer(layer)

    # -- accounting -------------------------------------------------------------------------------------------------
    def active(self) -> int:
        return sum(layer.active() for layer in self.layers)

    def numel(self) -> int:
        return sum(layer.numel() for layer in self.layers)

    def density(self) -> float:
        total = self.numel()
        return self.active() / total if total else 1.0

    def by_name(self) -> dict[str, MaskedLayer]:
        return {layer.name: layer for layer in self.layers}

    # -- teardown ---------------------------------------------------------------------------------------------------
    def remove(self, keep_buffers: bool = False) -> None:
        """Bake masks into the weights and remove every hook (and the mask buffers unless ``keep_buffers``)."""
        self.apply()
        for layer in self.layers:
            for h in layer.handles:
                h.remove()
            if not keep_buffers:
                delattr(layer.module, MASK_BUFFER)
                delattr(layer.module, NEURON_BUFFER)
        if self._opt_handle is not None:
            self._opt_handle.remove()
        self.layers = []


def masks_digest(masks: list[torch.Tensor]) -> int:
    """A 63-bit digest of a list of bool masks (identical masks give identical digests on every rank)."""
    h = hashlib.blake2b(digest_size=8)
    for m in masks:
        h.update(m.detach().to("cpu", torch.uint8).numpy().tobytes())
    return int.from_bytes(h.digest(), "little") >> 1
