"""Static image datasets: MNIST and Fashion-MNIST (IDX files), CIFAR-10/100 (python pickles) and the embedded digits.

Every loader reads the original files as distributed, validates them, and keeps the result in memory as an
:class:`~sparsesnn.data.base.ArrayDataset` of float32 ``[N, C, H, W]`` inputs; nothing is downloaded and nothing is
cached on disk. Any problem with a file (missing, truncated, corrupt, the wrong kind) raises
:class:`~sparsesnn.core.errors.DatasetError` whose message names the file and what was expected against what was found.

Formats
-------
IDX (Y. LeCun, C. Cortes, C. J. C. Burges, "The MNIST database of handwritten digits",
http://yann.lecun.com/exdb/mnist/, section "FILE FORMATS FOR THE MNIST DATABASE"): all integers big-endian. A 4-byte
magic number ``00 00 TT NN`` where ``TT`` is the element type (0x08 unsigned byte, 0x09 signed byte, 0x0B 2-byte
short, 0x0C 4-byte int, 0x0D 4-byte float, 0x0E 8-byte double) and ``NN`` the number of dimensions; then ``NN``
4-byte unsigned dimension sizes; then the elements in C (row-major) order. MNIST labels are ``0x00000801``
(uint8 ``[N]``), images ``0x00000803`` (uint8 ``[N, 28, 28]``, 0 = background, 255 = ink). Fashion-MNIST
(Xiao, Rasul & Vollgraf 2017, https://github.com/zalandoresearch/fashion-mnist) uses the same files and names.
Files may be gzip-compressed (detected by the gzip magic ``1f 8b``, whatever the file name) or raw.

CIFAR (A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009;
https://www.cs.toronto.edu/~kriz/cifar.html, "Dataset layout", python version): each batch file is a pickled dict.
``b"data"`` is a uint8 array ``[N, 3072]``; each row is one 32x32 image stored channel-major: the first 1024 bytes
are the red plane, then green, then blue, each plane row-major, so ``data.reshape(N, 3, 32, 32)`` is ``[N, C, H, W]``.
CIFAR-10 (``cifar-10-batches-py/``): ``data_batch_1`` .. ``data_batch_5`` (train, 10000 each) and ``test_batch``,
labels in ``b"labels"`` (0..9). CIFAR-100 (``cifar-100-python/``): ``train`` (50000) and ``test`` (10000), labels in
``b"fine_labels"`` (0..99; ``b"coarse_labels"`` holds the 20 superclasses and is not used).

Digits: the 1797 8x8 images of the UCI "Optical Recognition of Handwritten Digits" test set as bundled with
scikit-learn (``sklearn/datasets/data/digits.csv.gz``), copied into this package (see ``embedded/PROVENANCE.md``):
one sample per line, 64 pixel counts in 0..16 (row-major) followed by the label.

Normalisation statistics are those of each training set: MNIST 0.1307/0.3081, Fashion-MNIST 0.2860/0.3530,
CIFAR-10 mean (0.4914, 0.4822, 0.4465) / std (0.2470, 0.2435, 0.2616), CIFAR-100 mean (0.5071, 0.4865, 0.4409) /
std (0.2673, 0.2564, 0.2762) (per-channel std over all training pixels, not the mean per-image std 0.2023/0.1994/
0.2010 that some code bases copy), digits 0.3053/0.3760 (all 1797 samples, after scaling by 1/16).
"""

from __future__ import annotations

import gzip
import importlib
import io
import math
import pickle
import struct
import zlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from sparsesnn.core.errors import DatasetError
from sparsesnn.data.base import ArrayDataset, DatasetInfo, DatasetSettings, register_dataset, root_dir
from sparsesnn.data.transforms import RandomCropFlip, normalize_, normalized_zero

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "cifar10",
    "cifar100",
    "digits",
    "fashion_mnist",
    "load_cifar_batch",
    "mnist",
    "read_idx",
    "write_cifar10",
    "write_cifar_batch",
]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
DIGITS_MEAN, DIGITS_STD = 0.3053, 0.3760

# ---------------------------------------------------------------------------------------------------------------- IDX

