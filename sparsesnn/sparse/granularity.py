"""Groups of synapses that are pruned and grown together: the structure event-driven inference kernels can use.

A scattered mask at 10 % density leaves most small SIMD blocks of the weight non-empty (a random 10 % mask fills
``1 - 0.9^8 = 57 %`` of the blocks of 8 consecutive weights), so a kernel that skips empty blocks gains little. At a
coarser granularity every structure learner that supports it prunes and grows whole groups, and a group is always
all present or all absent in the mask (**the group invariant**: ``mask == expand(all_of(mask))``).

For a weight ``W[O, C, *k]`` (Linear: ``W[O, I]``, no taps; Conv1d/2d/3d: ``k`` has 1, 2 or 3 entries), the groups
of ``granularity`` are:

- ``weight``: single weights (the papers' granularity and the default).
- ``block``: ``block_size = B`` consecutive output channels at one input channel and one tap,
  ``W[o0 : o0 + B, c, *tap]`` with ``o0 = 0, B, 2B, ...``; when ``B`` does not divide ``O`` the last block of each
  column is shorter (``O - B * floor(O / B)`` outputs). Linear: ``W[o0 : o0 + B, i]``.
- ``tap``: a whole output column at one input channel and one tap, ``W[:, c, *tap]`` (Linear: ``W[:, i]``); the
  ``block`` grouping with ``B = O``.
- ``kernel``: a whole kernel ``W[o, c, ...]``; for a Linear (no taps) every group is one weight, as ``weight``.

Group-shaped tensors keep the weight's rank: ``[ceil(O / R), C, *k']`` with ``R`` the output rows of a group
(``1`` for ``weight`` and ``kernel``, ``min(B, O)`` for ``block``, ``O`` for ``tap``) and ``k' = (1, ...)`` for
``kernel`` (else ``k``). :meth:`Grouping.reduce` sums a weight-shaped tensor over every group's members,
:meth:`Grouping.expand` broadcasts a group-shaped one back to every member.

Density stays counted in weights (``density`` in the metrics), but a layer at density ``d`` keeps
``max(1, round(d * n_groups))`` groups (:meth:`Grouping.group_count`, the rule of
:func:`~sparsesnn.sparse.masks.active_count` applied to groups); with equal groups that is the weight count of
``round(d * n_groups) * group_size``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from sparsesnn.sparse.masks import active_count, random_mask

Granularity = Literal["weight", "block", "tap", "kernel"]
#: the granularities, finest first
GRANULARITIES: tuple[str, ...] = get_args(Granularity)


@dataclass(frozen=True)
class Grouping:
    """The groups of one weight shape at one granularity (see the module docstring).

    Args:
        shape: the weight's shape, ``(O, C, *k)`` (at least two dimensions).
        granularity: ``weight``, ``block``, ``tap`` or ``kernel``.
        block_size: output channels per group at ``block`` granularity (``>= 1``; ignored otherwise).
    """

    shape: tuple[int, ...]
    granularity: Granularity = "weight"
    block_size: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if len(self.shape) < 2 or min(self.shape) < 1:
            raise ValueError(f"a Linear/Conv weight shape (O, C, *k) with every size >= 1, got {self.shape}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")

    # -- the shape of the groups ------------------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """``R``: consecutive output channels a group spans (the last group along the outputs may have fewer)."""
        if self.granularity == "block":
            return min(self.block_size, self.shape[0])
        if self.granularity == "tap":
            return self.shape[0]
        return 1

    @property
    def group_shape(self) -> tuple[int, ...]:
        """``(ceil(O / R), C, *k')``: one entry per group, the weight's rank kept (``k' = (1, ...)`` for ``kernel``)."""
        taps = (1,) * (len(self.shape) - 2) if self.granularity == "kernel" else self.shape[2:]
        return (-(-self.shape[0] // self.rows), self.shape[1], *taps)

    @property
    def n_groups(self) -> int:
        return math.prod(self.group_shape)

    @property
    def is_identity(self) -> bool:
        """Whether every group is one weight (``weight``; ``kernel`` on a Linear; ``block_size = 1``; ``O = 1``)."""
        return self.group_shape == self.shape

    def group_count(self, density: float) -> int:
        """Groups a layer keeps at ``density``: ``max(1, min(n_groups, round(density * n_groups)))``."""
        return active_count(self.n_groups, density)

    # -- between weights and groups ---------------------------------------------------------------------------------
    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The group-shaped sum of the weight-shaped ``x`` over every group's members (a bool ``x`` is counted, as
        int64); ``x`` itself when every group is one weight."""
        if tuple(x.shape) != self.shape:
            raise ValueError(f"expected a tensor of the weight's shape {self.shape}, got {tuple(x.shape)}")
        if x.dtype == torch.bool:
            x = x.to(torch.int64)
        if self.is_identity:
            return x
        if self.granularity == "kernel":
            return x.sum(dim=tuple(range(2, x.dim())), keepdim=True)
        n_blocks, rows = self.group_shape[0], self.rows
        pad = n_blocks * rows - self.shape[0]  # the last block's missing outputs, summed as zeros
        if pad:
            x = torch.cat([x, x.new_zeros((pad, *self.shape[1:]))])
        return x.reshape(n_blocks, rows, *self.shape[1:]).sum(1)

    def expand(self, groups: torch.Tensor) -> torch.Tensor:
        """The weight-shaped tensor holding, at every weight, the entry of the group-shaped ``groups`` of its group
        (a new contiguous tensor)."""
        if tuple(groups.shape) != self.group_shape:
            raise ValueError(f"expected a tensor of the group shape {self.group_shape}, got {tuple(groups.shape)}")
        if self.is_identity:
            return groups.clone()
        if self.granularity == "kernel":
            return groups.expand(self.shape).contiguous()
        return groups.repeat_interleave(self.rows, dim=0)[: self.shape[0]].contiguous()

    def sizes(self, device: torch.device | None = None) -> torch.Tensor:
        """Group-shaped int64 tensor: the weights each group holds (``R * prod(k)`` for ``kernel`` ... ``1``)."""
        return self.reduce(torch.ones(self.shape, dtype=torch.int64, device=device))

    def all_of(self, mask: torch.Tensor) -> torch.Tensor:
        """Group-shaped bool: the groups whose every member is True in the weight-shaped bool ``mask``."""
        return self.reduce(mask) == self.sizes(mask.device)

    def none_of(self, mask: torch.Tensor) -> torch.Tensor:
        """Group-shaped bool: the groups none of whose members is True in ``mask``."""
        return self.reduce(mask) == 0

    def holds(self, mask: torch.Tensor) -> bool:
        """Whether ``mask`` keeps the group invariant: every group all present or all absent."""
        return bool(torch.equal(self.expand(self.all_of(mask)), mask))

    def random_mask(self, density: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """A weight-shaped bool mask of exactly :meth:`group_count` ``(density)`` groups drawn uniformly at random by
        ``generator`` (the draws of :func:`~sparsesnn.sparse.masks.random_mask` over the groups: at ``weight``
        granularity exactly that function's mask)."""
        groups = random_mask(torch.Size(self.group_shape), self.group_count(density), generator, device)
        return self.expand(groups) if not self.is_identity else groups
