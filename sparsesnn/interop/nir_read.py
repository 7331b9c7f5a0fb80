"""Reading NIR graphs back into a runnable module: :func:`load_nir` / :func:`nir_to_module` build a
:class:`NIRModule` (our own simulator of the graph, time-major like the library's models) from a file or a
``nir.NIRGraph``; :func:`graph_dt` says which time step it runs at; :func:`max_output_difference` compares two
models' outputs. The node mapping is in :mod:`sparsesnn.interop.nir_write`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparsesnn.interop.nir_write import DEFAULT_DT, NIRUnsupportedError, _pair, check_dt, require_nir
from sparsesnn.neuron.kernels.op import Backend
from sparsesnn.neuron.layers import TimeFolded
from sparsesnn.neuron.lif import LIF


# ----------------------------------------------------------------------------------------------------------------------
# import: NIR -> torch
# ----------------------------------------------------------------------------------------------------------------------
class _SumPool2d(nn.Module):
    """Sum over 2-d windows (zero padding): an average pool with divisor 1."""

    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel, self.stride, self.padding, count_include_pad=True, divisor_override=1)


class _Threshold(nn.Module):
    """NIR ``Threshold``: 1 where ``x > threshold``, else 0 (on ``[T, B, *shape]``)."""

    def __init__(self, threshold: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("threshold", threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)


class _Scale(nn.Module):
    """Elementwise product with a fixed per-sample array (on ``[T, B, *shape]``)."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class _Flatten(nn.Module):
    """Flatten per-sample dims ``start..end`` of a folded ``[N, *shape]`` tensor."""

    def __init__(self, start: int, end: int) -> None:
        super().__init__()
        self.start, self.end = start, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(self.start + 1, self.end + 1 if self.end >= 0 else self.end)


class NIRModule(nn.Module):
    """A feed-forward NIR graph run on time-major input ``[T, B, *input]`` -> ``[T, B, *output]``.

    ``names`` lists the NIR nodes in topological order; ``layers[i]`` is the module of ``names[i]`` (an identity for
    ``Input``/``Output``) and ``inputs[i]`` the indices of its predecessors, whose outputs are summed.
    """

    def __init__(self, names: list[str], layers: list[nn.Module], inputs: list[list[int]], metadata: dict[str, Any]):
        super().__init__()
        self.names = names
        self.layers = nn.ModuleList(layers)
        self.inputs = inputs
        self.metadata = metadata

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: list[torch.Tensor] = []
        for layer, preds in zip(self.layers, self.inputs, strict=True):
            if not preds:
                v = x
            else:
                v = values[preds[0]]
                for p in preds[1:]:
                    v = v + values[p]
            values.append(layer(v))
        return values[-1]

    def extra_repr(self) -> str:
        return f"nodes={self.names}"


def _arr(v: Any) -> np.ndarray:
    return np.asarray(v)


def _uniform(node_name: str, field: str, v: Any) -> float:
    a = np.asarray(v, dtype=np.float64)
    if a.size == 0 or not np.all(a == a.flat[0]):
        raise NIRUnsupportedError(
            f"LIF node {node_name!r}: {field} differs between neurons; our LIF takes one value per layer"
        )
    return float(a.flat[0])