_GZIP_MAGIC = b"\x1f\x8b"
# type byte -> (readable name, big-endian numpy dtype)
_IDX_TYPES: dict[int, tuple[str, str]] = {
    0x08: ("uint8", ">u1"),
    0x09: ("int8", ">i1"),
    0x0B: ("int16", ">i2"),
    0x0C: ("int32", ">i4"),
    0x0D: ("float32", ">f4"),
    0x0E: ("float64", ">f8"),
}
IDX_LABELS_MAGIC = 0x00000801  # uint8, 1 dimension
IDX_IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions


def _describe_magic(magic: int) -> str:
    type_byte, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    name = _IDX_TYPES.get(type_byte, (f"unknown type 0x{type_byte:02X}", ""))[0]
    return f"0x{magic:08X} ({name}, {ndim} dimension{'s' if ndim != 1 else ''})"


def _read_file(path: Path) -> bytes:
    """All bytes of ``path``, gunzipped when they start with the gzip magic; every failure as a DatasetError."""
    if not path.exists():
        raise DatasetError(f"{path}: file not found")
    if not path.is_file():
        raise DatasetError(f"{path}: expected a file, found a directory or special file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read the file ({err})") from err
    if data[:2] != _GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except EOFError as err:
        raise DatasetError(
            f"{path}: truncated gzip stream (expected an end-of-stream marker, found end of file)"
        ) from err
    except (OSError, zlib.error, ValueError) as err:  # gzip.BadGzipFile is an OSError
        raise DatasetError(f"{path}: corrupt gzip data ({err})") from err


