"""NIR export of a (compacted) SNN, and our own NIR loader that re-simulates a NIR graph with our neurons.

NIR, the Neuromorphic Intermediate Representation (Pedersen et al., Nature Communications 15, 8122, 2024;
https://neuroir.org), describes a network as a graph of per-time-step nodes without a batch dimension; ``nir.write``
stores it as HDF5 and ``nir.read`` reads it back. The ``nir`` package is an optional dependency
(``pip install 'sparsesnn[nir]'``) and is imported only when a function here needs it.

Export (:func:`model_to_nir`, :func:`write_nir`)
------------------------------------------------
The model's ``forward`` is traced with ``torch.fx``, treating :class:`~sparsesnn.neuron.layers.SeqFolded`,
:class:`~sparsesnn.neuron.layers.TimeFolded` and spiking neurons as leaves, so the graph is read from the code, not
guessed from the module order. Every traced operation maps to NIR nodes as follows; anything else raises
:class:`NIRUnsupportedError` naming the module or operation.

=====================================  ===============================================================================
ours (time-major ``[T, B, ...]``)      NIR (one time step, one sample)
=====================================  ===============================================================================
``Linear``                             ``Affine(weight, bias)`` (``Linear(weight)`` without a bias)
``Conv2d`` / ``Conv1d``                ``Conv2d`` / ``Conv1d`` (zero padding only; a missing bias is written as 0)
``BatchNorm`` right after a conv/FC    folded into it with the running statistics (eval mode), in float64:
                                       ``w' = w * g``, ``b' = beta + (b - mean) * g``, ``g = gamma / sqrt(var + eps)``
``AvgPool2d``                          ``AvgPool2d`` (no ``ceil_mode``/``divisor_override``; padding is counted in the
                                       average, PyTorch's default)
``AdaptiveAvgPool2d``                  ``AvgPool2d`` with kernel = stride = input / output size (must divide)
``MaxPool2d`` on spikes                ``SumPool2d`` + ``Threshold(0.5)``: on binary input a max over a window is
                                       the OR of its spikes, i.e. ``sum > 0.5``; exact for 0/1 input, so it is only
                                       written where the pool's input is known to be binary (the output of a neuron,
                                       possibly through flatten/other max-pools); elsewhere it raises
``flatten`` / ``nn.Flatten``           ``Flatten`` with negative ``start_dim``/``end_dim`` (counted from the end of
                                       the per-sample shape, with the ``input_type`` set): readers that add a batch
                                       dimension (SpikingJelly) and readers that do not (snnTorch 1.0.0 hands the dims
                                       to ``torch.nn.Flatten`` unchanged) then flatten the same dims
``x + y`` (residual connections)       both producers get an edge into the consumer: NIR sums a node's inputs
``Identity``, ``Dropout`` (eval)       nothing (the edge passes through)
``LIF`` / ``PLIF`` with hard reset     ``LIF(tau, r, v_leak, v_threshold, v_reset)``, see below
``LIF`` with soft reset                raises: NIR's LIF resets *to* ``v_reset``; subtracting the threshold has no
                                       NIR node
=====================================  ===============================================================================

Neuron mapping and ``dt``. Our LIF (:mod:`sparsesnn.neuron`) is discrete: with ``k = 1/tau_s``, ``tau_s`` its
time constant counted in time steps (``LIF.tau``; PLIF learns ``k = sigmoid(w)``), at step ``n``::

    H[n] = V[n-1] + k (X[n] - (V[n-1] - v_reset))        decay_input=True
    H[n] = V[n-1] - k (V[n-1] - v_reset) + X[n]          decay_input=False
    S[n] = H[n] >= v_threshold;   V[n] = v_reset where S[n], else H[n]   (hard reset; V[-1] = v_reset)

NIR's LIF is continuous, in seconds: ``tau dv/dt = (v_leak - v) + r I``, a spike when ``v > v_threshold``, then
``v = v_reset``. A reader simulates it with a time step ``dt`` by forward Euler::

    v[n] = v[n-1] + (dt / tau) (v_leak - v[n-1] + r I[n])

which is our equation exactly when one of our time steps lasts ``dt`` seconds and

    tau = dt * tau_s,   v_leak = v_reset,   r = 1 (decay_input=True)  or  r = tau / dt = tau_s (decay_input=False),

``v_threshold`` and ``v_reset`` unchanged. That is what is written. ``dt`` is an argument of :func:`model_to_nir`
(``sparsesnn export --dt``); its default :data:`DEFAULT_DT` = 1e-4 s is the step that the peers' NIR readers
assume, so that their ``dt / tau`` is our ``1/tau_s``:

* snnTorch 1.0.0, ``snntorch.import_nir.import_from_nir`` (``dt = 1e-4`` fixed in its code): ``snn.Leaky`` with
  ``beta = 1 - dt/tau``, ``threshold = v_threshold / (r dt / tau)``, ``reset_mechanism="zero"``,
  ``reset_delay=False``, i.e. ``m[n] = beta m[n-1] + I[n]``, a spike when ``m > threshold``, then ``m = 0``. With
  ``r = tau_s`` (decay_input=False) that is our equation; with ``r = 1`` its membrane is ``tau_s`` times ours and so
  is its threshold (it prints "scaling weights to avoid scaling inputs"): the same spikes. It asserts
  ``v_leak = 0`` and resets to 0 whatever ``v_reset`` says, so it reads our neurons only with ``v_reset = 0`` (the
  default; another ``v_reset`` fails its assertion "v_leak not supported").
* SpikingJelly 2.0, ``spikingjelly.activation_based.nir_exchange.import_from_nir(graph, dt=1e-4)``: ``LIFNode`` with
  ``tau = tau / dt`` (= ``tau_s``), ``decay_input = (r == 1)`` (``r == tau / dt`` gives ``decay_input=False``; any
  other ``r`` is refused), ``v_reset``, ``v_threshold``: our equation (we follow SpikingJelly's), ``>=`` and reset to
  ``v_reset``. It requires ``v_leak = v_reset`` as we write it.

A reader that is told another ``dt`` (SpikingJelly's argument, or our loader's) must be told the one the file was
written with; it is in the graph's ``metadata["dt"]``, which our loader reads. Both peers need the nirtorch
package (``nirtorch>=2.6,<2.7``; in the dev extra). Where the peers differ from us, and what that costs:

* spike condition: snnTorch fires on ``m > threshold``, we (and SpikingJelly) on ``>=``; they differ only when the
  membrane lands exactly on the threshold;
* rounding: snnTorch computes ``beta * m`` where we compute ``V - k V``, and SpikingJelly divides by ``tau`` where we
  multiply by ``1/tau``. The results agree to about one float32 ulp; a membrane within that of the threshold can
  fire differently (and change later spikes). With ``tau_s`` a power of two (``tau = 2``, the default) every one of
  these operations is exact and the spikes are identical;
* graphs with a max pool (``SumPool2d`` + ``Threshold``) are read by neither peer: neither maps ``Threshold``
  (nirtorch: "Unknown node type ... mapping does not exist in node_map"). Use average pools for export to them.
* soft reset (``v_reset=None``) has no NIR node and is refused at export.

PLIF's learned ``k = sigmoid(w)`` is written as ``tau = dt / sigmoid(w)``. The parameters are written as float64
arrays of the neuron layer's shape (every entry equal), so ``1/tau_s`` round-trips to the very float32 value the
model used. Conventions NIR leaves open and that our loader fixes: the membrane starts at ``v_reset``
(= ``v_leak``) for every sample; the spike condition is ``v >= v_threshold`` as in our neurons; the charge, fire
and reset of a step happen in that order, with this step's input. These conventions and ``dt`` are written into
the graph's ``metadata``. Surrogate gradients and ``detach_reset`` are training-only and are not exported.

Exactness: Linear, conv, pooling and neuron nodes reproduce the model's arithmetic. Folding a BatchNorm into its
conv changes the rounding of the pre-activations (by about 1e-7 relative), so a neuron whose membrane lands within
that distance of its threshold can fire differently; :func:`write_nir` therefore re-simulates the written file on
a sample and reports the largest output difference.

Loader (:func:`load_nir`)
-------------------------
``nir.read`` (or a ``NIRGraph``) -> :class:`NIRModule`, a time-major module ``[T, B, *input] -> [T, B, *output]``
built from our layers: ``Affine``/``Linear``/``Conv1d``/``Conv2d``/``AvgPool2d`` as the matching ``torch.nn`` layer
run once over ``T*B`` (time folded into the batch, as the models do), ``SumPool2d`` as a sum pool, ``Flatten``,
``Scale``, ``Threshold`` (``x > threshold``), ``Input``/``Output``, and ``LIF`` as our :class:`~sparsesnn.neuron.LIF`
through the inverse of the mapping above with ``tau_s = tau / dt``: ``r = 1`` -> ``decay_input=True``,
``r = tau_s`` -> ``decay_input=False``, any other ``r`` -> ``decay_input=False`` after scaling the input by
``r / tau_s``. ``dt`` is the ``dt`` argument, else the graph's ``metadata["dt"]`` (what we write), else
:data:`DEFAULT_DT` (the peers' convention, for graphs from other tools). It needs ``v_leak = v_reset``,
``tau_s > 1`` and the same parameters for every neuron of a node. The graph must be feed-forward (each node is run
over all time steps at once) with one ``Input`` and one ``Output``; a node with several inputs receives their sum.
Other node types (``IF``, ``LI``, ``CubaLIF``, ``Delay``, nested graphs, ...) raise :class:`NIRUnsupportedError`.
"""