def _lif_module(name: str, node: Any, backend: Backend, dt: float) -> nn.Module:
    """Our LIF for a NIR LIF node simulated with time step ``dt`` (the inverse of the export mapping; see the module
    docstring)."""
    tau = _uniform(name, "tau", node.tau) / dt  # in time steps
    r = _uniform(name, "r", node.r)
    v_leak = _uniform(name, "v_leak", node.v_leak)
    v_threshold = _uniform(name, "v_threshold", node.v_threshold)
    v_reset = _uniform(name, "v_reset", node.v_reset if node.v_reset is not None else 0.0)
    if v_leak != v_reset:
        raise NIRUnsupportedError(
            f"LIF node {name!r}: v_leak ({v_leak}) != v_reset ({v_reset}); our neurons decay towards v_reset"
        )
    if not tau > 1.0:
        raise NIRUnsupportedError(
            f"LIF node {name!r}: tau / dt = {tau:g} <= 1 is unstable with forward Euler (need dt < tau); was the "
            f"graph written with another time step than dt = {dt:g} s? Pass that dt to load_nir"
        )
    if not v_reset < v_threshold:
        raise NIRUnsupportedError(f"LIF node {name!r}: v_reset ({v_reset}) must be below v_threshold ({v_threshold})")
    if r == 1.0:
        return LIF(tau, v_threshold, v_reset, decay_input=True, backend=backend)
    if math.isclose(r, tau, rel_tol=1e-12):  # r = tau / dt, up to the rounding of (dt * tau_s) / dt
        return LIF(r, v_threshold, v_reset, decay_input=False, backend=backend)
    neuron = LIF(tau, v_threshold, v_reset, decay_input=False, backend=backend)
    scale = torch.full(tuple(np.asarray(node.tau).shape), r / tau, dtype=torch.float32)
    return nn.Sequential(_Scale(scale), neuron)


def _param(values: np.ndarray) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.array(values, dtype=np.float32, copy=True)))


def _node_module(name: str, node: Any, nir: Any, backend: Backend, dt: float) -> nn.Module:
    """The time-major module of one NIR node."""
    if isinstance(node, (nir.Input, nir.Output)):
        return nn.Identity()
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = _arr(node.weight)
        if w.ndim != 2:
            raise NIRUnsupportedError(f"{type(node).__name__} node {name!r}: weight of rank {w.ndim} is not mapped")
        bias = isinstance(node, nir.Affine)
        lin = nn.Linear(w.shape[1], w.shape[0], bias=bias)
        lin.weight = _param(w)
        if bias:
            lin.bias = _param(_arr(node.bias))
        return TimeFolded(lin)
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        w = _arr(node.weight)
        two_d = isinstance(node, nir.Conv2d)
        pad = node.padding
        if isinstance(pad, bytes):
            pad = pad.decode()

        def dims(v: Any) -> Any:
            return _pair(np.asarray(v).reshape(-1).tolist()) if two_d else int(np.asarray(v).reshape(-1)[0])

        padding: Any = pad if isinstance(pad, str) else dims(pad)
        stride, dilation = dims(node.stride), dims(node.dilation)
        groups = int(np.asarray(node.groups))
        cls = nn.Conv2d if two_d else nn.Conv1d
        conv = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride, padding, dilation, groups, bias=True)
        conv.weight = _param(w)
        conv.bias = _param(np.broadcast_to(_arr(node.bias), (w.shape[0],)))
        return TimeFolded(conv)
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        k = _pair(np.asarray(node.kernel_size).tolist())
        s = _pair(np.asarray(node.stride).tolist())
        p = _pair(np.asarray(node.padding).tolist())
        pool = _SumPool2d(k, s, p) if isinstance(node, nir.SumPool2d) else nn.AvgPool2d(k, s, p)
        return TimeFolded(pool)
    if isinstance(node, nir.Flatten):
        in_type = node.input_type.get("input") if isinstance(node.input_type, dict) else None
        start, end = int(node.start_dim), int(node.end_dim)
        if start < 0 or end < -1:
            if in_type is None:
                raise NIRUnsupportedError(f"Flatten node {name!r}: negative dims need the node's input_type")
            nd = len(np.asarray(in_type))
            start, end = start % nd, end % nd
        return TimeFolded(_Flatten(start, end))
    if isinstance(node, nir.Threshold):
        return _Threshold(torch.from_numpy(np.array(node.threshold, dtype=np.float32, copy=True)))
    if isinstance(node, nir.Scale):
        return _Scale(torch.from_numpy(np.array(node.scale, dtype=np.float32, copy=True)))
    if isinstance(node, nir.LIF):
        return _lif_module(name, node, backend, dt)
    raise NIRUnsupportedError(f"NIR node {name!r} of type {type(node).__name__} is not supported by our loader")


