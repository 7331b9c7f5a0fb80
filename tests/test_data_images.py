"""Image dataset loaders: IDX (real MNIST and hand-made files), CIFAR pickles (fakes in the original format),
the embedded digits, batched augmentation, and that malformed files only ever raise DatasetError."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsesnn.core.errors import ConfigError, DatasetError
from sparsesnn.data import DATASETS, ArrayDataset, DatasetInfo, build_dataset, read_idx
from sparsesnn.data import images as img
from sparsesnn.data.transforms import RandomCropFlip, normalize_, normalized_zero, random_crop_flip
from tests.conftest import DATA as SHARED_DATA

MNIST = SHARED_DATA / "mnist"
needs_mnist = pytest.mark.skipif(not (MNIST / "t10k-labels-idx1-ubyte.gz").exists(), reason="MNIST files absent")
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
# sha256 of the decompressed train-images-idx3-ubyte, from /work/shared/data/mnist/PROVENANCE.md
MNIST_TRAIN_IMAGES_SHA256 = "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False, extra: bytes = b"", cut: int = 0) -> Path:
    """Write ``array`` as an IDX file (big-endian), optionally gzipped, with trailing ``extra`` or ``cut`` bytes."""
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
    code = codes[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes() + extra
    if cut:
        data = data[:-cut]
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_fake_mnist(root: Path, split: str, n_images: int, n_labels: int | None = None, label_max: int = 9) -> None:
    prefix = "train" if split == "train" else "t10k"
    rng = np.random.default_rng(0)
    write_idx(
        root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n_images, 28, 28), dtype=np.uint8), gz=True
    )
    labels = np.arange(n_labels if n_labels is not None else n_images) % (label_max + 1)
    write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels.astype(np.uint8), gz=True)


# ------------------------------------------------------------------------------------------------------- real MNIST


@pytest.fixture(scope="module")
def mnist_train() -> tuple[ArrayDataset, DatasetInfo]:
    ds, info = build_dataset("mnist", MNIST, "train")
    assert isinstance(ds, ArrayDataset)
    return ds, info


@needs_mnist
def test_mnist_train_real(mnist_train: tuple[ArrayDataset, DatasetInfo]) -> None:
    ds, info = mnist_train
    assert info == DatasetInfo("mnist", 10, (1, 28, 28), train_size=60000)
    assert info.in_channels == 1 and info.input_size == 28
    assert len(ds) == 60000 and ds.inputs.shape == (60000, 1, 28, 28) and ds.inputs.dtype == torch.float32
    assert torch.bincount(ds.targets).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(ds.targets)[1] == 6742
    assert ds.targets[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    # normalised with the training-set statistics: mean ~0, std ~1; background = -0.1307 / 0.3081
    assert abs(ds.inputs.mean().item()) < 1e-3 and abs(ds.inputs.std().item() - 1.0) < 1e-3
    assert ds.inputs.min().item() == pytest.approx(-0.1307 / 0.3081, abs=1e-6)
    assert ds.inputs.max().item() == pytest.approx((1 - 0.1307) / 0.3081, abs=1e-6)
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and y == 5


@needs_mnist
def test_mnist_raw_pixels_and_payload() -> None:
    images = read_idx(MNIST / "train-images-idx3-ubyte.gz", expect_magic=0x00000803)
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8 and images.flags.writeable
    assert images.mean() / 255 == pytest.approx(0.1307, abs=1e-4)
    assert (images / 255).std() == pytest.approx(0.3081, abs=1e-4)
    raw = gzip.decompress((MNIST / "train-images-idx3-ubyte.gz").read_bytes())
    assert hashlib.sha256(raw).hexdigest() == MNIST_TRAIN_IMAGES_SHA256
    assert images.tobytes() == raw[16:]


@needs_mnist
def test_mnist_test_real_and_unnormalised() -> None:
    ds, info = build_dataset("mnist", MNIST, "test", normalize=False)
    assert info.test_size == 10000 and info.train_size is None
    assert torch.bincount(ds.targets).tolist() == MNIST_TEST_COUNTS
    assert ds.inputs.min().item() == 0.0 and ds.inputs.max().item() == 1.0
    assert ds.targets[:5].tolist() == [7, 2, 1, 0, 4]


@needs_mnist
@pytest.mark.parametrize("name_style", ["plain", "dotted"])
def test_raw_idx_files_load_like_gz(tmp_path: Path, name_style: str) -> None:
    for kind in ("images-idx3", "labels-idx1"):
        raw = gzip.decompress((MNIST / f"t10k-{kind}-ubyte.gz").read_bytes())
        name = f"t10k-{kind}-ubyte" if name_style == "plain" else f"t10k-{kind.replace('-idx', '.idx')}-ubyte"
        (tmp_path / name).write_bytes(raw)
    raw_ds, _ = build_dataset("mnist", tmp_path, "test")
    gz_ds, _ = build_dataset("mnist", MNIST, "test")
    assert torch.equal(raw_ds.inputs, gz_ds.inputs) and torch.equal(raw_ds.targets, gz_ds.targets)


def test_torchvision_layout_is_found(tmp_path: Path) -> None:
    (tmp_path / "FashionMNIST" / "raw").mkdir(parents=True)
    write_fake_mnist(tmp_path / "FashionMNIST" / "raw", "test", 5)
    ds, info = build_dataset("fashion_mnist", tmp_path, "test")
    assert len(ds) == 5 and info.name == "fashion_mnist"


def test_fashion_mnist_fake(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path, "train", 12)
    ds, info = build_dataset("fashion_mnist", tmp_path, "train", normalize=True, augment=True)
    assert info == DatasetInfo("fashion_mnist", 10, (1, 28, 28), train_size=12)
    raw = read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    expected = (torch.from_numpy(raw).float().unsqueeze(1) / 255 - 0.2860) / 0.3530
    torch.testing.assert_close(ds.inputs, expected)
    assert ds.targets.tolist() == [i % 10 for i in range(12)]
    assert isinstance(ds.transform, RandomCropFlip) and ds.transform.flip
    x, _ = ds.batch(torch.arange(12), torch.Generator().manual_seed(1))
    assert x.shape == (12, 1, 28, 28)
    plain, _ = build_dataset("fashion_mnist", tmp_path, "train", augment=False)
    assert plain.transform is None


# -------------------------------------------------------------------------------------------------- IDX in general


@pytest.mark.parametrize(
    "array",
    [
        np.arange(-6, 6, dtype=np.int16).reshape(3, 4) * 1000,
        np.linspace(-1, 1, 24).reshape(2, 3, 4),
        np.array([-128, 0, 127], dtype=np.int8),
        np.array([[1.5, -2.25]], dtype=np.float32),
        np.array([2**31 - 1, -(2**31)], dtype=np.int32),
    ],
    ids=["int16", "float64", "int8", "float32", "int32"],
)
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_decodes_type_and_shape(tmp_path: Path, array: np.ndarray, gz: bool) -> None:
    out = read_idx(write_idx(tmp_path / "a.idx", array, gz=gz))
    assert out.dtype == array.dtype and out.dtype.isnative and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def _message(excinfo: pytest.ExceptionInfo[DatasetError]) -> str:
    return str(excinfo.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nope-idx1-ubyte\.gz: file not found"):
        read_idx(tmp_path / "nope-idx1-ubyte.gz")
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz not found"):
        build_dataset("mnist", tmp_path, "train")
    with pytest.raises(DatasetError, match="not a directory"):
        build_dataset("mnist", tmp_path / "absent", "train")
    with pytest.raises(DatasetError, match="root is required"):
        build_dataset("mnist", None, "train")


@needs_mnist
def test_truncated_gz(tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes()[:2000])
    with pytest.raises(DatasetError, match="truncated gzip") as excinfo:
        read_idx(path)
    assert str(path) in _message(excinfo)


def test_corrupt_gz(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(bytes(16) + np.arange(5000, dtype=np.uint32).tobytes()))
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "bad.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="gzip") as excinfo:
        read_idx(path)
    assert "bad.gz" in _message(excinfo)


def test_truncated_raw(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x-images-idx3-ubyte", np.zeros((10, 28, 28), np.uint8), cut=100)
    with pytest.raises(DatasetError) as excinfo:
        read_idx(path)
    msg = _message(excinfo)
    assert str(path) in msg and "expected 7840 payload bytes for 10x28x28 uint8, found 7740" in msg
    assert "truncated" in msg


def test_extra_bytes(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x-labels-idx1-ubyte.gz", np.zeros(10, np.uint8), gz=True, extra=b"\0\0\0")
    with pytest.raises(DatasetError, match=r"expected 10 payload bytes for 10 uint8, found 13 \(3 extra bytes") as e:
        read_idx(path)
    assert str(path) in _message(e)


def test_wrong_magic(tmp_path: Path) -> None:
    labels = write_idx(tmp_path / "labels", np.zeros(4, np.uint8))
    with pytest.raises(DatasetError, match=r"expected IDX magic 0x00000803 .*found 0x00000801") as e:
        read_idx(labels, expect_magic=0x00000803)
    assert str(labels) in _message(e)
    not_idx = tmp_path / "not-idx"
    not_idx.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(DatasetError, match=r"not-idx: not an IDX file.*found 0x504B0304"):
        read_idx(not_idx)
    bad_type = tmp_path / "bad-type"
    bad_type.write_bytes(bytes([0, 0, 0x0A, 1]) + struct.pack(">I", 1) + b"\0")
    with pytest.raises(DatasetError, match="bad-type: unknown IDX element type 0x0A"):
        read_idx(bad_type)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DatasetError, match="short: expected a 16-byte IDX header for 3 dimensions"):
        read_idx(short)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(DatasetError, match="empty: expected a 4-byte IDX magic"):
        read_idx(empty)


def test_mnist_swapped_files_rejected(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path, "test", 3)
    labels = (tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(labels)
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\.gz: expected IDX magic 0x00000803"):
        build_dataset("mnist", tmp_path, "test")


def test_mnist_count_mismatch(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path, "train", 5, n_labels=6)
    with pytest.raises(DatasetError) as excinfo:
        build_dataset("mnist", tmp_path, "train")
    msg = _message(excinfo)
    assert "train-images-idx3-ubyte.gz holds 5 images" in msg and "train-labels-idx1-ubyte.gz holds 6 labels" in msg


def test_mnist_label_out_of_range(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path, "test", 12, label_max=11)
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte.gz: expected labels in 0..9, found 11"):
        build_dataset("mnist", tmp_path, "test")


def test_mnist_wrong_image_size(tmp_path: Path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 32, 32), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(2, np.uint8))
    with pytest.raises(
        DatasetError, match="t10k-images-idx3-ubyte: expected mnist images of 28x28 pixels, found 32x32"
    ):
        build_dataset("mnist", tmp_path, "test")


_TYPES = st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x0A, 0xFF])


@st.composite
def idx_like_bytes(draw: st.DrawFn) -> bytes:
    """Garbage, or a plausible IDX header with random dims and a payload of random length, maybe gzipped/cut."""
    if draw(st.booleans()):
        data = draw(st.binary(max_size=300))
    else:
        ndim = draw(st.integers(0, 4))
        dims = draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim))
        if draw(st.booleans()) and dims:
            dims[0] = draw(st.integers(0, 2**32 - 1))  # absurd sizes must not allocate
        data = bytes([0, 0, draw(_TYPES), ndim]) + struct.pack(f">{ndim}I", *dims) + draw(st.binary(max_size=200))
    if draw(st.booleans()):
        data = gzip.compress(data)
        if draw(st.booleans()):
            cut = draw(st.integers(0, len(data)))
            data = data[:cut]
        elif draw(st.booleans()):
            flip = draw(st.integers(0, len(data) - 1))
            data = data[:flip] + bytes([data[flip] ^ 0x5A]) + data[flip + 1 :]
    return data


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=idx_like_bytes())
def test_garbage_idx_only_raises_dataset_error(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.getbasetemp() / "garbage-idx3-ubyte"
    path.write_bytes(data)
    try:
        out = read_idx(path)
    except DatasetError as err:
        assert str(path) in str(err)
    else:
        assert isinstance(out, np.ndarray) and out.ndim >= 1


# ------------------------------------------------------------------------------------------------------------ CIFAR


def cifar_batch(n: int, label_key: bytes, num_classes: int, seed: int, name: bytes) -> dict[bytes, object]:
    """A batch dict in the exact layout of the python CIFAR files (as loaded with encoding="bytes")."""
    rng = np.random.default_rng(seed)
    batch: dict[bytes, object] = {
        b"batch_label": name,
        label_key: [int(v) for v in rng.integers(0, num_classes, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [int(v) for v in rng.integers(0, 20, n)]
    return batch


def dump(path: Path, obj: object, protocol: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.fixture()
def cifar10_root(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    for i in range(1, 6):
        dump(folder / f"data_batch_{i}", cifar_batch(3, b"labels", 10, i, f"training batch {i} of 5".encode()))
    test = cifar_batch(4, b"labels", 10, 99, b"testing batch 1 of 1")
    data = test[b"data"]
    assert isinstance(data, np.ndarray)
    # plant known pixels in image 2: R at (row 5, col 7) = 201, G at (0, 31) = 202, B at (31, 0) = 203
    data[2, 0 * 1024 + 5 * 32 + 7] = 201
    data[2, 1 * 1024 + 0 * 32 + 31] = 202
    data[2, 2 * 1024 + 31 * 32 + 0] = 203
    dump(folder / "test_batch", test, protocol=pickle.HIGHEST_PROTOCOL)
    return tmp_path


def test_cifar10_loads_from_folder_or_parent(cifar10_root: Path) -> None:
    ds, info = build_dataset("cifar10", cifar10_root, "train")
    assert info == DatasetInfo("cifar10", 10, (3, 32, 32), train_size=15)
    assert ds.inputs.shape == (15, 3, 32, 32) and ds.inputs.dtype == torch.float32
    expected_labels = [label for i in range(1, 6) for label in cifar_batch(3, b"labels", 10, i, b"")[b"labels"]]
    assert ds.targets.tolist() == expected_labels
    same, _ = build_dataset("cifar10", cifar10_root / "cifar-10-batches-py", "train")
    assert torch.equal(same.inputs, ds.inputs)
    mean = torch.tensor(img.CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(img.CIFAR10_STD).view(1, 3, 1, 1)
    raw, _ = build_dataset("cifar10", cifar10_root, "train", normalize=False)
    torch.testing.assert_close(ds.inputs, (raw.inputs - mean) / std)


def test_cifar10_pixel_layout(cifar10_root: Path) -> None:
    ds, info = build_dataset("cifar10", cifar10_root, "test", normalize=False)
    assert len(ds) == 4 and info.test_size == 4
    pixels = (ds.inputs * 255).round().to(torch.uint8)
    assert pixels[2, 0, 5, 7] == 201 and pixels[2, 1, 0, 31] == 202 and pixels[2, 2, 31, 0] == 203
    data = pickle.loads((cifar10_root / "cifar-10-batches-py" / "test_batch").read_bytes(), encoding="bytes")[b"data"]
    assert torch.equal(pixels, torch.from_numpy(data).view(4, 3, 32, 32))


def test_cifar100(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    dump(folder / "train", cifar_batch(7, b"fine_labels", 100, 1, b"training"))
    batch = cifar_batch(5, b"fine_labels", 100, 2, b"testing")
    batch[b"fine_labels"] = [0, 99, 50, 1, 98]
    dump(folder / "test", batch)
    train, info = build_dataset("cifar100", tmp_path, "train", augment=True)
    assert info == DatasetInfo("cifar100", 100, (3, 32, 32), train_size=7) and train.inputs.shape == (7, 3, 32, 32)
    assert isinstance(train.transform, RandomCropFlip)
    assert train.transform.fill == pytest.approx(normalized_zero(img.CIFAR100_MEAN, img.CIFAR100_STD))
    test, info = build_dataset("cifar100", folder, "test", augment=True)
    assert test.targets.tolist() == [0, 99, 50, 1, 98] and test.transform is None and info.test_size == 5


def test_cifar_missing_batch(cifar10_root: Path) -> None:
    (cifar10_root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3: file not found"):
        build_dataset("cifar10", cifar10_root, "train")
    with pytest.raises(DatasetError, match="cifar-100-python/train not found"):
        build_dataset("cifar100", cifar10_root, "train")


def python2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled the way the original files were (Python 2 cPickle, numpy 1.x): py2 ``str`` keys and array
    bytes (SHORT_BINSTRING / BINSTRING), ``numpy.core.multiarray._reconstruct`` spelled the numpy 1 way."""
    raw = data.tobytes()
    out = b"\x80\x02}(U\x04data"
    out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
    out += b"(K\x01M" + struct.pack("<H", data.shape[0]) + b"M\x00\x0c\x86"
    out += b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    out += b"\x89T" + struct.pack("<I", len(raw)) + raw + b"tb"
    out += b"U\x06labels](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return out + b"U\x0bbatch_labelU\x14testing batch 1 of 1u."