from __future__ import annotations

import io
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from sparsesnn.core.errors import SparseSNNError
from sparsesnn.core.files import atomic_write_bytes
from sparsesnn.interop.fold import UnfoldableNormError, fold_batchnorm
from sparsesnn.neuron.kinds import NIRMapping
from sparsesnn.neuron.layers import SeqFolded, TimeFolded
from sparsesnn.neuron.lif import LIF
from sparsesnn.neuron.spiking import is_spiking

#: the simulation time step (seconds) written by default: the one snnTorch's and SpikingJelly's NIR readers assume
DEFAULT_DT = 1e-4


def nir_metadata(dt: float) -> dict[str, Any]:
    """What the graph-level ``metadata`` of a file exported with time step ``dt`` says about the conventions NIR
    leaves open (``dt`` is what our loader reads back)."""
    return {
        "producer": "sparsesnn",
        "dt": float(dt),
        "neuron_discretisation": (
            f"forward Euler with dt = {dt!r} s (one time step): v[t] = v[t-1] + dt / tau * (v_leak - v[t-1] + r * I[t])"
        ),
        "spike_condition": "v >= v_threshold (then v = v_reset)",
        "initial_state": "v = v_reset at t = 0 of every sample",
        "layout": "nodes act on one time step of one sample; run time-major [T, B, ...]",
    }