def read_idx(path: str | Path, *, expect_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-byte-order numpy array.

    The element type and the number of dimensions come from the magic number, the shape from the header; the payload
    must hold exactly ``prod(shape)`` elements. ``expect_magic`` (e.g. ``0x00000803`` for MNIST images) rejects files of
    another kind. Every problem raises :class:`DatasetError` naming ``path``; numpy, gzip and OS errors never leak.
    The returned array owns its (writable) memory.
    """
    path = Path(path)
    data = _read_file(path)
    if len(data) < 4:
        raise DatasetError(f"{path}: expected a 4-byte IDX magic number, found a {len(data)}-byte file")
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        raise DatasetError(
            f"{path}: not an IDX file: expected a magic number 0x0000TTNN (two zero bytes, type, dimensions), "
            f"found 0x{magic:08X}"
        )
    type_byte, ndim = data[2], data[3]
    if type_byte not in _IDX_TYPES:
        known = ", ".join(f"0x{t:02X} ({name})" for t, (name, _) in _IDX_TYPES.items())
        raise DatasetError(
            f"{path}: unknown IDX element type 0x{type_byte:02X} in magic 0x{magic:08X}; expected one of {known}"
        )
    if ndim == 0:
        raise DatasetError(f"{path}: IDX magic 0x{magic:08X} declares 0 dimensions; expected at least 1")
    if expect_magic is not None and magic != expect_magic:
        raise DatasetError(
            f"{path}: expected IDX magic {_describe_magic(expect_magic)}, found {_describe_magic(magic)}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(
            f"{path}: expected a {header}-byte IDX header for {ndim} dimensions, found only {len(data)} bytes"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    name, dtype_str = _IDX_TYPES[type_byte]
    dtype = np.dtype(dtype_str)
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        shape = "x".join(str(d) for d in dims)
        what = "truncated" if found < expected else f"{found - expected} extra bytes at the end"
        raise DatasetError(f"{path}: expected {expected} payload bytes for {shape} {name}, found {found} ({what})")
    array = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # copies: writable, native byte order


# -------------------------------------------------------------------------------------------- MNIST / Fashion-MNIST

_IDX_PREFIX = {"train": "train", "test": "t10k"}


def _check_split(dataset: str, split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"{dataset}: split must be 'train' or 'test', got {split!r}")


def _find_idx(dataset: str, root: Path, subdirs: Sequence[str], stem: str) -> Path:
    """``stem`` (e.g. ``train-images-idx3-ubyte``) in ``root`` or a torchvision-style subfolder, .gz first."""
    dotted = stem.replace("-idx", ".idx")  # some copies are named train-images.idx3-ubyte
    names = (f"{stem}.gz", stem, f"{dotted}.gz", dotted)
    folders = [root, *(root / sub for sub in subdirs)]
    for folder in folders:
        for name in names:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    raise DatasetError(
        f"{dataset}: {root / names[0]} not found (also looked for {', '.join(names[1:])} in {root}"
        + "".join(f" and {root / sub}" for sub in subdirs)
        + ")"
    )


def _load_idx_split(
    dataset: str, root: str | Path | None, split: str, subdirs: Sequence[str], num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 28, 28]`` uint8 and labels ``[N]`` uint8 of one MNIST-layout split, validated."""
    base = root_dir(dataset, root)
    prefix = _IDX_PREFIX[split]
    images_path = _find_idx(dataset, base, subdirs, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_idx(dataset, base, subdirs, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path, expect_magic=IDX_IMAGES_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DatasetError(
            f"{images_path}: expected {dataset} images of 28x28 pixels, found {images.shape[1]}x{images.shape[2]}"
        )
    labels = read_idx(labels_path, expect_magic=IDX_LABELS_MAGIC)
    if labels.shape[0] != images.shape[0]:
        raise DatasetError(
            f"{dataset} {split}: {images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels; expected the same count"
        )
    if labels.size and int(labels.max()) >= num_classes:
        raise DatasetError(f"{labels_path}: expected labels in 0..{num_classes - 1}, found {int(labels.max())}")
    return images, labels


def _to_float(images: np.ndarray, scale: float) -> torch.Tensor:
    """uint8/int array -> float32 tensor multiplied by ``scale`` (in place, one copy)."""
    return torch.from_numpy(images).to(torch.float32).mul_(scale)


def _idx_dataset(
    dataset: str,
    root: str | Path | None,
    split: str,
    normalize: bool,
    augment: bool,
    mean: float,
    std: float,
    subdirs: Sequence[str],
    flip: bool,
) -> tuple[ArrayDataset, DatasetInfo]:
    _check_split(dataset, split)
    images, labels = _load_idx_split(dataset, root, split, subdirs)
    x = _to_float(images, 1.0 / 255.0).unsqueeze(1)  # [N, 1, 28, 28] in [0, 1]
    fill: float = 0.0
    if normalize:
        normalize_(x, (mean,), (std,))
        fill = normalized_zero((mean,), (std,))[0]
    transform = RandomCropFlip(padding=2, flip=flip, fill=fill) if augment and split == "train" else None
    info = DatasetInfo(
        name=dataset,
        num_classes=10,
        sample_shape=(1, 28, 28),
        train_size=len(labels) if split == "train" else None,
        test_size=len(labels) if split == "test" else None,
    )
    return ArrayDataset(x, torch.from_numpy(labels.astype(np.int64)), transform), info


class ImageSettings(DatasetSettings):
    """A static-image dataset (the engine encodes the image over T steps)."""

    normalize: bool = Field(True, description="subtract the dataset's mean and divide by its std (per channel)")
    augment: bool = Field(False, description="random crop (and flip where it keeps the class), train split only")


class DigitsSettings(DatasetSettings):
    """The packaged 8x8 digits and their deterministic stratified split."""

    normalize: bool = Field(True, description="subtract the mean and divide by the std")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="fraction of each class in the test split")
    split_seed: int = Field(0, description="seeds the per-class permutation of the split")


@register_dataset("mnist", ImageSettings)
def mnist(root: str | Path | None, split: str, s: ImageSettings) -> tuple[ArrayDataset, DatasetInfo]:
    """MNIST from the four IDX files in ``root`` (``train-images-idx3-ubyte[.gz]`` ... ``t10k-labels-idx1-ubyte[.gz]``;
    a torchvision ``MNIST/raw`` subfolder is looked in too).

    Inputs ``[N, 1, 28, 28]`` float32 in [0, 1], then ``(x - 0.1307) / 0.3081`` when ``normalize``. ``augment``
    (train split only; ignored for test) pads 2 pixels with background and crops 28x28 at a random offset; no flip,
    since a mirrored digit is not the same digit. ``DatasetInfo`` gives the size of the loaded split, None for the
    other.
    """
    return _idx_dataset("mnist", root, split, s.normalize, s.augment, MNIST_MEAN, MNIST_STD, ("MNIST/raw",), flip=False)


@register_dataset("fashion_mnist", ImageSettings)
def fashion_mnist(root: str | Path | None, split: str, s: ImageSettings) -> tuple[ArrayDataset, DatasetInfo]:
    """Fashion-MNIST from its IDX files in ``root`` (same names as MNIST; ``FashionMNIST/raw`` is looked in too).

    Inputs ``[N, 1, 28, 28]`` float32 in [0, 1], then ``(x - 0.2860) / 0.3530`` when ``normalize``. ``augment``
    (train split only) pads 2 pixels, crops 28x28 at a random offset and mirrors left-right with probability 1/2.
    """
    return _idx_dataset(
        "fashion_mnist",
        root,
        split,
        s.normalize,
        s.augment,
        FASHION_MNIST_MEAN,
        FASHION_MNIST_STD,
        ("FashionMNIST/raw",),
        flip=True,
    )


# ------------------------------------------------------------------------------------------------------------ CIFAR

# The only globals a CIFAR batch pickle refers to: numpy's array reconstructors and dtype, and (for pickles written
# by Python 3 at protocol < 3) ``_codecs.encode`` for bytes objects. Anything else is refused before it is imported.
_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }
)


