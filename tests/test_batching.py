"""The input pipeline: batches are bit-identical whoever reads them (workers, a read-ahead thread, pinned memory),
a run writes the same metrics with any loader settings, and pinning happens only for a CUDA device."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset

from sparsesnn.data import ArrayDataset, build_dataset
from sparsesnn.data.images import write_cifar10
from sparsesnn.train.batching import (
    BatchSeed,
    default_prefetch,
    epoch_order,
    iterate_batches,
    read_ahead,
    resolve_pin_memory,
)
from sparsesnn.train.config import load_config_text
from sparsesnn.train.trainer import Trainer
from tests.conftest import run_metrics

SEED = BatchSeed((7, 1), (1,))
# (num_workers, prefetch): the reference reads in the main process, nothing ahead
LOADERS = [(0, 2), (2, 0), (2, 2)]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("cifar"), train=200, test=40, seed=1)


@pytest.fixture(scope="module")
def nmnist_frames(shared_data_module: Path, tmp_path_factory: pytest.TempPathFactory) -> Dataset[Any]:
    """48 real N-MNIST samples at T = 10 through the frame cache, augmented (shift, event drop, time jitter)."""
    cache = tmp_path_factory.mktemp("frames")
    ds, _ = build_dataset(
        "nmnist",
        shared_data_module / "nmnist",
        "train",
        n_frames=10,
        augment=True,
        drop_prob=0.1,
        jitter_prob=0.1,
        cache_dir=cache,
    )
    return torch.utils.data.Subset(ds, range(48))


@pytest.fixture(scope="module")
def shared_data_module() -> Path:
    from tests.conftest import DATA

    if not (DATA / "nmnist").is_dir():
        pytest.skip(f"N-MNIST files not found under {DATA}")
    return DATA


def _collect(batches: Iterator[Any]) -> list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    return [(b, idx.clone(), x.clone(), y.clone()) for b, idx, x, y in batches]


def _assert_same(got: list[Any], want: list[Any]) -> None:
    assert [g[0] for g in got] == [w[0] for w in want]
    for (b, idx, x, y), (_, widx, wx, wy) in zip(got, want, strict=True):
        assert torch.equal(idx, widx), b
        assert x.dtype == wx.dtype and torch.equal(x, wx), b  # bit-identical, not merely close
        assert torch.equal(y, wy), b


def test_cifar_batches_are_bit_identical_with_workers_and_read_ahead(cifar_root: Path) -> None:
    ds, _ = build_dataset("cifar10", cifar_root, "train", augment=True)
    assert isinstance(ds, ArrayDataset) and ds.transform is not None
    order = epoch_order(len(ds), 7, 0, shuffle=True)
    reference = _collect(iterate_batches(ds, order, 32, 0, 0, SEED))
    assert len(reference) == 7  # 200 = 6 x 32 + 8: the short last batch too
    # the reference is what the seeding promises: ArrayDataset.batch with the batch's own generator
    for b, idx, x, _y in reference:
        assert torch.equal(x, ds.batch(idx, torch.Generator().manual_seed(SEED(b)))[0])
    assert not torch.equal(reference[0][2], ds.inputs[reference[0][1]])  # augmentation is on: the test can fail
    for workers, prefetch in LOADERS:
        got = _collect(iterate_batches(ds, order, 32, 0, workers, SEED, prefetch=prefetch))
        _assert_same(got, reference)
        resumed = _collect(iterate_batches(ds, order, 32, 3, workers, SEED, prefetch=prefetch))  # mid-epoch resume
        _assert_same(resumed, reference[3:])


def test_event_frame_batches_are_bit_identical_with_workers_and_read_ahead(nmnist_frames: Dataset[Any]) -> None:
    order = epoch_order(len(nmnist_frames), 7, 0, shuffle=True)  # type: ignore[arg-type]
    reference = _collect(iterate_batches(nmnist_frames, order, 16, 0, 0, SEED))
    assert len(reference) == 3 and reference[0][2].shape == (16, 10, 2, 34, 34)
    # the reference is what the seeding promises: the global RNG seeded by the batch's seed, samples in order
    torch.manual_seed(SEED(1))
    by_hand = torch.stack([nmnist_frames[int(i)][0] for i in reference[1][1]])
    assert torch.equal(reference[1][2], by_hand)
    torch.manual_seed(SEED(1) + 1)
    other = torch.stack([nmnist_frames[int(i)][0] for i in reference[1][1]])
    assert not torch.equal(other, by_hand)  # augmentation is on: the test can fail
    for workers, prefetch in LOADERS:
        got = _collect(iterate_batches(nmnist_frames, order, 16, 0, workers, SEED, prefetch=prefetch))
        _assert_same(got, reference)
        resumed = _collect(iterate_batches(nmnist_frames, order, 16, 1, workers, SEED, prefetch=prefetch))
        _assert_same(resumed, reference[1:])


def _cifar_run_toml(root: Path) -> str:
    return f"""
[run]
name = "loader"
seed = 5
epochs = 2
max_steps_per_epoch = 4

[data]
name = "cifar10"
root = "{root}"
batch_size = 32
eval_batch_size = 32
time_steps = 2
augment = true
max_test_samples = 40

[model]
name = "mlp"
params = {{ hidden = [16] }}

[neuron]
backend = "eager"

[optim]
name = "adam"
lr = 0.003