def check_dt(dt: float) -> float:
    """``dt`` as a float, or :class:`ValueError` naming it when it is not a finite number > 0."""
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt (the NIR time step in seconds) must be a finite number > 0, got {dt!r}")
    return float(dt)


class NIRUnsupportedError(SparseSNNError, NotImplementedError):
    """A module, operation or NIR node that has no faithful mapping; the message names it and why."""


def lif_to_nir(module: LIF, name: str, shape: Sequence[int], dt: float, nir: Any) -> Any:
    """The ``nir.LIF`` node of one of our LIF / PLIF layers (the equations in the module docstring): ``tau = dt *``
    its time constant in steps, ``r = 1`` (input decay) or ``tau / dt``, ``v_leak = v_reset``. The soft reset has no
    NIR equivalent and is refused. Registered as the ``lif`` / ``plif`` kinds' mapping (``neuron_kinds``)."""
    if module.v_reset is None:
        raise NIRUnsupportedError(
            f"neuron {name!r} uses the soft reset (v -= v_threshold); NIR's LIF can only reset to v_reset"
        )
    inv_tau = module.inv_tau()
    if isinstance(inv_tau, torch.Tensor):  # PLIF: the float32 value the kernel uses, inverted in float64
        tau_steps = 1.0 / float(inv_tau.detach().float())
    else:
        tau_steps = float(module.tau)
    tau = dt * tau_steps  # NIR's tau is in seconds: dt / tau = our 1 / tau_steps
    r = 1.0 if module.decay_input else tau_steps

    def full(v: float) -> np.ndarray:
        return np.full(tuple(shape), v, dtype=np.float64)

    return nir.LIF(
        tau=full(tau),
        r=full(r),
        v_leak=full(module.v_reset),
        v_threshold=full(module.v_threshold),
        v_reset=full(module.v_reset),
        metadata={"sparsesnn_module": name, "sparsesnn_neuron": type(module).__name__},
    )