def test_cifar_python2_pickle(tmp_path: Path) -> None:
    data = (np.arange(3 * 3072) % 251).astype(np.uint8).reshape(3, 3072)
    dump_path = tmp_path / "cifar-10-batches-py" / "test_batch"
    dump_path.parent.mkdir()
    dump_path.write_bytes(python2_batch(data, [3, 7, 9]))
    ds, _ = build_dataset("cifar10", tmp_path, "test", normalize=False)
    assert ds.targets.tolist() == [3, 7, 9]
    assert torch.equal((ds.inputs * 255).round().to(torch.uint8), torch.from_numpy(data).view(3, 3, 32, 32))


def _bad_batches() -> dict[str, tuple[bytes, str]]:
    good = cifar_batch(3, b"labels", 10, 0, b"b")
    cases: dict[str, tuple[bytes, str]] = {
        "garbage": (b"\x00\x01not a pickle at all" * 10, "could not unpickle"),
        "truncated": (pickle.dumps(good, protocol=2)[:500], "could not unpickle"),
        "not_dict": (pickle.dumps([1, 2, 3], protocol=2), "expected a pickled dict, found list"),
        "no_data": (pickle.dumps({b"labels": [1]}, protocol=2), "expected key b'data'"),
        "str_keys": (pickle.dumps({"data": good[b"data"], "labels": good[b"labels"]}), "expected key b'data'"),
        "no_labels": (pickle.dumps({b"data": good[b"data"]}, protocol=2), "expected key b'labels'"),
        "width": (
            pickle.dumps({**good, b"data": np.zeros((3, 3071), np.uint8)}),
            r"uint8 array of shape \[N, 3072\], found uint8 array of shape \(3, 3071\)",
        ),
        "dtype": (pickle.dumps({**good, b"data": np.zeros((3, 3072), np.int64)}), "found int64 array"),
        "count": (pickle.dumps({**good, b"labels": [1, 2]}), r"one label per image \(3\), found 2"),
        "range": (pickle.dumps({**good, b"labels": [0, 10, 1]}), r"in 0..9, found values in 0..10"),
        "negative": (pickle.dumps({**good, b"labels": [0, -1, 1]}), r"in 0..9, found values in -1..1"),
        "float_labels": (pickle.dumps({**good, b"labels": [0.5, 1.0, 2.0]}), "list of integers"),
        # a pickle that would run os.system: refused before anything is imported or called
        "evil": (b"cos\nsystem\n(S'echo pwned'\ntR.", r"global os.system is not allowed"),
    }
    return cases