class _BatchUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the globals in ``_PICKLE_GLOBALS`` (numpy 1 and 2 spellings)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        # numpy 2 renamed numpy.core to numpy._core (the old name warns); try the installed spelling first.
        spellings = [module]
        if module.startswith("numpy.core."):
            spellings.insert(0, "numpy._core." + module.removeprefix("numpy.core."))
        elif module.startswith("numpy._core."):
            spellings.append("numpy.core." + module.removeprefix("numpy._core."))
        for spelling in spellings:
            try:
                return getattr(importlib.import_module(spelling), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"cannot resolve {module}.{name}")


def load_cifar_batch(path: str | Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python batch: ``(data uint8 [N, 3072], labels int64 [N])``, validated.

    The batch is unpickled with ``encoding="bytes"`` (the files were written by Python 2, so their keys come back
    as bytes). Pickle can run arbitrary code: use this only on files from a trusted source (the original archives
    from Krizhevsky's page). As a second line of defence the unpickler refuses every global except numpy's array
    reconstructors and dtype. Anything unexpected (not a pickle, truncated, missing keys, wrong shapes or dtype,
    labels out of range) raises :class:`DatasetError` naming ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found" if not path.exists() else f"{path}: expected a file")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read the file ({err})") from err
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # a malformed pickle can raise almost anything; none of it may leak
        raise DatasetError(
            f"{path}: expected a pickled CIFAR batch (python version), could not unpickle it: "
            f"{type(err).__name__}: {err}"
        ) from err
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: expected a pickled dict, found {type(batch).__name__}")
    for key in (b"data", label_key):
        if key not in batch:
            found = ", ".join(repr(k) for k in list(batch)[:10])
            raise DatasetError(f"{path}: expected key {key!r} in the batch dict, found keys {found or 'none'}")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{path}: expected b'data' to be a uint8 array of shape [N, 3072], found {found}")
    try:
        labels = np.asarray(batch[label_key])
    except Exception as err:
        raise DatasetError(f"{path}: expected {label_key!r} to be a list of integers ({err})") from err
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DatasetError(
            f"{path}: expected {label_key!r} to be a list of integers, found {labels.dtype} with shape {labels.shape}"
        )
    if labels.shape[0] != data.shape[0]:
        raise DatasetError(
            f"{path}: expected one label per image ({data.shape[0]}), found {labels.shape[0]} in {label_key!r}"
        )
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DatasetError(
            f"{path}: expected {label_key!r} in 0..{num_classes - 1}, found values in "
            f"{int(labels.min())}..{int(labels.max())}"
        )
    return np.ascontiguousarray(data), labels.astype(np.int64)


def write_cifar_batch(
    path: str | Path, data: np.ndarray, labels: Sequence[int], label_key: bytes = b"labels", name: bytes = b""
) -> Path:
    """Write a CIFAR python batch: the pickled dict (protocol 2, bytes keys) that :func:`load_cifar_batch` reads,
    with ``data`` uint8 ``[N, 3072]`` (R, G, B planes of 32x32 per row); for tests and benchmarks without the
    original archive. Returns ``path``."""
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"data must be a uint8 array [N, 3072], got {data.dtype} {data.shape}")
    if len(labels) != data.shape[0]:
        raise ValueError(f"{data.shape[0]} images but {len(labels)} labels")
    batch = {
        b"batch_label": name,
        label_key: [int(v) for v in labels],
        b"data": np.ascontiguousarray(data),
        b"filenames": [f"image_{i}.png".encode() for i in range(data.shape[0])],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return path


def write_cifar10(root: str | Path, train: int, test: int, seed: int = 0) -> Path:
    """A CIFAR-10-shaped folder ``root/cifar-10-batches-py`` of random images and labels: ``train`` images split
    over ``data_batch_1`` .. ``data_batch_5`` (as evenly as possible) and ``test`` in ``test_batch``, readable by
    :func:`cifar10`. Returns ``root``."""
    if train < 5 or test < 1:
        raise ValueError(f"need at least 5 training images (one per batch file) and 1 test image, got {train}, {test}")
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    sizes = [train // 5 + (1 if i < train % 5 else 0) for i in range(5)]
    for i, n in enumerate(sizes, 1):
        images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        write_cifar_batch(folder / f"data_batch_{i}", images, rng.integers(0, 10, n).tolist(), name=b"training")
    images = rng.integers(0, 256, (test, 3072), dtype=np.uint8)
    write_cifar_batch(folder / "test_batch", images, rng.integers(0, 10, test).tolist(), name=b"testing")
    return Path(root)


def _cifar_dir(dataset: str, root: str | Path | None, folder: str, probe: str) -> Path:
    """The extracted folder: ``root`` itself when it holds ``probe``, else ``root/folder``."""
    base = root_dir(dataset, root)
    if (base / probe).exists():
        return base
    if (base / folder / probe).exists():
        return base / folder
    raise DatasetError(
        f"{dataset}: {base / folder / probe} not found (nor {base / probe}); expected the extracted "
        f"python version of the archive from https://www.cs.toronto.edu/~kriz/cifar.html"
    )


def _cifar_dataset(
    dataset: str,
    files: Sequence[Path],
    label_key: bytes,
    num_classes: int,
    split: str,
    normalize: bool,
    augment: bool,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> tuple[ArrayDataset, DatasetInfo]:
    parts = [load_cifar_batch(f, label_key, num_classes) for f in files]
    data = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    x = _to_float(data.reshape(-1, 3, 32, 32), 1.0 / 255.0)  # rows are R, G, B planes of 32x32, row-major
    fill: float | tuple[float, ...] = 0.0
    if normalize:
        normalize_(x, mean, std)
        fill = normalized_zero(mean, std)
    transform = RandomCropFlip(padding=4, flip=True, fill=fill) if augment and split == "train" else None
    info = DatasetInfo(
        name=dataset,
        num_classes=num_classes,
        sample_shape=(3, 32, 32),
        train_size=len(labels) if split == "train" else None,
        test_size=len(labels) if split == "test" else None,
    )
    return ArrayDataset(x, torch.from_numpy(labels), transform), info


@register_dataset("cifar10", ImageSettings)
def cifar10(root: str | Path | None, split: str, s: ImageSettings) -> tuple[ArrayDataset, DatasetInfo]:
    """CIFAR-10 from ``cifar-10-batches-py`` (``root`` is that folder or its parent).

    Train = ``data_batch_1`` .. ``data_batch_5``, test = ``test_batch``. Inputs ``[N, 3, 32, 32]`` float32 in
    [0, 1], normalised per channel when ``normalize``. ``augment`` (train split only) is the standard random crop 32
    from the image zero-padded by 4 pixels plus a horizontal flip with probability 1/2, applied per batch. Pickle is
    used to read the batches: only point ``root`` at trusted files.
    """
    _check_split("cifar10", split)
    probe = "data_batch_1" if split == "train" else "test_batch"
    folder = _cifar_dir("cifar10", root, "cifar-10-batches-py", probe)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    files = [folder / n for n in names]
    return _cifar_dataset("cifar10", files, b"labels", 10, split, s.normalize, s.augment, CIFAR10_MEAN, CIFAR10_STD)


@register_dataset("cifar100", ImageSettings)
def cifar100(root: str | Path | None, split: str, s: ImageSettings) -> tuple[ArrayDataset, DatasetInfo]:
    """CIFAR-100 (100 fine classes) from ``cifar-100-python/train`` or ``test`` (``root``: that folder or its parent).

    Same inputs, normalisation and augmentation as :func:`cifar10`. Pickle is used to read the files: only point
    ``root`` at trusted files.
    """
    _check_split("cifar100", split)
    folder = _cifar_dir("cifar100", root, "cifar-100-python", split)
    return _cifar_dataset(
        "cifar100", [folder / split], b"fine_labels", 100, split, s.normalize, s.augment, CIFAR100_MEAN, CIFAR100_STD
    )


# ----------------------------------------------------------------------------------------------------------- digits

_DIGITS_RESOURCE = "embedded/digits.csv.gz"
DIGITS_SIZE = 1797


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The packaged digits: pixels ``[1797, 8, 8]`` int64 in 0..16 and labels ``[1797]`` int64 in 0..9."""
    where = f"sparsesnn.data/{_DIGITS_RESOURCE}"
    try:
        raw = resources.files("sparsesnn.data").joinpath(_DIGITS_RESOURCE).read_bytes()
        table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as err:
        raise DatasetError(f"{where}: cannot read the packaged digits ({type(err).__name__}: {err})") from err
    if table.shape != (DIGITS_SIZE, 65):
        raise DatasetError(f"{where}: expected {DIGITS_SIZE} rows of 64 pixels + label, found shape {table.shape}")
    pixels, labels = table[:, :64], table[:, 64]
    if pixels.min() < 0 or pixels.max() > 16 or labels.min() < 0 or labels.max() > 9:
        raise DatasetError(f"{where}: expected pixels in 0..16 and labels in 0..9")
    return pixels.reshape(-1, 8, 8), labels


def _stratified_test_mask(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of test samples: per class (in class order) a seeded permutation, its first
    ``round(count * test_fraction)`` members (at least 1, at most count - 1) go to test."""
    generator = torch.Generator().manual_seed(seed)
    mask = np.zeros(labels.shape[0], dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_test = min(max(math.floor(members.size * test_fraction + 0.5), 1), members.size - 1)
        order = torch.randperm(members.size, generator=generator).numpy()
        mask[members[order[:n_test]]] = True
    return mask


@register_dataset("digits", DigitsSettings)
def digits(root: str | Path | None, split: str, s: DigitsSettings) -> tuple[ArrayDataset, DatasetInfo]:
    """The 1797 8x8 digits shipped with the package (no files needed; ``root`` is ignored).

    A deterministic stratified split: per class a permutation seeded by ``split_seed`` puts
    ``round(count * test_fraction)`` samples in test, the rest in train, in their original order; the same arguments
    always give the same split, and train and test are disjoint. Inputs ``[N, 1, 8, 8]`` float32 scaled by 1/16 to
    [0, 1], then ``(x - 0.3053) / 0.3760`` when ``normalize``.
    """
    _check_split("digits", split)
    pixels, labels = _load_digits()
    test = _stratified_test_mask(labels, s.test_fraction, s.split_seed)
    chosen = test if split == "test" else ~test
    x = _to_float(np.ascontiguousarray(pixels[chosen]), 1.0 / 16.0).unsqueeze(1)
    if s.normalize:
        normalize_(x, (DIGITS_MEAN,), (DIGITS_STD,))
    info = DatasetInfo(
        name="digits",
        num_classes=10,
        sample_shape=(1, 8, 8),
        train_size=int((~test).sum()),
        test_size=int(test.sum()),
    )
    return ArrayDataset(x, torch.from_numpy(labels[chosen]), None), info