def nir_mapping(module: nn.Module) -> NIRMapping | None:
    """The NIR mapping of a neuron: its kind's own (``register_neuron(..., to_nir=...)``), else the writer's for the
    LIF family (:func:`lif_to_nir`, LIF and PLIF and their subclasses), else None."""
    registered = getattr(type(module), "to_nir", None)
    if registered is not None:
        return registered  # type: ignore[no-any-return]
    return lif_to_nir if isinstance(module, LIF) else None


def require_nir() -> Any:
    """Import and return the ``nir`` package, or explain how to install it."""
    try:
        import nir
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise SparseSNNError("NIR support needs the `nir` package: pip install 'sparsesnn[nir]'") from exc
    return nir


# ----------------------------------------------------------------------------------------------------------------------
# export: torch -> NIR
# ----------------------------------------------------------------------------------------------------------------------
class _LeafTracer(fx.Tracer):
    """Stops at our time-folding wrappers and at neurons (their ``forward`` branches on shapes)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (SeqFolded, TimeFolded)) or is_spiking(m):
            return True
        return super().is_leaf_module(m, module_qualified_name)


@dataclass
class _Value:
    """A traced tensor in NIR terms: the nodes whose outputs sum to it, its per-sample shape, whether it is 0/1."""

    sources: list[str]
    shape: tuple[int, ...]
    binary: bool


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            return int(v[0]), int(v[0])
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _expand(name: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The leaf layers of a (nested) ``nn.Sequential``, with qualified names."""
    if isinstance(module, nn.Sequential):
        out: list[tuple[str, nn.Module]] = []
        for child_name, child in module.named_children():
            out += _expand(f"{name}.{child_name}", child)
        return out
    return [(name, module)]


_BN_FOR = {nn.Linear: nn.BatchNorm1d, nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d}
_PASSTHROUGH = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)


