"""One call per block of a stream: an event-driven conv, its neuron and the 2x2 max pool after it, run as the same
compiled loops in a row on numpy buffers, without the torch and module glue between them.

A stream (:mod:`sparsesnn.deploy.stream`) steps a model one window at a time, so each layer runs on one time step of
one sample and the fixed cost of a call (module dispatch, tensor wrapping, layout checks) outweighs the loops. For the
block deploy builds from a spiking conv layer,

    SeqFolded(EventConv2d [, FoldedNorm]) -> StreamingLIF [-> SeqFolded(InferenceMaxPool2d(2, 2))]

:class:`FusedEventBlock` calls the event conv's compiled kernel (its row or block layout, from the bias), runs the
neuron's loop from its carried membrane and pools the spikes in their channels-last order: the same kernels on the
same values in the same order, so its output equals the unfused block's bit for bit. The neuron stays the
:class:`StreamingLIF` it was (its membrane, :meth:`~StreamingLIF.reset` and ``last_spikes`` are used as they are).
:func:`fuse_event_blocks` finds such blocks in the ``nn.Sequential`` containers of a stream's model and replaces each
by one module; anything else is left as it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from sparsesnn.deploy.event_layers import EventConv2d
from sparsesnn.deploy.lif import lif_numba
from sparsesnn.deploy.passes import FoldedNorm
from sparsesnn.deploy.pool import InferenceMaxPool2d, _numba_max_pool
from sparsesnn.deploy.stateful import StreamingLIF
from sparsesnn.neuron.layers import SeqFolded


class FusedEventBlock(nn.Module):
    """An event conv (row kernel, numba), its :class:`StreamingLIF` and an optional 2x2 / stride-2 max pool, in one
    call on ``[t, B, C, H, W]`` input; see the module docstring."""

    def __init__(self, conv: EventConv2d, lif: StreamingLIF, pool: InferenceMaxPool2d | None) -> None:
        super().__init__()
        self.conv, self.lif, self.pool = conv, lif, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps, batch = x.shape[0], x.shape[1]
        out = self.conv.charge(x.reshape(steps * batch, *x.shape[2:]))  # [n, Ho, Wo, O], bias included
        n, ho, wo, channels = out.shape
        spikes = self._neuron(out, steps, batch)
        if self.pool is not None:
            # pooled straight into NCHW order (the loop writes through a channels-last view of the buffer), so that a
            # flatten or the next conv after the block reads it without a copy
            pooled = np.empty((n, channels, ho // 2, wo // 2), np.float32)
            _numba_max_pool()[2](spikes.reshape(n, ho, wo, channels), pooled.transpose(0, 2, 3, 1))
            return torch.from_numpy(pooled).reshape(steps, batch, *pooled.shape[1:])
        result = torch.from_numpy(spikes.reshape(n, ho, wo, channels)).permute(0, 3, 1, 2)
        return result.reshape(steps, batch, *result.shape[1:])  # channels-last in memory, like the unfused block

    def _neuron(self, charge: np.ndarray, steps: int, batch: int) -> np.ndarray:
        """The neuron's loop on the conv output ``[t*B, Ho, Wo, O]`` (channels-last order, the membrane's order in the
        unfused block too), from the membrane the last call left; the spikes in the same shape."""
        ho, wo, channels = charge.shape[1], charge.shape[2], charge.shape[3]
        # the unfused block's per-step layout: [B, O, Ho, Wo] channels-last
        lif = self.lif
        v = lif.membrane((batch, channels, ho, wo), (ho * wo * channels, 1, wo * channels, channels))
        spikes, lif.__dict__["last_spikes"] = lif_numba(charge.reshape(steps, -1), v.numpy(), lif.inv_tau, lif.params)
        return spikes.reshape(charge.shape)

    def extra_repr(self) -> str:
        return f"fused: {self.conv.extra_repr()}; {self.lif.extra_repr()}; pool={'2x2' if self.pool else 'none'}"


def _sequential_forward(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _block_parts(block: nn.Module) -> tuple[EventConv2d, StreamingLIF] | None:
    """``(conv, neuron)`` of ``Sequential(SeqFolded(EventConv2d [, FoldedNorm]), StreamingLIF)`` whose conv runs the
    numba row kernel and whose neuron the numba loop; else None."""
    if not _sequential_forward(block) or len(block) != 2:
        return None
    folded, lif = block[0], block[1]
    if type(folded) is not SeqFolded or type(lif) is not StreamingLIF or lif.backend != "numba":
        return None
    layers = list(folded)
    if not layers or len(layers) > 2 or (len(layers) == 2 and type(layers[1]) is not FoldedNorm):
        return None
    conv = layers[0]
    if type(conv) is not EventConv2d or not conv.row_layout:
        return None
    return conv, lif


def _pool_part(module: nn.Module) -> InferenceMaxPool2d | None:
    if type(module) is not SeqFolded or len(module) != 1:
        return None
    pool = module[0]
    ok = type(pool) is InferenceMaxPool2d and pool.backend == "numba" and pool.kernel == 2 and pool.stride == 2
    return pool if ok else None


def fuse_event_blocks(model: nn.Module) -> list[str]:
    """Replace every fusable block (see the module docstring) inside ``model``'s plain ``nn.Sequential`` containers
    by a :class:`FusedEventBlock` (a 2x2 max pool right after it is taken in too); returns the fused blocks' names."""
    fused: list[str] = []
    for name, container in list(model.named_modules()):
        if not _sequential_forward(container):
            continue
        children = list(container._modules.items())
        rebuilt: dict[str, Any] = {}
        i = 0
        while i < len(children):
            key, child = children[i]
            parts = _block_parts(child) if child is not None else None
            if parts is None:
                rebuilt[key] = child
                i += 1
                continue
            pool = _pool_part(children[i + 1][1]) if i + 1 < len(children) else None
            rebuilt[key] = FusedEventBlock(parts[0], parts[1], pool)
            fused.append(f"{name}.{key}" if name else key)
            i += 2 if pool is not None else 1
        if any(isinstance(m, FusedEventBlock) for m in rebuilt.values()):
            container._modules.clear()
            container._modules.update(rebuilt)
    return fused
