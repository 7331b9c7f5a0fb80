"""Ghost synapses: masked weights keep learning during an epoch that ends with a regeneration check, and are
re-zeroed at its end.

The learner keeps the real topology itself (``structure``, ``alive``: the authors' ``codebook``). With regeneration
on, from the first optimiser step of every epoch that ends with a regeneration check (``e > 2N``), the *working*
masks of the core (``weight_mask``, ``neuron_mask``) are widened to ``structure`` plus the regeneration candidates'
slots (:func:`ghost_slots`: every entry of a fully absent conv kernel, every absent FC synapse; pruned neurons become
live; :func:`widen`): they get gradients and optimiser updates from 0, and the pruned neurons' bias and BatchNorm
``gamma``/``beta`` are restored from a stash so that gradients reach their synapses. ``on_epoch_end`` reads the
re-learned values, updates the structure, and sets the working masks back to it (:func:`narrow`), which re-zeroes
the ghosts, their optimiser moments and the pruned neurons' bias/BN (after stashing those); a neuron revived by
regeneration gets its stashed values back. At every epoch boundary, therefore, the working masks *are* the
structure: evaluation, checkpoints written there, the engine's topology digests and ``shrink.compact`` see the real
network. With regeneration off there are no ghosts: pruned stays pruned.
"""

from __future__ import annotations

import torch

from sparsesnn.sparse.masks import MaskedLayer, MaskSet
from sparsesnn.sparse.methods.sdsnn.tensors import is_conv, kernel_view

#: a layer's stash: its pruned neurons' bias / BatchNorm values by parameter key
Stash = dict[str, torch.Tensor]


def ghost_slots(s: torch.Tensor) -> torch.Tensor:
    """Weight-shaped bool: the entries of structure ``s`` that may regrow (fully absent conv kernels, absent FC
    synapses)."""
    if not is_conv(s):
        return ~s
    k = kernel_view(s)
    return (~k.any(-1, keepdim=True)).expand_as(k).reshape(s.shape)


def neuron_params(layer: MaskedLayer) -> list[tuple[str, torch.Tensor]]:
    """A layer's per-neuron parameters that the core's neuron mask zeroes: its bias and its norm's weight and bias."""
    params = []
    bias = getattr(layer.module, "bias", None)
    if isinstance(bias, torch.Tensor):
        params.append(("bias", bias))
    if layer.norm is not None:
        for key, p in (("norm_weight", layer.norm.weight), ("norm_bias", layer.norm.bias)):
            if isinstance(p, torch.Tensor):
                params.append((key, p))
    return params


@torch.no_grad()
def widen(masks: MaskSet, layer: MaskedLayer, s: torch.Tensor, alive: torch.Tensor, stash: Stash) -> bool:
    """Widen the layer's working masks to its structure ``s`` plus its ghost slots and bring the pruned neurons'
    bias / BN back from ``stash``; returns False (and changes nothing) when the layer has no slot."""
    slots = ghost_slots(s)
    if not bool(slots.any()):
        return False
    dead = ~alive
    masks.set_neuron_mask(layer, torch.ones_like(dead))
    for key, p in neuron_params(layer):
        if key in stash:
            p[dead] = stash[key][dead]
    masks.set_mask(layer, s | slots)
    return True


@torch.no_grad()
def narrow(masks: MaskSet, layer: MaskedLayer, s: torch.Tensor, alive: torch.Tensor, stash: Stash) -> None:
    """Set the layer's working masks back to its structure ``s`` and neurons ``alive``: ghosts, their moments and
    pruned neurons' bias / BN to zero (stashed first); neurons revived meanwhile get their stashed values back."""
    live = ~alive & layer.neuron_mask  # pruned in the structure, live in the working mask
    if bool(live.any()):
        for key, p in neuron_params(layer):
            if key not in stash:
                stash[key] = torch.zeros_like(p.detach())
            stash[key][live] = p.detach()[live]
    revived = alive & ~layer.neuron_mask  # regrown while its bias / BN were held at zero
    masks.set_mask(layer, s)  # first: keeps the regrown weights of revived neurons
    masks.set_neuron_mask(layer, alive)
    if bool(revived.any()):
        for key, p in neuron_params(layer):
            if key in stash:
                p[revived] = stash[key][revived]