class _NIRBuilder:
    """Collects NIR nodes and edges while walking an fx graph."""

    def __init__(self, nir: Any, dt: float) -> None:
        self.nir = nir
        self.dt = dt
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []

    def _name(self, hint: str) -> str:
        base = hint.replace(".", "_") or "node"
        name, i = base, 1
        while name in self.nodes or name in ("input", "output"):
            name, i = f"{base}_{i}", i + 1
        return name

    def add(self, hint: str, node: Any, value: _Value, shape: Sequence[int], binary: bool) -> _Value:
        if len(set(value.sources)) != len(value.sources):
            raise NIRUnsupportedError(
                f"{hint}: its input adds a tensor to itself; NIR edges cannot carry a factor (use a Scale)"
            )
        name = self._name(hint)
        self.nodes[name] = node
        self.edges += [(src, name) for src in value.sources]
        return _Value([name], tuple(int(s) for s in shape), binary)

    # -- modules on time-major input -------------------------------------------------------------------------------
    def module(self, name: str, module: nn.Module, value: _Value) -> _Value:
        if isinstance(module, (SeqFolded, TimeFolded)):
            inner = module.module if isinstance(module, TimeFolded) else module
            return self.stateless(_expand(name if isinstance(module, SeqFolded) else f"{name}.module", inner), value)
        if is_spiking(module):
            return self.neuron(name, module, value)
        if isinstance(module, _PASSTHROUGH):
            return value
        raise NIRUnsupportedError(
            f"module {name!r} ({type(module).__name__}) has no NIR mapping: only stateless layers inside "
            "SeqFolded/TimeFolded and our LIF/PLIF neurons are exported"
        )

    def neuron(self, name: str, module: nn.Module, value: _Value) -> _Value:
        to_nir = nir_mapping(module)
        if to_nir is None:
            raise NIRUnsupportedError(
                f"neuron {name!r} ({type(module).__name__}) has no NIR mapping: give its kind one, "
                "register_neuron(name, settings, to_nir=...) (sparsesnn.neuron.kinds), or use LIF / PLIF"
            )
        return self.add(name, to_nir(module, name, value.shape, self.dt, self.nir), value, value.shape, binary=True)

    # -- stateless layers (one time step, one sample) --------------------------------------------------------------
    def stateless(self, layers: list[tuple[str, nn.Module]], value: _Value) -> _Value:
        i = 0
        while i < len(layers):
            name, m = layers[i]
            bn_type = next((bn for cls, bn in _BN_FOR.items() if type(m) is cls), None)
            norm = None
            if bn_type is not None and i + 1 < len(layers) and isinstance(layers[i + 1][1], bn_type):
                norm = layers[i + 1][1]
                i += 1
            i += 1
            value = self.layer(name, m, norm, value)
        return value

    @staticmethod
    def _probe(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
        with torch.no_grad():
            p = next(module.parameters(), None)
            dtype = p.dtype if p is not None else torch.float32
            return tuple(module(torch.zeros(1, *shape, dtype=dtype)).shape[1:])

    def layer(self, name: str, m: nn.Module, norm: nn.Module | None, value: _Value) -> _Value:
        nir = self.nir
        shape = value.shape
        meta = {"sparsesnn_module": name}
        if isinstance(m, _PASSTHROUGH):
            return value
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            weight, bias = m.weight.detach(), m.bias.detach() if m.bias is not None else None
            if norm is not None:
                try:
                    weight, bias = fold_batchnorm(weight, bias, norm)  # type: ignore[arg-type]
                except UnfoldableNormError as e:
                    raise NIRUnsupportedError(f"{name}: {e}") from e
                meta["folded_batchnorm"] = "yes"
            out = self._probe(m, shape)
            if isinstance(m, nn.Linear):
                if len(shape) != 1:
                    raise NIRUnsupportedError(f"Linear {name!r} acts on a {len(shape)}-d sample; flatten it first")
                if bias is None:
                    return self.add(name, nir.Linear(weight=_np(weight), metadata=meta), value, out, False)
                return self.add(name, nir.Affine(weight=_np(weight), bias=_np(bias), metadata=meta), value, out, False)
            if m.padding_mode != "zeros":
                raise NIRUnsupportedError(f"conv {name!r} pads with {m.padding_mode!r}; NIR convs pad with zeros")
            b = _np(bias) if bias is not None else np.zeros(weight.shape[0], dtype=_np(weight).dtype)
            padding: Any = m.padding if isinstance(m.padding, str) else tuple(int(p) for p in m.padding)
            if isinstance(m, nn.Conv1d):
                pad1 = padding if isinstance(padding, str) else padding[0]
                node = nir.Conv1d(
                    input_shape=int(shape[1]), weight=_np(weight), stride=int(m.stride[0]), padding=pad1,
                    dilation=int(m.dilation[0]), groups=int(m.groups), bias=b, metadata=meta,
                )  # fmt: skip
            else:
                node = nir.Conv2d(
                    input_shape=tuple(int(s) for s in shape[1:]), weight=_np(weight), stride=_pair(m.stride),
                    padding=padding, dilation=_pair(m.dilation), groups=int(m.groups), bias=b, metadata=meta,
                )  # fmt: skip
            return self.add(name, node, value, out, False)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise NIRUnsupportedError(f"BatchNorm {name!r} does not directly follow a Linear/Conv it could fold into")
        if isinstance(m, nn.MaxPool2d):
            if not value.binary:
                raise NIRUnsupportedError(
                    f"MaxPool2d {name!r}: NIR has no max pool; it is written as SumPool2d + Threshold(0.5), which "
                    "equals a max pool only on binary spikes, and this pool's input is not known to be binary"
                )
            if _pair(m.dilation) != (1, 1) or m.ceil_mode or m.return_indices:
                raise NIRUnsupportedError(f"MaxPool2d {name!r}: dilation, ceil_mode and return_indices are not mapped")
            k = _pair(m.kernel_size)
            s = _pair(m.stride if m.stride is not None else m.kernel_size)
            pool = nir.SumPool2d(
                kernel_size=np.array(k),
                stride=np.array(s),
                padding=np.array(_pair(m.padding)),
                metadata={**meta, "sparsesnn_maxpool": "sum then threshold 0.5 (= OR of spikes)"},
            )
            out = self._probe(m, shape)
            summed = self.add(f"{name}.sum", pool, value, out, False)
            thr = nir.Threshold(threshold=np.full(out, 0.5, dtype=np.float32), metadata=meta)
            return self.add(f"{name}.any", thr, summed, out, True)
        if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            if len(shape) != 3:
                raise NIRUnsupportedError(f"pool {name!r} expects a [C, H, W] sample, got {list(shape)}")
            if isinstance(m, nn.AvgPool2d):
                padded = _pair(m.padding) != (0, 0)
                if m.ceil_mode or m.divisor_override is not None or (padded and not m.count_include_pad):
                    raise NIRUnsupportedError(
                        f"AvgPool2d {name!r}: ceil_mode, divisor_override and count_include_pad=False are not mapped"
                    )
                k = _pair(m.kernel_size)
                s = _pair(m.stride if m.stride is not None else m.kernel_size)
                p = _pair(m.padding)
            else:
                osz = m.output_size if isinstance(m.output_size, (tuple, list)) else (m.output_size, m.output_size)
                target = [shape[1 + j] if osz[j] is None else int(osz[j]) for j in range(2)]  # type: ignore[index]
                if any(shape[1 + j] % target[j] for j in range(2)):
                    raise NIRUnsupportedError(
                        f"AdaptiveAvgPool2d {name!r}: output {target} does not divide input {list(shape[1:])}"
                    )
                k = (shape[1] // target[0], shape[2] // target[1])
                s, p = k, (0, 0)
            node = nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p), metadata=meta)
            return self.add(name, node, value, self._probe(m, shape), False)
        if isinstance(m, nn.Flatten):
            ndim = len(shape) + 1  # the folded tensor [N, *shape]
            start, end = m.start_dim % ndim, m.end_dim % ndim
            if start < 1:
                raise NIRUnsupportedError(f"Flatten {name!r} merges the batch dimension")
            return self.flatten(name, start - 1, end - 1, value)
        raise NIRUnsupportedError(f"layer {name!r} ({type(m).__name__}) has no NIR mapping")

    def flatten(self, name: str, start: int, end: int, value: _Value) -> _Value:
        """Flatten per-sample dims ``start..end`` (non-negative, inclusive); written with negative dims, which mean
        the same with or without a batch dimension in front (see the module docstring)."""
        if end <= start:
            return value
        out = tuple(torch.zeros(value.shape).flatten(start, end).shape)
        nd = len(value.shape)
        node = self.nir.Flatten(input_type={"input": np.array(value.shape)}, start_dim=start - nd, end_dim=end - nd,
                                metadata={"sparsesnn_module": name})  # fmt: skip
        return self.add(name, node, value, out, value.binary)

    # -- tensor operations -----------------------------------------------------------------------------------------
    def function(self, node: fx.Node, values: dict[fx.Node, _Value]) -> _Value:
        target = node.target
        name = getattr(target, "__name__", str(target))
        args = [values[a] if isinstance(a, fx.Node) else a for a in node.args]
        if name == "flatten" and isinstance(args[0], _Value):  # x.flatten(s, e) / torch.flatten(x, s, e)
            x: _Value = args[0]
            ndim = len(x.shape) + 2  # time-major [T, B, *shape]
            start = node.kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
            end = node.kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
            if not isinstance(start, int) or not isinstance(end, int):
                raise NIRUnsupportedError(f"{node.name}: flatten with computed dims is not mapped")
            start, end = start % ndim, end % ndim
            if start < 2:
                raise NIRUnsupportedError(f"{node.name}: flatten merges the time or batch dimension")
            return self.flatten(node.name, start - 2, end - 2, x)
        is_add = target in (operator.add, operator.iadd, torch.add) or (node.op == "call_method" and name == "add")
        if is_add and len(args) == 2 and not node.kwargs and all(isinstance(a, _Value) for a in args):
            a, b = args
            if a.shape != b.shape:
                raise NIRUnsupportedError(f"{node.name}: adds shapes {list(a.shape)} and {list(b.shape)} (broadcast)")
            return _Value(a.sources + b.sources, a.shape, False)
        raise NIRUnsupportedError(f"operation {name!r} (traced as {node.name}) has no NIR mapping")


