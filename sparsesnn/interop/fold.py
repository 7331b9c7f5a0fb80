"""Folding an eval-mode BatchNorm into the Linear or convolution before it: ``BN(W x + b) = W' x + b'`` with
``W' = W * s``, ``b' = beta + (b - mu) * s`` and ``s = gamma / sqrt(var + eps)`` per output channel. NIR export and
``deploy`` both use it."""

from __future__ import annotations

import torch
from torch import nn

from sparsesnn.core.errors import SparseSNNError


class UnfoldableNormError(SparseSNNError, NotImplementedError):
    """A normalisation that cannot become part of the layer before it (it has no running statistics)."""


def fold_batchnorm(
    weight: torch.Tensor, bias: torch.Tensor | None, norm: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``norm(layer(x))`` as one layer (eval-mode statistics), computed in float64.

    >>> import torch
    >>> bn = torch.nn.BatchNorm1d(2).eval()
    >>> w, b = fold_batchnorm(torch.ones(2, 3), None, bn)
    >>> bool(torch.allclose(w, torch.ones(2, 3) / (1 + bn.eps) ** 0.5)), b.tolist()
    (True, [0.0, 0.0])
    """
    if norm.running_mean is None or norm.running_var is None:
        raise UnfoldableNormError(
            f"{type(norm).__name__} without running statistics normalises with batch statistics; it cannot be folded"
        )
    mean = norm.running_mean.detach().double()
    var = norm.running_var.detach().double()
    gamma = norm.weight.detach().double() if norm.weight is not None else torch.ones_like(mean)
    beta = norm.bias.detach().double() if norm.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + norm.eps)
    w = weight.detach().double() * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    b0 = bias.detach().double() if bias is not None else torch.zeros_like(mean)
    b = beta + (b0 - mean) * scale
    return w.to(weight.dtype), b.to(weight.dtype)
