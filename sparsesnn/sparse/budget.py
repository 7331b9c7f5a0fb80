"""What a density budget counts: parameters (the papers' convention) or multiply-accumulates (the compute).

``sparse.density = d`` with ``budget = "params"`` keeps the fraction ``d`` of the masked layers' weights:
``sum_l d_l n_l = d sum_l n_l`` over layers ``l`` of ``n_l`` weights (ESL-SNN, RigL, SET, the PQ index all count
so). A weight of a Conv2d is used once per output position, ``H_out W_out`` times per sample (times ``T`` for an SNN
run over ``T`` steps), a weight of a Linear once per input vector; so a parameter budget can leave the layer that
does most of the work dense (the MNIST convnet's hidden conv: 2 % of the weights, 70 % of the MACs) and put the
sparsity where the compute is not. ``budget = "macs"`` keeps the fraction ``d`` of the masked layers' dense
multiply-accumulates instead: ``sum_l d_l n_l u_l = d sum_l n_l u_l``, ``u_l`` the uses of one weight of layer
``l`` per sample (:func:`weight_uses`). The distributions are solved over these costs in place of ``n_l``
(:func:`~sparsesnn.sparse.masks.layer_densities`): ``uniform`` is the same under both budgets (every layer at
``d`` keeps ``d`` of both); ER / ERK give each layer ``min(1, eps * s_l)`` with the same raw scales ``s_l`` and
``eps`` solved over MACs, so a layer with many uses per weight gets a smaller share than under the parameter
budget. Within one layer every weight is used equally often (borders aside), so a layer's MAC density equals its
weight density; what the budget changes is how the density is spread over layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

Budget = Literal["params", "macs"]
BUDGETS: tuple[str, ...] = ("params", "macs")


@torch.no_grad()
def weight_uses(model: nn.Module, example: torch.Tensor, names: Sequence[str]) -> dict[str, float]:
    """How many times one weight of each named Conv/Linear is used when ``model`` runs ``example`` once.

    Counted with forward hooks as ``numel(output) / out_features`` summed over the layer's calls: ``H_out W_out`` per
    sample and call for a Conv2d (``L_out`` for Conv1d, ``D H W`` for Conv3d), the number of input vectors for a
    Linear. Give ``example`` with one sample (time-major ``[T, 1, ...]`` for an SNN that takes ``[T, B, ...]``): the
    uses are then per sample, and a layer that runs every step counts ``T`` times. The model runs in eval mode (no
    running statistics move) and under ``torch.random.fork_rng`` (no random stream moves); its train/eval mode is
    restored. A stateful model that keeps its membranes across calls (SpikingJelly without ``reset_net``) keeps
    what this forward left in them: reset it before training.

    Raises:
        ValueError: a named layer did not run on ``example`` (its uses, and so its MACs, are unknown).
    """
    modules = dict(model.named_modules())
    uses = dict.fromkeys(names, 0.0)
    handles = []

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            out_features = module.weight.shape[0]
            uses[name] += output.numel() / out_features

        return record

    for name in names:
        handles.append(modules[name].register_forward_hook(hook(name)))
    was_training = model.training
    devices = [example.device] if example.device.type == "cuda" else []
    try:
        model.eval()
        with torch.random.fork_rng(devices=devices):
            model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    silent = [n for n, u in uses.items() if u == 0.0]
    if silent:
        raise ValueError(
            f"layers {silent} did not run on the example input, so their multiply-accumulates are unknown; give an "
            "example the model runs every masked layer on, or exclude those layers"
        )
    return uses


def layer_costs(numels: Sequence[int], uses: Sequence[float] | None, budget: str) -> list[float]:
    """What one layer weighs in the budget: its weights (``params``) or its dense MACs per sample (``macs``:
    weights x uses)."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {BUDGETS}")
    if budget == "params":
        return [float(n) for n in numels]
    if uses is None:
        raise ValueError(
            "budget = 'macs' spreads the density over the layers' multiply-accumulates, which depend on the input "
            "size: pass example_input= (one sample as the model takes it, e.g. [T, 1, C, H, W])"
        )
    return [float(n) * float(u) for n, u in zip(numels, uses, strict=True)]
