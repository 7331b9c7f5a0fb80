"""Spiking blocks in one compiled loop each, inside a deployed model, their names kept.

A deployed convnet spends much of a batch-1 call between the loops: the neuron writes ``T`` steps of float32 spikes
(400 KB for 32 channels of 28x28 at ``T = 4``) that the pool reads back to keep a quarter of them, and each module
call, reshape and tensor wrap around them costs microseconds. For a run of two children of a plain ``nn.Sequential``

    block = Sequential(stateless, InferenceLIF)      (e.g. SpikingBlock(SeqFolded(conv, norm), neuron))
    pool  = SeqFolded(InferenceMaxPool2d(2, 2))      (or deploy's StepInvariant around it)

:func:`fuse_spiking_blocks` makes the container a :class:`FusedSequential`, which runs the pair as: the stateless
part, then one loop (:func:`_numba_lif_pool`) that advances the neurons one step at a time (the step of
:mod:`sparsesnn.deploy.lif`, from rest) into a scratch map and pools it into the output before the next step: the
``T``-step spike tensor is never made. The pool ORs the spikes' bits (a spike is 0.0 or 1.0, and the bits of such
values OR to those of their maximum): two horizontal neighbours read as one uint64 in an NCHW map of even width, 8
channels at a time in a channels-last one. A spiking block with no pool after it runs its stateless part straight
into the neurons' loop (:func:`run_block`), and a stateless layer alone beside them (a readout ``SeqFolded(Linear)``)
runs without the fold's reshapes and module calls (:func:`run_layer`).

A stateless part that is one *direct layer* (:func:`_direct_layer`: ``SeqFolded(EventConv2d | EventLinear |
nn.Conv2d [, FoldedNorm])``, also inside a ``StepInvariant`` given one step expanded over time) is computed without
its modules' glue (:func:`_direct_charge`): the event layer's kernel, a block-sparse ``EventLinear`` adding a
sample's time steps together; anything else runs as it is.

The output equals the unfused modules' bit for bit (the same float32 operations per neuron; a maximum of zeros and
ones is exact), a pool's laid out NCHW so that a flatten or the next event conv reads it without a copy. The
container keeps its class's forward semantics and every child under its name, so state dicts, exports,
``get_submodule`` and ``deploy``'s choices are unchanged. At each call the run is checked again: a child replaced (a
:class:`~sparsesnn.deploy.stateful.StreamingLIF` of a stream) or given a forward hook runs unfused, and while a
global forward hook is registered every child runs as itself, so hooks always fire; :func:`unfuse` restores plain
``nn.Sequential`` containers.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from torch import nn

from sparsesnn.deploy.event_layers import EventConv2d, EventLinear
from sparsesnn.deploy.lif import InferenceLIF, _numba_lif_span
from sparsesnn.deploy.passes import FoldedNorm, StepInvariant
from sparsesnn.deploy.pool import InferenceMaxPool2d
from sparsesnn.neuron.layers import SeqFolded


@functools.cache
def _numba_lif_pool() -> Any:
    """The fused loop, compiled on first use (once per process)."""
    import numba
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    lif_span = _numba_lif_span()  # the neurons' step, shared with InferenceLIF's loop

    @intrinsic
    def or4_store(typingctx: Any, dst: Any, i: Any, src: Any, a: Any, b: Any, c: Any, d: Any) -> Any:
        """``dst[i : i + 8] = src[a : a + 8] | src[b : b + 8] | src[c : c + 8] | src[d : d + 8]`` as four 8-lane
        uint32 loads, three ORs and one store (contiguous uint32 arrays; no bounds check, and none of the overlap
        checks a numba loop this short pays for)."""
        sig = types.void(dst, i, src, a, b, c, d)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            dst_arr = context.make_array(signature.args[0])(context, builder, args[0])
            src_arr = context.make_array(signature.args[2])(context, builder, args[2])
            vec = ir.VectorType(ir.IntType(32), 8)

            def at(array: Any, k: int) -> Any:
                index = context.cast(builder, args[k], signature.args[k], types.int64)
                return builder.bitcast(builder.gep(array.data, [index]), vec.as_pointer())

            loads = [builder.load(at(src_arr, k), align=4) for k in (3, 4, 5, 6)]
            total = builder.or_(builder.or_(loads[0], loads[1]), builder.or_(loads[2], loads[3]))
            builder.store(total, at(dst_arr, 1), align=4)
            return context.get_dummy_value()

        return sig, codegen

    @numba.njit(nogil=True, cache=False, boundscheck=False, inline="always")
    def pool_channels_last(  # pragma: no cover - compiled
        bits: Any, first: int, n_ch: int, h: int, w: int, scratch: Any, out_bits: Any
    ) -> None:
        """2x2 max pool of one sample's NHWC spike map (from ``bits[first]``, read as uint32; ``n_ch`` a multiple of
        8) into its NCHW planes ``out_bits``: each window's four pixels OR-ed 8 channels at a time (:func:`or4_store`)
        into ``scratch`` (pooled NHWC), which is then written out plane by plane."""
        ho, wo = h // 2, w // 2
        row = w * n_ch
        for oy in range(ho):
            for ox in range(wo):
                at = first + (2 * oy * w + 2 * ox) * n_ch
                s = (oy * wo + ox) * n_ch
                for c in range(0, n_ch, 8):
                    or4_store(scratch, s + c, bits, at + c, at + n_ch + c, at + row + c, at + row + n_ch + c)
        hw = ho * wo
        for c in range(n_ch):
            for q in range(hw):
                out_bits[c * hw + q] = scratch[q * n_ch + c]

    @numba.njit(nogil=True, cache=False, boundscheck=False, inline="always")
    def pool_pairs(pairs: Any, first: int, planes: int, h: int, w: int, out_bits: Any) -> None:  # pragma: no cover
        """2x2 max pool of ``planes`` NCHW spike planes (``h x w``, ``w`` even) from plane ``first`` on: ``pairs`` is
        the step's spike map read as uint64 (two horizontal neighbours each), ``out_bits`` the pooled planes read as
        uint32. A spike is 0.0 or 1.0, whose bits OR to the bits of their maximum: a window is the OR of two pairs
        (one per row), folded to 32 bits. One contiguous loop per output row, no compare and no branch."""
        half, ho = w // 2, h // 2
        for p in range(planes):
            plane = (first + p) * h * half  # in pairs
            for oy in range(ho):
                top = plane + oy * w  # input row 2 oy, in pairs; row 2 oy + 1 follows it
                at = (p * ho + oy) * half
                for ox in range(half):
                    both = pairs[top + ox] | pairs[top + half + ox]
                    out_bits[at + ox] = np.uint32((both | (both >> np.uint64(32))) & np.uint64(0xFFFFFFFF))

    @numba.njit(nogil=True, cache=False, boundscheck=False)
    def lif_pool(  # pragma: no cover - compiled
        x: Any,
        inv_tau: Any,
        v_threshold: Any,
        v_reset: Any,
        hard_reset: bool,
        decay_input: bool,
        out: Any,
        h: int,
        w: int,
        channels_last: bool,
    ) -> None:
        """``out[t, n, c, oy, ox]`` = max over the 2x2 window at ``(2 oy, 2 ox)`` of the LIF spikes of ``x``
        (``[S, N*C*H*W]``, each step's map flat in NCHW order or, ``channels_last``, NHWC order; ``S = 1``: the
        same input at every step), from rest. Each step's spikes go to one scratch map (one contiguous, vectorised
        loop), pooled from there before the next step overwrites it."""
        steps, n_samples, n_ch, ho, wo = out.shape
        size = x.shape[1]
        v = np.full(size, v_reset, np.float32)  # the membrane, in x's order, at rest
        spikes = np.empty(size + size % 2, np.float32)  # one step's spikes (even: read in pairs as uint64)
        pairs = spikes.view(np.uint64)
        bits = spikes.view(np.uint32)
        scratch = np.empty(ho * wo * n_ch, np.uint32)  # one sample's pooled step, NHWC (channels-last input)
        out_bits = out.reshape(steps, n_samples, n_ch * ho * wo).view(np.uint32)
        for t in range(steps):
            xt = x[0] if x.shape[0] == 1 else x[t]
            lif_span(xt, v, 0, size, spikes, inv_tau, v_threshold, v_reset, hard_reset, decay_input)
            ot = out[t]
            for n in range(n_samples):
                if channels_last and n_ch % 8 == 0:
                    pool_channels_last(bits, n * h * w * n_ch, n_ch, h, w, scratch, out_bits[t, n])
                    continue
                if channels_last:
                    for oy in range(ho):
                        for ox in range(wo):
                            at = ((n * h + 2 * oy) * w + 2 * ox) * n_ch
                            below = at + w * n_ch
                            for c in range(n_ch):  # spikes are 0 or 1: their maximum is whether their sum is > 0
                                total = (
                                    spikes[at + c]
                                    + spikes[at + n_ch + c]
                                    + spikes[below + c]
                                    + spikes[below + n_ch + c]
                                )
                                ot[n, c, oy, ox] = np.float32(1.0) if total > 0 else np.float32(0.0)
                    continue
                if w % 2 == 0:  # two neighbouring spikes read as one uint64: the window is two of them
                    pool_pairs(pairs, n * n_ch, n_ch, h, w, out_bits[t, n])
                    continue
                for c in range(n_ch):
                    plane = (n * n_ch + c) * h * w
                    for oy in range(ho):
                        row = plane + 2 * oy * w
                        pooled = ot[n, c, oy]
                        for ox in range(wo):
                            at = row + 2 * ox
                            total = spikes[at] + spikes[at + 1] + spikes[at + w] + spikes[at + w + 1]
                            pooled[ox] = np.float32(1.0) if total > 0 else np.float32(0.0)

    return lif_pool


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _global_hooks() -> bool:
    """Whether forward hooks for every module are registered (``torch.nn.modules.module.register_module_forward_hook``
    and its pre-hook twin)."""
    from torch.nn.modules import module as torch_module

    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks)


def _plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _children(module: nn.Module) -> tuple[Any, ...]:
    """``module``'s children in order (read from ``_modules``: ``nn.Sequential`` indexing costs a microsecond a child,
    and these checks run at every call)."""
    return tuple(module._modules.values())


def _block_parts(block: nn.Module) -> tuple[nn.Module, InferenceLIF] | None:
    """``(stateless, neuron)`` of a spiking block ``nn.Sequential(stateless, InferenceLIF)`` (its forward
    ``nn.Sequential``'s, the neuron numba-backed, nothing hooked), else None."""
    if not _plain_sequential(block):
        return None
    children = _children(block)
    if len(children) != 2:
        return None
    stateless, lif = children
    if type(lif) is not InferenceLIF or lif.backend != "numba" or stateless is None:
        return None
    if _hooked(block) or _hooked(stateless) or _hooked(lif):
        return None
    return stateless, lif


def _folded_children(module: nn.Module) -> tuple[Any, ...] | None:
    """The children of ``SeqFolded(...)``, looked through a :class:`StepInvariant` around it, nothing of the two
    hooked; else None."""
    if type(module) is StepInvariant:
        if _hooked(module):
            return None
        module = module._modules["layers"]  # type: ignore[assignment]
    if type(module) is not SeqFolded or _hooked(module):
        return None
    return _children(module)


def _pair_parts(block: nn.Module, pool: nn.Module) -> tuple[nn.Module, InferenceLIF] | None:
    """``(stateless, neuron)`` of a fusable (block, pool) pair (see the module docstring), else None: the neuron and
    pool numba-backed, nothing hooked."""
    children = _folded_children(pool)  # a StepInvariant: its input was equal over time; pooled per step, the same
    if children is None or len(children) != 1:
        return None
    max_pool = children[0]
    if type(max_pool) is not InferenceMaxPool2d or max_pool.backend != "numba" or _hooked(max_pool):
        return None
    if (max_pool.kernel, max_pool.stride) != (2, 2):
        return None
    return _block_parts(block)


#: the layers whose output the fused loops compute without the torch glue around them (:func:`_direct_charge`)
_DIRECT_LAYERS = (EventConv2d, EventLinear, nn.Conv2d)


def _direct_layer(stateless: nn.Module) -> tuple[nn.Module, FoldedNorm | None] | None:
    """``(layer, folded norm or None)`` of ``SeqFolded(layer [, FoldedNorm])`` for a ``layer`` of a type in
    :data:`_DIRECT_LAYERS` (an event layer numba-backed), nothing hooked, else None. A :class:`StepInvariant` around
    it is looked through."""
    layers = _folded_children(stateless)
    if layers is None or not 1 <= len(layers) <= 2:
        return None
    layer = layers[0]
    if type(layer) not in _DIRECT_LAYERS or getattr(layer, "backend", "numba") != "numba" or _hooked(layer):
        return None
    if len(layers) == 1:
        return layer, None
    norm = layers[1]
    if type(norm) is not FoldedNorm or _hooked(norm):
        return None
    return layer, norm


def _direct_charge(stateless: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, tuple[int, ...], bool] | None:
    """:func:`_charge` for a stateless part with a :func:`_direct_layer`, computed as its modules would compute it
    (the event layer's kernel, or the conv's own ``_conv_forward``) but without their torch glue; None when there is
    no such layer or ``x`` is not an input it takes (the caller then runs the modules, which raise where they
    should). A :class:`StepInvariant` whose input is one step expanded over time (stride 0) runs its layers on that
    step, as its forward does; on other input the modules run, and its forward compares the steps."""
    direct = _direct_layer(stateless)
    if direct is None or not isinstance(x, torch.Tensor) or x.dim() < 3:
        return None
    layer, norm = direct
    if type(stateless) is StepInvariant:
        if not (x.shape[0] > 1 and x.stride(0) == 0):
            return None
        x = x[:1]
    steps, batch = x.shape[0], x.shape[1]
    if type(layer) is EventLinear:
        if x.dim() != 3 or (norm is not None and norm.rank != 2):
            return None
        out = layer.charge(x.reshape(steps * batch, x.shape[2]), steps)  # [S*B, width], each sample's steps together
        if out.shape[1] != layer.out_features:
            out = np.ascontiguousarray(out[:, : layer.out_features])
        return out.reshape(steps, -1), (batch, layer.out_features), False
    if x.dim() != 5 or (norm is not None and norm.rank != 4):
        return None
    folded = x.reshape(steps * batch, *x.shape[2:])
    if type(layer) is EventConv2d:
        out = layer.charge(folded)  # [S*B, Ho, Wo, O], contiguous, channels-last
        _n, ho, wo, channels = out.shape
        return out.reshape(steps, -1), (batch, channels, ho, wo), True
    assert isinstance(layer, nn.Conv2d)
    if x.dtype != torch.float32 or layer.weight.dtype != torch.float32:
        return None
    y = layer._conv_forward(folded, layer.weight, layer.bias)
    return _steps_flat(y.reshape(steps, batch, *y.shape[1:]))


def _steps_flat(y: torch.Tensor) -> tuple[np.ndarray, tuple[int, ...], bool] | None:
    """A 5-D float32 map ``[T, B, C, H, W]`` as :func:`_charge` returns it, or None when it is not one."""
    if y.dim() != 5 or y.dtype != torch.float32:
        return None
    one = y[:1] if y.shape[0] > 1 and y.stride(0) == 0 else y  # a step-invariant output: its one step
    step = one[0]  # [B, C, H, W]
    if step.is_contiguous():
        channels_last = False
    elif step.is_contiguous(memory_format=torch.channels_last):
        channels_last = True
    else:
        return None
    if one.shape[0] > 1 and one.stride(0) != step.numel():
        return None
    a = one.detach().numpy()
    flat = (a.transpose(0, 1, 3, 4, 2) if channels_last else a).reshape(a.shape[0], -1)  # a view: dense
    return flat, tuple(step.shape), channels_last


def _charge(stateless: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, tuple[int, ...], bool] | None:
    """The stateless part's output on ``[T, B, ...]`` input as numpy ``[S, B*C*H*W]``, each step's map flat in memory
    order (``S = 1`` for a step-invariant output), with its ``(B, C, H, W)`` and whether that order is channels-last;
    None when the output is not a dense 5-D float32 map in NCHW or channels-last order."""
    direct = _direct_charge(stateless, x)
    if direct is not None:
        return direct
    return _steps_flat(stateless(x))


def run_pair(block: nn.Module, pool: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """``pool(block(x))`` in one loop after the stateless part (see the module docstring), or None when the pair is
    not fusable (as it stands now) or its map is not a dense 5-D float32 map; the caller then runs it unfused."""
    parts = _pair_parts(block, pool)
    if parts is None:
        return None
    stateless, lif = parts
    charge = _charge(stateless, x)
    if charge is None:
        return None
    flat, (batch, channels, h, w), channels_last = charge
    out = np.empty((x.shape[0], batch, channels, h // 2, w // 2), np.float32)
    _numba_lif_pool()(flat, *lif._scalars, out, h, w, channels_last)
    return torch.from_numpy(out)


def run_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """``block(x)`` for a spiking block alone whose stateless part has a :func:`_direct_layer`: that layer's output
    straight into the neurons' loop (:mod:`sparsesnn.deploy.lif`'s, from rest), without the torch glue between; None
    when it is not fusable (as it stands now) or ``x`` is not an input the direct path takes, and the caller runs it
    unfused. The spikes equal the block's bit for bit, in the same memory order (channels-last stays so)."""
    parts = _block_parts(block)
    if parts is None:
        return None
    stateless, lif = parts
    charge = _direct_charge(stateless, x)
    if charge is None:
        return None
    flat, shape, channels_last = charge
    return _as_steps(lif.spikes_from_rest(flat, x.shape[0]), shape, channels_last)


def _as_steps(flat: np.ndarray, shape: tuple[int, ...], channels_last: bool) -> torch.Tensor:
    """``flat`` ``[S, B*...]`` (:func:`_charge`'s layout) as the ``[S, *shape]`` tensor the modules return, a view: a
    channels-last map stays so in memory."""
    steps = flat.shape[0]
    if channels_last:
        batch, channels, h, w = shape
        return torch.from_numpy(flat.reshape(steps, batch, h, w, channels)).permute(0, 1, 4, 2, 3)
    return torch.from_numpy(flat.reshape(steps, *shape))


def _lone_layer(module: nn.Module) -> nn.Module | None:
    """The layer of ``SeqFolded(layer [, FoldedNorm])`` (no :class:`StepInvariant` around it) for an ``nn.Linear``
    alone or an event layer (:func:`_direct_layer`), nothing hooked; else None."""
    if type(module) is not SeqFolded:
        return None
    layers = _folded_children(module)
    if layers is not None and len(layers) == 1 and type(layers[0]) is nn.Linear and not _hooked(layers[0]):
        return layers[0]
    direct = _direct_layer(module)
    return None if direct is None or type(direct[0]) is nn.Conv2d else direct[0]


def run_layer(stateless: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """``stateless(x)`` for ``SeqFolded(layer [, FoldedNorm])`` alone (:func:`_lone_layer`) without the folding's
    and the modules' glue: an ``nn.Linear`` on the contiguous ``[T, B, F]`` input as it is (torch folds it into the
    same matrix product as the folded ``[T * B, F]``), an event layer's kernel (:func:`_direct_charge`) wrapped as
    the module's output (a conv's channels-last in memory); None when there is no such layer or ``x`` is not an input
    it takes (the caller then runs the module, which raises where it should)."""
    layer = _lone_layer(stateless)
    if layer is None or not isinstance(x, torch.Tensor):
        return None
    if type(layer) is nn.Linear:
        if x.dim() != 3 or not x.is_contiguous() or x.dtype != layer.weight.dtype or x.shape[2] != layer.in_features:
            return None
        return nn.functional.linear(x, layer.weight, layer.bias)
    charge = _direct_charge(stateless, x)
    return None if charge is None else _as_steps(*charge)


class FusedSequential(nn.Sequential):
    """An ``nn.Sequential`` whose fusable (spiking block, 2x2 max pool) runs, starting at the child positions
    ``fused_starts``, run as one loop each, whose spiking blocks alone at ``block_starts`` run their direct layer
    straight into the neurons' loop, and whose stateless layers alone at ``layer_starts`` run without their glue
    (:func:`run_layer`; see the module docstring); everything else as ``nn.Sequential``."""

    fused_starts: tuple[int, ...] = ()
    block_starts: tuple[int, ...] = ()
    layer_starts: tuple[int, ...] = ()

    def forward(self, x: Any) -> Any:  # type: ignore[override]
        if _global_hooks():  # hooks on every module: each child runs as itself, so that they fire
            return nn.Sequential.forward(self, x)
        children = list(self._modules.values())
        i = 0
        while i < len(children):
            if i in self.fused_starts and i + 1 < len(children):
                y = run_pair(children[i], children[i + 1], x)  # type: ignore[arg-type]
                if y is not None:
                    x = y
                    i += 2
                    continue
            elif i in self.block_starts or i in self.layer_starts:
                run = run_block if i in self.block_starts else run_layer
                y = run(children[i], x)  # type: ignore[arg-type]
                if y is not None:
                    x = y
                    i += 1
                    continue
            x = children[i](x)  # type: ignore[misc]
            i += 1
        return x


def _lone_block(block: nn.Module) -> bool:
    """Whether ``block`` is a spiking block whose stateless part has a direct layer (:func:`run_block` runs it)."""
    parts = _block_parts(block)
    return parts is not None and _direct_layer(parts[0]) is not None


def fuse_spiking_blocks(model: nn.Module) -> list[str]:
    """Make every plain ``nn.Sequential`` inside ``model`` (itself included) that holds a fusable (block, pool) run,
    or a spiking block alone with a direct layer, a :class:`FusedSequential`, in place; returns the runs as
    ``"block+pool"`` names and the blocks alone by their names. Run again after a child was replaced, it finds the
    runs afresh (a :class:`FusedSequential` left with none becomes a plain ``nn.Sequential`` again)."""
    fused: list[str] = []
    for name, container in model.named_modules():
        if type(container) not in (nn.Sequential, FusedSequential):
            continue
        keys = list(container._modules)
        children = [container._modules[k] for k in keys]
        pairs, blocks, layers = [], [], []
        i = 0
        while i < len(keys):
            block = children[i]
            pool = children[i + 1] if i + 1 < len(keys) else None
            if block is not None and pool is not None and _pair_parts(block, pool) is not None:
                pairs.append(i)
                fused.append("+".join(f"{name}.{k}" if name else k for k in (keys[i], keys[i + 1])))
                i += 2
                continue
            if block is not None and _lone_block(block):
                blocks.append(i)
                fused.append(f"{name}.{keys[i]}" if name else keys[i])
            elif block is not None and _lone_layer(block) is not None:
                layers.append(i)
            i += 1
        if pairs or blocks:  # a layer alone only rides along: its container is fused for a block or a run
            fused += [f"{name}.{keys[i]}" if name else keys[i] for i in layers]
            container.__class__ = FusedSequential
            container.fused_starts = tuple(pairs)
            container.block_starts = tuple(blocks)
            container.layer_starts = tuple(layers)
        elif type(container) is FusedSequential:  # fused before, nothing fusable now (a child was replaced)
            _plain(container)
    return fused


def unfuse(model: nn.Module) -> None:
    """Every :class:`FusedSequential` inside ``model`` back to a plain ``nn.Sequential``, in place."""
    for module in model.modules():
        if type(module) is FusedSequential:
            _plain(module)


def _plain(container: FusedSequential) -> None:
    container.__class__ = nn.Sequential
    container.__dict__.pop("fused_starts", None)
    container.__dict__.pop("block_starts", None)
    container.__dict__.pop("layer_starts", None)
