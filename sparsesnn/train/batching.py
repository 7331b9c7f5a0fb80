"""Batching and seeding: the order of an epoch, the seed of every batch, and the batches themselves.

Every random stream of a run is derived from ``(seed, epoch, batch)`` by :func:`derive_seed`: the shuffle order of an
epoch (:func:`epoch_order`) and each batch's augmentation (:class:`BatchSeed`). :func:`iterate_batches` turns an
order into ``(batch_index, sample_indices, inputs, targets)`` from any batch on, so that a run resumed mid-epoch sees
the same batches as an uninterrupted one. The named ``*_STREAM`` constants say which stream each seed is; nothing here
knows about training.

Keeping an accelerator fed: batches can be read ahead of the step that consumes them and placed in pinned (page
locked) host memory, from which ``tensor.to(device, non_blocking=True)`` copies asynchronously. Who reads ahead:

* an in-memory :class:`~sparsesnn.data.ArrayDataset` (images): with ``num_workers > 0`` the workers of a
  ``DataLoader`` over :class:`ArrayBatches` (one item per batch); with ``num_workers = 0`` and ``prefetch > 0`` one
  background thread (augmentation is a few large torch ops that release the GIL);
* any other dataset (event frames read from files): the workers of a ``DataLoader`` over :class:`SeededBatches`.

None of this changes a batch: the augmentation of batch ``b`` depends on ``batch_seed(b)`` alone, whoever computes it
and whenever, so ``num_workers``, ``pin_memory`` and ``prefetch`` leave a run's batches bit-identical.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from sparsesnn.data import ArrayDataset, DatasetInfo

__all__ = [
    "ArrayBatches",
    "BatchSeed",
    "SeededBatches",
    "default_prefetch",
    "derive_seed",
    "epoch_order",
    "iterate_batches",
    "loader_batches",
    "one_intra_op_thread",
    "read_ahead",
    "resolve_pin_memory",
]

Batch = tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]  # (batch_index, sample_indices, inputs, targets)
T = TypeVar("T")

_MIX = 0x9E3779B97F4A7C15  # SplitMix64's increment (2**64 / golden ratio), not a stream

# The random streams of a run. Each is seeded with ``derive_seed(run.seed, *position, STREAM)``: the last part says
# which stream it is, so two streams at the same position never share a seed. (An epoch's shuffle order is
# ``derive_seed(run.seed, epoch)``, :func:`epoch_order`.) Changing a value changes every run's numbers.
#: torch's global generator while the model's weights are initialised (seeded once, before the data is built)
MODEL_INIT_STREAM = 0xD0D0
#: the structure learner's own generator: its initial masks and every random prune or growth decision
LEARNER_STREAM = 0x5EED
#: per training batch ``(epoch, batch)``: the batch's augmentation and Poisson encoding (:class:`BatchSeed`)
TRAIN_BATCH_STREAM = 1
#: per training batch ``(epoch, batch)``: torch's global generator before the step (dropout)
TRAIN_GLOBAL_STREAM = 2
#: per evaluation batch ``(batch,)``: the batch's augmentation (:class:`BatchSeed`)
EVAL_BATCH_STREAM = 3
#: per evaluation batch ``(batch,)``: torch's global generator before the forward pass (the Poisson encoder)
EVAL_GLOBAL_STREAM = 4
#: the pass over the whole test split that export and deploy evaluation read: torch's global generator, seeded once
#: at ``(0,)``
EXPORT_GLOBAL_STREAM = 5
#: that pass, per batch ``(batch,)``: the batch's augmentation (:class:`BatchSeed`)
EXPORT_BATCH_STREAM = 6


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
        with one_intra_op_thread():
            return default_collate([self.dataset[int(i)] for i in self.chunks[k]])


@contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """Run the block with one intra-op thread (torch's setting restored after it), for work made of many small ops.

    A sample's frames (tens of thousands of elements) are just big enough for torch to split each copy or flip over
    its threads, but far too small to gain from it, and collating them copies sample by sample; on a busy machine
    every such parallel region also waits for threads the scheduler has parked (bench/loader_speed.py measures it).
    Loader workers already run on one thread. Results do not depend on the number of threads. Not for a block that
    runs beside other torch work of the same process (the setting is per process): the read-ahead thread does not
    use it.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class ArrayBatches(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Item ``k`` is the ``k``-th batch of ``chunks`` of an in-memory dataset: ``dataset.batch(chunks[k], generator)``
    with a generator seeded by ``batch_seed(start_batch + k)``, in the main process, a thread or a loader worker."""

    def __init__(
        self, dataset: ArrayDataset, chunks: list[torch.Tensor], start_batch: int, batch_seed: Callable[[int], int]
    ) -> None:
        self.dataset, self.chunks, self.start_batch, self.batch_seed = dataset, chunks, start_batch, batch_seed

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.batch_seed(self.start_batch + k))
        return self.dataset.batch(self.chunks[k], generator)


def resolve_pin_memory(setting: bool | None, device: torch.device) -> bool:
    """Whether to pin host batches for ``device``: never unless it is a CUDA device on a machine with CUDA (pinning
    only speeds up copies to a GPU); there ``setting`` decides, None (auto) meaning yes.

    >>> resolve_pin_memory(None, torch.device("cpu")), resolve_pin_memory(True, torch.device("cpu"))
    (False, False)
    """
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return True if setting is None else bool(setting)


def default_prefetch(device: torch.device) -> int:
    """Batches an in-memory dataset reads ahead in a background thread when ``num_workers = 0``: 2 when the step runs
    on an accelerator (the host is free to augment while it waits), 0 on the CPU (the step already uses the cores).

    >>> default_prefetch(torch.device("cpu"))
    0
    """
    return 0 if device.type == "cpu" else 2


def read_ahead(
    items: Iterator[T],
    depth: int,
    prepare: Callable[[T], T] | None = None,
    start: Callable[[], None] | None = None,
) -> Iterator[T]:
    """Yield the items of ``items`` in order while a background thread computes up to ``depth`` of them ahead
    (each passed through ``prepare`` there, e.g. pinning; ``start`` runs there first, e.g. to select the CUDA device).
    An exception in the thread is raised here, at the item it would have produced; closing this generator early
    stops the thread before the next item.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    done = object()
    ready: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple[bool, Any]) -> bool:
        """Put ``entry`` once there is room; False when the consumer has gone."""
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            if start is not None:
                start()
            for item in items:
                if stop.is_set() or not offer((True, prepare(item) if prepare is not None else item)):
                    return
            offer((False, done))
        except BaseException as exc:  # handed to the consumer, raised there
            offer((False, exc))

    worker = threading.Thread(target=produce, name="sparsesnn-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            ok, item = ready.get()
            if ok:
                yield item
            elif item is done:
                return
            else:
                raise item
    finally:
        stop.set()
        worker.join()


def _gathered(batches: ArrayBatches, single_thread: bool) -> Iterator[Batch]:
    """The batches of an in-memory dataset in order, each computed on one intra-op thread when ``single_thread``
    (the caller's thread does nothing else meanwhile; see :func:`one_intra_op_thread`)."""
    for k in range(len(batches)):
        with one_intra_op_thread() if single_thread else nullcontext():
            x, y = batches[k]
        yield batches.start_batch + k, batches.chunks[k], x, y


def _pin(batch: Batch) -> Batch:
    b, idx, x, y = batch
    return b, idx, x.pin_memory(), y.pin_memory()


def iterate_batches(
    dataset: Dataset[Any],
    order: torch.Tensor,
    batch_size: int,
    start_batch: int,
    num_workers: int,
    batch_seed: Callable[[int], int],
    *,
    pin_memory: bool = False,
    prefetch: int = 0,
) -> Iterator[Batch]:
    """Yield ``(batch_index, sample_indices, inputs, targets)`` from ``start_batch`` on, in the given sample order.

    ``batch_seed(b)`` seeds batch ``b``'s augmentation: the generator handed to ``ArrayDataset.batch`` for in-memory
    datasets (:class:`ArrayBatches`), torch's global RNG right before the batch's samples are read for the others
    (:class:`SeededBatches`); either way a run resumed mid-epoch draws the same augmentations.

    ``num_workers > 0`` reads batches in that many ``DataLoader`` worker processes. ``prefetch > 0`` makes an
    in-memory dataset with ``num_workers = 0`` read that many batches ahead in a background thread (other datasets
    draw from the global RNG, which a thread would share with the caller, so they read ahead only in workers).
    ``pin_memory`` returns inputs and targets in pinned memory, for asynchronous copies to a CUDA device (pass
    :func:`resolve_pin_memory`'s answer: pinning needs CUDA). None of these options changes a batch.
    """
    chunks = list(order.split(batch_size))[start_batch:]
    if isinstance(dataset, ArrayDataset) and num_workers == 0:
        batches = ArrayBatches(dataset, chunks, start_batch, batch_seed)
        if prefetch > 0:
            # pin on the caller's CUDA device, as DataLoader's pinning thread does (a thread starts on device 0)
            on_device = partial(torch.cuda.set_device, torch.cuda.current_device()) if pin_memory else None
            yield from read_ahead(_gathered(batches, False), prefetch, _pin if pin_memory else None, on_device)
        else:
            gathered = _gathered(batches, True)
            yield from (_pin(batch) for batch in gathered) if pin_memory else gathered
        return
    items: Dataset[Any]
    if isinstance(dataset, ArrayDataset):
        items = ArrayBatches(dataset, chunks, start_batch, batch_seed)
    else:
        items = SeededBatches(dataset, chunks, start_batch, batch_seed)
    # the generator only seeds the workers' base seed (unused: every batch is seeded), so that making the iterator
    # leaves the global RNG alone
    loader_gen = torch.Generator().manual_seed(batch_seed(start_batch))
    loader = DataLoader(
        items,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        generator=loader_gen,
        pin_memory=pin_memory,
    )
    for offset, (x, y) in enumerate(loader):
        yield start_batch + offset, chunks[offset], x, torch.as_tensor(y)


def loader_batches(
    dataset: Dataset[Any],
    order: torch.Tensor,
    batch_size: int,
    start_batch: int,
    batch_seed: Callable[[int], int],
    *,
    device: torch.device,
    num_workers: int = 0,
    pin_memory: bool | None = None,
) -> Iterator[Batch]:
    """:func:`iterate_batches` as a run on ``device`` reads them: ``num_workers`` loader workers (``data.num_workers``),
    pinned memory for a CUDA device (``pin_memory`` is the ``data.pin_memory`` setting, None for auto:
    :func:`resolve_pin_memory`), and in-memory batches read ahead off the CPU (:func:`default_prefetch`). The batches
    are the same whatever the settings."""
    return iterate_batches(
        dataset,
        order,
        batch_size,
        start_batch,
        num_workers,
        batch_seed,
        pin_memory=resolve_pin_memory(pin_memory, device),
        prefetch=default_prefetch(device),
    )


def to_time_major(x: torch.Tensor, info: DatasetInfo, encoder: nn.Module) -> torch.Tensor:
    """Event frames ``[B, T, ...]`` -> ``[T, B, ...]``; static samples ``[B, ...]`` -> encoder -> ``[T, B, ...]``."""
    if info.time_major:
        return x.transpose(0, 1)
    return encoder(x)