@pytest.mark.parametrize("case", list(_bad_batches()))
def test_cifar_bad_batch(tmp_path: Path, case: str) -> None:
    payload, pattern = _bad_batches()[case]
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(payload)
    with pytest.raises(DatasetError, match=pattern) as excinfo:
        build_dataset("cifar10", tmp_path, "test")
    assert str(folder / "test_batch") in _message(excinfo)


# ----------------------------------------------------------------------------------------------------- augmentation


def test_augment_reproducible_and_seed_dependent() -> None:
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    aug = RandomCropFlip(padding=4, fill=normalized_zero(img.CIFAR10_MEAN, img.CIFAR10_STD))
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x)  # 16 samples: some crop is off-centre or flipped
    mono = torch.randn(5, 1, 28, 28)
    assert RandomCropFlip(padding=2, flip=False)(mono, torch.Generator().manual_seed(0)).shape == mono.shape


def test_crop_is_a_shifted_window_and_flip_a_mirror() -> None:
    b, pad = 64, 3
    x = torch.arange(b * 2 * 6 * 5, dtype=torch.float32).view(b, 2, 6, 5) + 1
    out = random_crop_flip(x, torch.Generator().manual_seed(3), padding=pad, flip=True, fill=(0.0, -1.0))
    padded = torch.zeros(b, 2, 6 + 2 * pad, 5 + 2 * pad)
    padded[:, 1] = -1.0
    padded[:, :, pad:-pad, pad:-pad] = x
    flips = 0
    for i in range(b):
        windows = [padded[i, :, r : r + 6, c : c + 5] for r in range(2 * pad + 1) for c in range(2 * pad + 1)]
        plain = any(torch.equal(out[i], w) for w in windows)
        mirrored = any(torch.equal(out[i], w.flip(-1)) for w in windows)
        assert plain or mirrored
        flips += int(mirrored and not plain)
    assert 10 < flips < 54  # about half are mirrored
    identity = random_crop_flip(x, torch.Generator().manual_seed(0), padding=0, flip=False)
    assert torch.equal(identity, x)


