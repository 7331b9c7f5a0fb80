"""Tensor helpers the mechanisms share: the dtype of their per-synapse epoch counters and the conv kernel view."""

from __future__ import annotations

import torch

#: the dtype of the per-synapse / per-kernel epoch counters (they never exceed N + 1)
COUNT = torch.int16


def is_conv(weight: torch.Tensor) -> bool:
    """Whether a weight (or a weight-shaped tensor) is a conv's: more than two dimensions."""
    return weight.dim() > 2


def kernel_view(t: torch.Tensor) -> torch.Tensor:
    """A conv weight-shaped tensor as ``[n_out, n_in, kernel]``."""
    return t.reshape(t.shape[0], t.shape[1], -1)
