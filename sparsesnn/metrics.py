"""Measurements of a spiking network: accuracy, firing rates, connections, synaptic operations and energy."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from sparsesnn.neuron.spiking import SPIKING_ATTRIBUTE, is_spiking


def correct_tensor(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Number of samples whose time-averaged output has its maximum at the target class, as a float32 0-d tensor on
    the output's device (read it without a host synchronisation of its own)."""
    scores = output.mean(0) if output.dim() == 3 else output
    return (scores.argmax(-1) == target).sum().to(torch.float32)


def correct_count(output: torch.Tensor, target: torch.Tensor) -> int:
    """Number of samples whose time-averaged output has its maximum at the target class."""
    return int(correct_tensor(output, target))


#: a class name that suggests a spiking neuron: "neuron" or "spik" in any case, or "IF" as a capitalised word part
#: (LIF, IFNode, PLIF, LIFCell; not "Classifier")
_NEURON_NAME = re.compile(r"(?i:neuron|spik)|IF(?=$|[A-Z0-9_])")


def looks_like_neuron(module: nn.Module) -> bool:
    """Whether ``module`` looks like a spiking neuron that is not declared either way: its class name matches
    ``neuron`` / ``spik`` (any case) or ``IF`` as a capitalised word part (``LIF``, ``IFNode``, not ``Classifier``),
    or it has a ``v_threshold`` attribute, and it neither is recognised by :func:`~sparsesnn.neuron.spiking.is_spiking`
    nor declares ``sparsesnn_spiking`` (``mark_spiking(m, False)`` settles it as not spiking)."""
    if getattr(module, SPIKING_ATTRIBUTE, None) is not None or is_spiking(module):
        return False
    return bool(_NEURON_NAME.search(type(module).__name__)) or hasattr(module, "v_threshold")


def unrecognised_neurons(model: nn.Module) -> dict[str, str]:
    """The modules of ``model`` that :func:`looks_like_neuron` flags, by name, with their class names; a module that
    holds a recognised spiking module (a block around a LIF) or lies inside one (a neuron's own parts) is not one."""
    spiking = [name for name, m in model.named_modules() if is_spiking(m)]

    def related(name: str) -> bool:
        return any(s == name or s.startswith(f"{name}.") or name.startswith(f"{s}.") or not name for s in spiking)

    return {name: type(m).__name__ for name, m in model.named_modules() if looks_like_neuron(m) and not related(name)}