[sparse]
method = "rigl"
density = 0.3
params = {{ update_every = 2 }}
"""


@pytest.mark.parametrize(("workers", "prefetch"), [(2, 0), (0, 2)])
def test_a_run_writes_the_same_metrics_with_any_loader_settings(
    tmp_path: Path, cifar_root: Path, monkeypatch: pytest.MonkeyPatch, workers: int, prefetch: int
) -> None:
    toml = _cifar_run_toml(cifar_root)
    Trainer(load_config_text(toml), tmp_path / "plain", quiet=True).fit()
    with monkeypatch.context() as patch:
        # the CPU reads nothing ahead by default: force the read-ahead thread an accelerator would get
        patch.setattr("sparsesnn.train.batching.default_prefetch", lambda _device: prefetch)
        cfg = load_config_text(toml, [f"data.num_workers={workers}"])
        Trainer(cfg, tmp_path / "loaded", quiet=True).fit()
    plain, loaded = run_metrics(tmp_path / "plain"), run_metrics(tmp_path / "loaded")
    assert len(plain) == 2 and plain == loaded


def test_pin_memory_auto_is_off_on_the_cpu(tmp_path: Path, cifar_root: Path) -> None:
    cpu = torch.device("cpu")
    assert load_config_text("").data.pin_memory is None  # auto
    assert resolve_pin_memory(None, cpu) is False and resolve_pin_memory(True, cpu) is False
    assert default_prefetch(cpu) == 0
    if not torch.cuda.is_available():
        assert resolve_pin_memory(None, torch.device("cuda")) is False
    trainer = Trainer(load_config_text(_cifar_run_toml(cifar_root)), tmp_path / "run", quiet=True)
    ds = trainer.data.train
    _, _, x, y = next(trainer._batches(ds, torch.arange(8), 8, 0, SEED))
    assert not x.is_pinned() and not y.is_pinned()


def test_read_ahead_keeps_order_raises_and_stops() -> None:
    assert list(read_ahead(iter(range(10)), 3)) == list(range(10))
    assert list(read_ahead(iter(range(4)), 1, lambda v: v * 10)) == [0, 10, 20, 30]
    where = []
    assert list(read_ahead(iter(range(2)), 1, start=lambda: where.append(threading.current_thread()))) == [0, 1]
    assert len(where) == 1 and where[0] is not threading.current_thread()  # start runs once, in the thread

    def failing() -> Iterator[int]:
        yield 1
        raise RuntimeError("bad sample")

    seen = []
    with pytest.raises(RuntimeError, match="bad sample"):
        for v in read_ahead(failing(), 2):
            seen.append(v)
    assert seen == [1]
    before = threading.active_count()
    items = read_ahead(iter(range(1000)), 2)
    assert next(items) == 0
    items.close()  # the consumer leaves early: the thread ends
    assert threading.active_count() == before
    with pytest.raises(ValueError, match="depth"):
        next(read_ahead(iter(range(3)), 0))


class _ThreadProbe(Dataset[tuple[torch.Tensor, int]]):
    """Records torch's intra-op thread count while each sample is read."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        self.seen.append(torch.get_num_threads())
        return torch.full((2,), float(i)), i


def test_batches_read_in_the_main_process_use_one_intra_op_thread(cifar_root: Path) -> None:
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        probe = _ThreadProbe()
        assert len(list(iterate_batches(probe, torch.arange(8), 4, 0, 0, SEED))) == 2
        assert probe.seen == [1] * 8 and torch.get_num_threads() == 2  # one thread inside, restored after
        ds, _ = build_dataset("cifar10", cifar_root, "train", augment=True)
        seen = []
        original = ds.batch

        def batch(idx: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
            seen.append(torch.get_num_threads())
            return original(idx, generator)

        ds.batch = batch  # type: ignore[method-assign]
        assert len(list(iterate_batches(ds, torch.arange(64), 32, 0, 0, SEED))) == 2
        assert seen == [1, 1] and torch.get_num_threads() == 2
        list(iterate_batches(ds, torch.arange(64), 32, 0, 0, SEED, prefetch=2))  # the thread leaves the setting alone
        assert seen[2:] == [2, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@needs_cuda
def test_pinned_batches_reach_the_gpu_identical(cifar_root: Path, nmnist_frames: Dataset[Any]) -> None:
    device = torch.device("cuda")
    assert resolve_pin_memory(None, device) is True and resolve_pin_memory(False, device) is False
    assert default_prefetch(device) == 2
    cifar, _ = build_dataset("cifar10", cifar_root, "train", augment=True)
    for ds, size in ((cifar, 32), (nmnist_frames, 16)):
        order = epoch_order(len(ds), 7, 0, shuffle=True)  # type: ignore[arg-type]
        reference = _collect(iterate_batches(ds, order, size, 0, 0, SEED))
        for workers, prefetch in [(0, 0), *LOADERS]:
            batches = iterate_batches(ds, order, size, 0, workers, SEED, pin_memory=True, prefetch=prefetch)
            got = []
            for b, idx, x, y in batches:
                assert x.is_pinned() and y.is_pinned(), (workers, prefetch)
                gx, gy = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                got.append((b, idx, gx, gy))
            torch.cuda.synchronize()
            _assert_same([(b, idx, gx.cpu(), gy.cpu()) for b, idx, gx, gy in got], reference)