def test_dataset_batch_uses_generator(cifar10_root: Path) -> None:
    ds, _ = build_dataset("cifar10", cifar10_root, "train", augment=True)
    idx = torch.arange(len(ds))
    x1, y1 = ds.batch(idx, torch.Generator().manual_seed(5))
    x2, y2 = ds.batch(idx, torch.Generator().manual_seed(5))
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (15, 3, 32, 32)
    single, label = ds[3]
    assert single.shape == (3, 32, 32) and label == int(ds.targets[3])
    pickle.loads(pickle.dumps(ds.transform))  # transforms travel to DataLoader workers


def test_normalize_checks_channels() -> None:
    with pytest.raises(ValueError, match="one mean and std per channel"):
        normalize_(torch.zeros(1, 3, 2, 2), (0.5,), (0.5,))
    with pytest.raises(ValueError, match="padding must be an integer"):
        RandomCropFlip(padding=-1)


# ----------------------------------------------------------------------------------------------------------- digits


def test_digits_split() -> None:
    train, info = build_dataset("digits", None, "train", normalize=False)
    test, test_info = build_dataset("digits", "/ignored", "test", normalize=False)
    assert info == test_info == DatasetInfo("digits", 10, (1, 8, 8), train_size=1438, test_size=359)
    assert len(train) + len(test) == 1797 and train.inputs.shape[1:] == (1, 8, 8)
    for ds in (train, test):
        assert torch.unique(ds.targets).tolist() == list(range(10))
        scaled = ds.inputs * 16
        assert torch.equal(scaled, scaled.round()) and ds.inputs.min() >= 0 and ds.inputs.max() <= 1
    assert train.inputs.max() == 1.0
    # together the two splits are exactly the packaged data: a partition
    pixels, labels = img._load_digits()
    full = np.concatenate([pixels.reshape(-1, 64), labels[:, None]], axis=1)
    both = torch.cat([torch.cat([d.inputs.flatten(1) * 16, d.targets[:, None].float()], 1) for d in (train, test)])
    assert sorted(map(tuple, both.round().long().tolist())) == sorted(map(tuple, full.tolist()))
    # stratified: each class contributes round(20%) to test
    counts = np.bincount(labels)
    assert torch.bincount(test.targets).tolist() == [int(np.floor(c * 0.2 + 0.5)) for c in counts]