def graph_dt(graph: Any, dt: float | None = None) -> float:
    """The time step to simulate ``graph`` with: ``dt`` when given, else the graph's ``metadata["dt"]`` (what
    :func:`model_to_nir` writes), else :data:`DEFAULT_DT`. A ``dt`` that differs from the graph's own is used, with a
    warning naming both."""
    metadata = getattr(graph, "metadata", None)
    stored = metadata.get("dt") if isinstance(metadata, dict) else None
    if stored is not None:
        try:
            stored = check_dt(float(np.asarray(stored).reshape(-1)[0]))
        except (TypeError, ValueError, IndexError):
            raise NIRUnsupportedError(f"the graph's metadata['dt'] = {stored!r} is not a time step > 0") from None
    if dt is None:
        return stored if stored is not None else DEFAULT_DT
    dt = check_dt(dt)
    if stored is not None and dt != stored:
        warnings.warn(
            f"simulating the NIR graph with dt = {dt:g} s although it was written with dt = {stored:g} s "
            "(metadata['dt']): every neuron's time constant in steps changes by their ratio; pass dt=None to use "
            "the graph's own",
            UserWarning,
            stacklevel=3,
        )
    return dt


def nir_to_module(graph: Any, *, dt: float | None = None, backend: Backend = "auto") -> NIRModule:
    """Build a :class:`NIRModule` from a ``nir.NIRGraph`` (see the module docstring for the node mapping), simulated
    with time step ``dt`` seconds (default: the graph's ``metadata["dt"]``, else :data:`DEFAULT_DT`; see
    :func:`graph_dt`)."""
    nir = require_nir()
    step = graph_dt(graph, dt)
    nodes: dict[str, Any] = dict(graph.nodes)
    inputs = [n for n, v in nodes.items() if isinstance(v, nir.Input)]
    outputs = [n for n, v in nodes.items() if isinstance(v, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRUnsupportedError(f"need exactly one Input and one Output node, got inputs {inputs}, outputs {outputs}")
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    succs: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in graph.edges:
        preds[b].append(a)
        succs[a].append(b)
    # Kahn's topological order, starting at the Input; the Output is placed last
    pending = {n: len(p) for n, p in preds.items()}
    ready = [inputs[0]] if pending[inputs[0]] == 0 else []
    order: list[str] = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for s in succs[n]:
            pending[s] -= 1
            if pending[s] == 0:
                ready.append(s)
    if len(order) != len(nodes):
        stuck = sorted(set(nodes) - set(order))
        raise NIRUnsupportedError(
            f"the graph is not feed-forward from its Input (recurrent or unreachable nodes: {stuck}); "
            "our simulator runs each node over all time steps at once"
        )
    if order[-1] != outputs[0]:
        order.remove(outputs[0])
        order.append(outputs[0])
    index = {n: i for i, n in enumerate(order)}
    layers = [_node_module(n, nodes[n], nir, backend, step) for n in order]
    metadata = dict(graph.metadata) if isinstance(getattr(graph, "metadata", None), dict) else {}
    metadata["dt"] = step
    return NIRModule(order, layers, [[index[p] for p in preds[n]] for n in order], metadata).eval()


def load_nir(source: str | Path | Any, *, dt: float | None = None, backend: Backend = "auto") -> NIRModule:
    """Read a NIR file with ``nir.read`` (or take a ``NIRGraph``) and build our time-major simulator of it, with time
    step ``dt`` seconds (default: the one the file was written with, see :func:`graph_dt`)."""
    nir = require_nir()
    graph = nir.read(str(source)) if isinstance(source, (str, Path)) else source
    return nir_to_module(graph, dt=dt, backend=backend)


def max_output_difference(a: Callable[[torch.Tensor], torch.Tensor], b: Callable[[torch.Tensor], torch.Tensor],
                          example: torch.Tensor) -> float:  # fmt: skip
    """Largest absolute difference between the outputs of ``a`` and ``b`` on ``example`` (inf on a shape mismatch)."""
    with torch.no_grad():
        ya, yb = a(example), b(example)
    if ya.shape != yb.shape:
        return float("inf")
    return float((ya - yb).abs().max()) if ya.numel() else 0.0
