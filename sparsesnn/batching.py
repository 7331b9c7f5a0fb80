"""Batching and seeding: the order of an epoch, the seed of every batch, and the batches themselves.

Every random stream of a run is derived from ``(seed, epoch, batch)`` by :func:`derive_seed`: the shuffle order of an
epoch (:func:`epoch_order`) and each batch's augmentation (:class:`BatchSeed`). :func:`iterate_batches` turns an
order into ``(batch_index, sample_indices, inputs, targets)`` from any batch on, so that a run resumed mid-epoch sees
the same batches as an uninterrupted one. The engine imports this module; nothing here knows about training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from sparsesnn.data import ArrayDataset

__all__ = ["BatchSeed", "SeededBatches", "derive_seed", "epoch_order", "iterate_batches"]

_MIX = 0x9E3779B97F4A7C15


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (SplitMix64-style), so nearby (epoch, batch) pairs give unrelated streams."""
    h = 0
    for p in parts:
        h = (h ^ (p + _MIX + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed(derive_seed(seed, epoch))
    return torch.randperm(n, generator=g)


@dataclass(frozen=True)
class BatchSeed:
    """The seed of batch ``b``: :func:`derive_seed` of ``(*before, b, *after)``; picklable, for loader workers."""

    before: tuple[int, ...]
    after: tuple[int, ...] = ()

    def __call__(self, b: int) -> int:
        return derive_seed(*self.before, b, *self.after)


class SeededBatches(Dataset[Any]):
    """Item ``k`` is the ``k``-th batch of ``chunks``, collated, with torch's global RNG seeded by ``batch_seed(b)``
    (``b = start_batch + k``) right before its samples are read.

    Whether a batch is read in the main process or in a ``DataLoader`` worker, its augmentation (drawn from the
    global RNG in ``__getitem__``) is the same, so a run resumed mid-epoch, or run with another ``num_workers``,
    sees the same batches.
    """

    def __init__(
        self, dataset: Dataset[Any], chunks: list[torch.Tensor], start_batch: int, batch_seed: Callable[[int], int]
    ) -> None:
        self.dataset, self.chunks, self.start_batch, self.batch_seed = dataset, chunks, start_batch, batch_seed

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int) -> Any:
        torch.manual_seed(self.batch_seed(self.start_batch + k))
        return default_collate([self.dataset[int(i)] for i in self.chunks[k]])


def iterate_batches(
    dataset: Dataset[Any],
    order: torch.Tensor,
    batch_size: int,
    start_batch: int,
    num_workers: int,
    batch_seed: Callable[[int], int],
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(batch_index, sample_indices, inputs, targets)`` from ``start_batch`` on, in the given sample order.

    In-memory datasets are gathered by fancy indexing; others are read batch by batch through
    :class:`SeededBatches` (in ``num_workers`` worker processes when > 0). ``batch_seed(b)`` seeds batch ``b``'s
    augmentation: the generator handed to ``ArrayDataset.batch``, or torch's global RNG right before the batch's
    samples are read; either way a run resumed mid-epoch draws the same augmentations, with any ``num_workers``.
    """
    chunks = list(order.split(batch_size))[start_batch:]
    if isinstance(dataset, ArrayDataset):
        for offset, idx in enumerate(chunks):
            b = start_batch + offset
            gen = torch.Generator().manual_seed(batch_seed(b))
            x, y = dataset.batch(idx, gen)
            yield b, idx, x, y
        return
    # the generator only seeds the workers' base seed (unused: every batch is seeded), so that making the iterator
    # leaves the global RNG alone
    loader_gen = torch.Generator().manual_seed(batch_seed(start_batch))
    loader = DataLoader(
        SeededBatches(dataset, chunks, start_batch, batch_seed),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        generator=loader_gen,
    )
    for offset, (x, y) in enumerate(loader):
        yield start_batch + offset, chunks[offset], x, torch.as_tensor(y)