class FiringRateMonitor:
    """Accumulates the mean firing rate of every spiking module while active (forward hooks, no grad kept).

    ``rates()`` maps module names to the mean of their output spikes over time, batch and neurons. A module counts
    as spiking by :func:`sparsesnn.neuron.is_spiking`: ours, a peer library's, or a user's own declared with
    :func:`sparsesnn.spiking_neuron` / :func:`sparsesnn.mark_spiking`. A model with none of them warns (once per
    monitor) instead of reporting empty rates as if nothing fired. A model with some warns (once per monitor) when
    other modules look like neurons but are not declared (:func:`looks_like_neuron`: a class name with ``neuron``,
    ``spik`` or a capitalised ``IF``, or a ``v_threshold`` attribute), naming them: their rates are not measured.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._warned = False

    @contextmanager
    def active(self) -> Iterator[FiringRateMonitor]:
        handles = []
        for name, module in self.model.named_modules():
            if is_spiking(module):
                handles.append(module.register_forward_hook(self._hook(name)))
        if not handles and not self._warned:
            self._warned = True
            warnings.warn(
                f"FiringRateMonitor: no spiking module recognised in {type(self.model).__name__}, so no firing rate "
                "is measured; declare your neuron class with @sparsesnn.spiking_neuron (or one module with "
                "sparsesnn.mark_spiking(module))",
                UserWarning,
                stacklevel=3,
            )
        if handles and not self._warned:
            lookalikes = unrecognised_neurons(self.model)
            if lookalikes:
                self._warned = True
                listed = ", ".join(f"{name!r} ({cls})" for name, cls in lookalikes.items())
                warnings.warn(
                    f"FiringRateMonitor: {listed} look(s) like spiking neurons but are not declared spiking, so their "
                    "firing rates are not measured (only the recognised neurons' are); declare the class with "
                    "@sparsesnn.spiking_neuron, or one module with sparsesnn.mark_spiking(module) (spiking=False if "
                    "it is not a neuron)",
                    UserWarning,
                    stacklevel=3,
                )
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def _hook(self, name: str):  # type: ignore[no-untyped-def]
        def record(_module: nn.Module, _inputs: object, output: torch.Tensor | tuple[torch.Tensor, ...]) -> None:
            if isinstance(output, (tuple, list)):  # snnTorch neurons return (spikes, membrane, ...)
                output = output[0]
            self._sums[name] = self._sums.get(name, 0.0) + float(output.detach().sum())
            self._counts[name] = self._counts.get(name, 0) + output.numel()

        return record

    def rates(self) -> dict[str, float]:
        return {k: self._sums[k] / self._counts[k] for k in self._sums if self._counts[k]}

    def mean_rate(self) -> float:
        total = sum(self._counts.values())
        return sum(self._sums.values()) / total if total else 0.0


# ---------------------------------------------------------------------------------------------------------------------
# connections and synaptic operations
# ---------------------------------------------------------------------------------------------------------------------
#: energy per operation at 45 nm (Horowitz, ISSCC 2014), as used by the SNN papers this library follows
ENERGY_PER_AC_PJ = 0.9
ENERGY_PER_MAC_PJ = 4.6


def connections(model: nn.Module) -> dict[str, Any]:
    """Active and total synapses of every Conv/Linear, per layer and in total. A layer a structure learner masks
    (it carries a ``weight_mask`` buffer) counts its mask: between an optimiser step and the next forward an absent
    weight may be nonzero for a moment, and a synapse just grown at zero is active. Any other layer counts its
    nonzero weights."""
    layers = {}
    for name, module in model.named_modules():
        if isinstance(module, _SYNAPTIC):
            w = module.weight.detach()
            mask = getattr(module, _MASK_BUFFER, None)  # sparsesnn.sparse.masks.MASK_BUFFER (a peer: not imported)
            live = mask if isinstance(mask, torch.Tensor) and mask.shape == w.shape else w != 0
            layers[name] = {"active": int(live.sum()), "total": w.numel()}
    active = sum(v["active"] for v in layers.values())
    total = sum(v["total"] for v in layers.values())
    return {"active": active, "total": total, "density": active / total if total else 1.0, "layers": layers}


_SYNAPTIC = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MASK_BUFFER = "weight_mask"


def fan_out_map(module: nn.Module, input_shape: tuple[int, ...], weight_mask: torch.Tensor) -> torch.Tensor:
    """For each input element of one sample, the number of (output, synapse) pairs it drives through live synapses.

    Linear: ``F[i] = sum_o M[o, i]``. Conv: ``F[c, y, x] = sum_{o, ky, kx} M[o, c, ky, kx] * [the tap lands on an
    output inside the map]``, computed exactly (borders, stride, padding, dilation, groups) as the transposed
    convolution of an all-ones output map with the mask.
    """
    m = weight_mask.to(torch.float64)
    if isinstance(module, nn.Linear):
        return m.sum(0)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            raise NotImplementedError("fan-out of string or non-zero padding modes is not supported")
        conv = {1: nn.functional.conv1d, 2: nn.functional.conv2d, 3: nn.functional.conv3d}[m.dim() - 2]
        with torch.enable_grad():  # callers usually evaluate under no_grad
            probe = torch.zeros((1, *input_shape), dtype=torch.float64, device=m.device, requires_grad=True)
            out = conv(probe, m, None, module.stride, module.padding, module.dilation, module.groups)
            (fan,) = torch.autograd.grad(out.sum(), probe)  # d(sum of outputs)/d(input) = live fan-out per input
        return fan[0]
    raise TypeError(f"no fan-out rule for {type(module).__name__}")


class SynapticOpsMonitor:
    """Counts synaptic operations of every Conv/Linear while active (forward pre-hooks).

    For each layer it accumulates, over all calls, the per-position count of binary (spike) inputs and of non-zero
    analog inputs. ``result(n_samples)`` turns them into per-sample operation counts:

    - ``Effective_ACs``: sum over spikes of their live fan-out (a pruned synapse, or a dead neuron that never fires,
      costs nothing);
    - ``Effective_MACs``: the same for non-binary input (an analog first layer), counted as multiply-accumulates;
    - ``Dense``: every synapse of every layer at every call, as if all existed and all inputs were active.

    Key names follow NeuroBench (Yik et al. 2024). Inputs may be ``[N, ...]`` or time-major ``[T, B, ...]``.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._spikes: dict[str, torch.Tensor] = {}
        self._analog: dict[str, torch.Tensor] = {}
        self._vectors: dict[str, int] = {}
        self._modules: dict[str, nn.Module] = {}

    @contextmanager
    def active(self) -> Iterator[SynapticOpsMonitor]:
        handles = []
        for name, module in self.model.named_modules():
            if isinstance(module, _SYNAPTIC):
                self._modules[name] = module
                handles.append(module.register_forward_pre_hook(self._hook(name)))
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def _hook(self, name: str):  # type: ignore[no-untyped-def]
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach()
            per_sample = 1 if isinstance(module, nn.Linear) else module.weight.dim() - 1
            flat = x.reshape(-1, *x.shape[x.dim() - per_sample :])
            binary = bool(((flat == 0) | (flat == 1)).all())
            target = self._spikes if binary else self._analog
            counts = (flat != 0).sum(0, dtype=torch.float64) if not binary else flat.sum(0, dtype=torch.float64)
            target[name] = target[name] + counts if name in target else counts
            self._vectors[name] = self._vectors.get(name, 0) + flat.shape[0]

        return record

    def result(self, n_samples: int) -> dict[str, Any]:
        """Per-sample operation counts, per layer and in total, with the energy estimate."""
        per_layer = {}
        acs = macs = dense = 0.0
        for name, module in self._modules.items():
            if name not in self._vectors:
                continue
            shape = next(iter(t.shape for t in (self._spikes.get(name), self._analog.get(name)) if t is not None))
            weight = module.weight.detach()
            live = fan_out_map(module, tuple(shape), weight != 0)
            full = fan_out_map(module, tuple(shape), torch.ones_like(weight, dtype=torch.bool))
            ac = _weighted_total(self._spikes.get(name), live)
            mac = _weighted_total(self._analog.get(name), live)
            dn = float(full.sum()) * self._vectors[name]
            per_layer[name] = {"acs": ac / n_samples, "macs": mac / n_samples, "dense": dn / n_samples}
            acs, macs, dense = acs + ac, macs + mac, dense + dn
        acs, macs, dense = acs / n_samples, macs / n_samples, dense / n_samples
        return {
            "Effective_ACs": acs,
            "Effective_MACs": macs,
            "Dense": dense,
            "energy_uJ": energy_uj(acs, macs),
            "layers": per_layer,
        }


def _weighted_total(counts: torch.Tensor | None, fan_out: torch.Tensor) -> float:
    return 0.0 if counts is None else float((counts * fan_out.to(counts.device)).sum())


def energy_uj(acs: float, macs: float) -> float:
    """Energy estimate in microjoules: ``E = 0.9 pJ * ACs + 4.6 pJ * MACs`` (45 nm figures; an estimate only)."""
    return (ENERGY_PER_AC_PJ * acs + ENERGY_PER_MAC_PJ * macs) * 1e-6