def model_to_nir(model: nn.Module, input_shape: Sequence[int], *, dt: float = DEFAULT_DT) -> Any:
    """The NIR graph (``nir.NIRGraph``) of ``model`` for per-step samples of ``input_shape`` (no T, no batch).

    ``model`` maps time-major ``[T, B, *input_shape]`` to ``[T, B, ...]`` (every model of the zoo does); see the module
    docstring for the mapping. ``dt`` is the duration of one time step in seconds: a neuron whose time constant is
    ``tau_s`` steps is written with NIR ``tau = dt * tau_s``, so that a reader simulating with step ``dt`` computes
    our spikes; the default :data:`DEFAULT_DT` (1e-4) is what snnTorch's and SpikingJelly's NIR readers assume. ``dt``
    is stored in the graph's ``metadata["dt"]``. Raises :class:`NIRUnsupportedError` for anything without a faithful
    NIR equivalent.
    """
    nir = require_nir()
    dt = check_dt(dt)
    try:
        graph = _LeafTracer().trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, ... for code it cannot follow
        raise NIRUnsupportedError(f"cannot trace {type(model).__name__}.forward: {type(exc).__name__}: {exc}") from None
    modules = dict(model.named_modules())
    builder = _NIRBuilder(nir, dt)
    shape = tuple(int(s) for s in input_shape)
    values: dict[fx.Node, _Value] = {}
    result: _Value | None = None
    for node in graph.nodes:
        if node.op == "placeholder":
            if values:
                raise NIRUnsupportedError(f"{type(model).__name__}.forward takes more than one input")
            values[node] = _Value(["input"], shape, False)
        elif node.op == "call_module":
            if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
                raise NIRUnsupportedError(f"module {node.target!r} is called with extra arguments")
            values[node] = builder.module(str(node.target), modules[str(node.target)], values[node.args[0]])
        elif node.op in ("call_method", "call_function"):
            values[node] = builder.function(node, values)
        elif node.op == "output":
            out = node.args[0]
            if not isinstance(out, fx.Node):
                raise NIRUnsupportedError(f"{type(model).__name__}.forward must return one tensor")
            result = values[out]
        else:
            raise NIRUnsupportedError(f"fx node {node.name} ({node.op}) has no NIR mapping")
    assert result is not None
    if result.sources == ["input"]:
        raise NIRUnsupportedError("the model does not transform its input")
    builder.nodes["input"] = nir.Input(input_type={"input": np.array(shape)})
    builder.nodes["output"] = nir.Output(output_type={"output": np.array(result.shape)})
    builder.edges += [(src, "output") for src in result.sources]
    return nir.NIRGraph(nodes=builder.nodes, edges=builder.edges, metadata=nir_metadata(dt))


def write_nir(model: nn.Module, path: str | Path, input_shape: Sequence[int], *, dt: float = DEFAULT_DT) -> Any:
    """Export ``model`` with :func:`model_to_nir` (time step ``dt`` seconds) and write it with ``nir.write``
    (atomically); returns the graph."""
    nir = require_nir()
    graph = model_to_nir(model, input_shape, dt=dt)
    buf = io.BytesIO()
    nir.write(buf, graph)
    atomic_write_bytes(path, buf.getvalue())
    return graph