def test_digits_split_deterministic_and_seeded() -> None:
    _, labels = img._load_digits()
    m1 = img._stratified_test_mask(labels, 0.2, 0)
    m2 = img._stratified_test_mask(labels, 0.2, 0)
    m3 = img._stratified_test_mask(labels, 0.2, 1)
    assert np.array_equal(m1, m2) and not np.array_equal(m1, m3) and m1.sum() == m3.sum() == 359
    a, _ = build_dataset("digits", None, "test")
    b, _ = build_dataset("digits", None, "test")
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    normed, _ = build_dataset("digits", None, "train")
    assert abs(normed.inputs.mean().item()) < 0.05 and abs(normed.inputs.std().item() - 1) < 0.05
    small, info = build_dataset("digits", None, "test", test_fraction=0.5, split_seed=3)
    assert info.test_size == len(small) and 880 < len(small) < 920


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "0.2", True])
def test_digits_rejects_bad_fraction(bad: object) -> None:
    with pytest.raises(ConfigError, match="test_fraction"):
        build_dataset("digits", None, "train", test_fraction=bad)


def test_registry_and_split_check() -> None:
    assert {"mnist", "fashion_mnist", "cifar10", "cifar100", "digits"} <= set(DATASETS.names())
    with pytest.raises(ValueError, match="split must be"):
        build_dataset("digits", None, "val")
    with pytest.raises(ValueError, match="split must be"):
        img.digits(None, "val")
