"""Event-camera data: decoders against Tonic on the real N-MNIST / DVS Gesture files, AEDAT 3.1 / 2.0 round trips
through our writers (cross-checked with Tonic's readers), frames, cache, augmentation, the three datasets, and
fuzzing: malformed files only ever raise DatasetError naming the file and the byte offset."""

from __future__ import annotations

import csv
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsesnn.core.errors import ConfigError, DatasetError
from sparsesnn.data import DATASETS, build_dataset
from sparsesnn.data.cache import FrameCache, cache_key
from sparsesnn.data.event_transforms import (
    Compose,
    EventDrop,
    RandomHorizontalFlip,
    RandomTranslate,
    TimeJitter,
    drop_events,
    jitter_times,
)
from sparsesnn.data.events import (
    EVENT_DTYPE,
    make_events,
    read_aedat2,
    read_aedat4,
    read_aedat31,
    read_atis_bin,
    read_bs2,
    read_nmnist,
)
from sparsesnn.data.frames import ToFrames, area_matrix, frame_index
from sparsesnn.data.images import read_idx
from sparsesnn.data.neuromorphic import CIFAR10_DVS_CLASSES, natural_key
from tests.conftest import DATA as SHARED_DATA
from tests.event_writers import write_aedat2, write_aedat31, write_atis_bin

DATA = SHARED_DATA
NMNIST = DATA / "nmnist"
BS2 = DATA / "dvs_gesture" / "slayer_bs2_1450ms"
AEDAT4_SAMPLE = DATA / "aedat4_sample" / "tonic_sample.aedat4"
needs_nmnist = pytest.mark.skipif(
    not (NMNIST / "MANIFEST.csv").is_file(), reason=f"N-MNIST subset not found at {NMNIST} (../shared/data)"
)
needs_aedat = pytest.mark.skipif(importlib.util.find_spec("aedat") is None, reason="optional extra aedat4 absent")


def tonic_io():
    return pytest.importorskip("tonic.io", reason="tonic (dev extra) is needed for the cross-checks")


def random_events(n: int, width: int = 128, height: int = 128, t_max: int = 2_000_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return make_events(
        rng.integers(0, width, n),
        rng.integers(0, height, n),
        np.sort(rng.integers(0, t_max, n)),
        rng.integers(0, 2, n).astype(bool),
    )


def same_events(a: np.ndarray, b: np.ndarray) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(np.asarray(a[k]).astype(np.int64), np.asarray(b[k]).astype(np.int64)) for k in "xytp"
    )


def manifest() -> list[dict[str, str]]:
    with open(NMNIST / "MANIFEST.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------------------------------- real files


@needs_nmnist
def test_every_nmnist_file_decodes_and_equals_tonic() -> None:
    tio = tonic_io()
    rows = manifest()
    assert len(rows) == 1101  # 1,000 train + 100 test + Tonic's own sample
    dtype = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
    total = 0
    for row in rows:
        path = NMNIST / row["staged_path"]
        ours = read_nmnist(path)
        assert ours.dtype == EVENT_DTYPE
        assert len(ours) == int(row["n_events"]) and int(ours["t"].max()) == int(row["t_max_us"]), path
        assert same_events(ours, tio.read_mnist_file(str(path), dtype=dtype)), path
        total += len(ours)
    assert total > 4_000_000


@pytest.mark.skipif(not BS2.is_dir(), reason=f"SLAYER .bs2 clips not found at {BS2}")
def test_dvs_gesture_bs2_clips_decode_and_equal_tonic() -> None:
    tio = tonic_io()
    dtype = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
    clips = sorted(BS2.glob("*.bs2"), key=lambda f: natural_key(f.name))
    assert len(clips) == 10
    for clip in clips:
        ours = read_bs2(clip)
        assert len(ours) > 10_000 and int(ours["x"].max()) < 128 and int(ours["y"].max()) < 128
        assert int(ours["t"].max()) < 1_450_000
        assert same_events(ours, tio.read_mnist_file(str(clip), dtype=dtype)), clip
        with pytest.raises(DatasetError, match=r"outside the 34x34 sensor"):
            read_atis_bin(clip)  # a 128x128 clip is not an N-MNIST sample


def _event_images(paths: list[Path]) -> np.ndarray:
    images = np.zeros((len(paths), 34 * 34), dtype=np.float64)
    for i, path in enumerate(paths):
        ev = read_nmnist(path)
        images[i] = np.bincount(ev["y"].astype(np.int64) * 34 + ev["x"], minlength=34 * 34)
    return images


def _zscore_rows(a: np.ndarray) -> np.ndarray:
    a = a - a.mean(1, keepdims=True)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@needs_nmnist
@pytest.mark.skipif(not (DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(), reason="MNIST IDX files absent")
@pytest.mark.parametrize("split", ["train", "test"])
def test_accumulated_nmnist_frames_correlate_with_their_mnist_digit(split: str) -> None:
    """PROVENANCE.md: Train/Test file k (1-based) is MNIST train/test image k. Accumulate every event of a sample into
    one 34x34 image and correlate it with the MNIST candidates (28x28 centred in 34x34): the true image ranks near
    the top among the 1,000 (100) candidates, and correlates far better than the other images of the same digit."""
    ds, _ = build_dataset("nmnist", NMNIST, split)
    paths = [s.path for s in ds.samples]
    index = np.array([int(p.stem) - 1 for p in paths])
    prefix = "train" if split == "train" else "t10k"
    mnist = read_idx(DATA / "mnist" / f"{prefix}-images-idx3-ubyte.gz")[: len(paths)]
    labels = read_idx(DATA / "mnist" / f"{prefix}-labels-idx1-ubyte.gz")[: len(paths)]
    assert [int(labels[i]) for i in index] == [s.label for s in ds.samples]
    padded = np.zeros((len(paths), 34, 34))
    padded[:, 3:31, 3:31] = mnist
    corr = _zscore_rows(_event_images(paths)) @ _zscore_rows(padded.reshape(len(paths), -1)).T
    true = corr[np.arange(len(paths)), index]
    rank = (corr > true[:, None]).sum(1)
    assert np.median(rank) <= len(paths) * 0.02  # measured: 6.5 of 1,000 (train)
    same_digit = labels[None, :] == labels[index][:, None]
    same_digit[np.arange(len(paths)), index] = False
    assert true.mean() > corr[same_digit].mean() + 0.1
    assert true.mean() > corr[~same_digit].mean() + 0.2


@needs_nmnist
def test_nmnist_dataset_from_the_registry() -> None:
    train, info = build_dataset("nmnist", NMNIST, "train")
    test, test_info = build_dataset("nmnist", NMNIST, "test", n_frames=4, size=17)
    assert "nmnist" in DATASETS
    assert len(train) == 1000 and len(test) == 100
    assert info.time_major and info.sample_shape == (8, 2, 34, 34) and info.default_time_steps == 8
    assert info.in_channels == 2 and info.input_size == 34 and info.num_classes == 10
    assert test_info.sample_shape == (4, 2, 17, 17)
    counts = {row["staged_path"]: int(row["n_events"]) for row in manifest()}
    for ds in (train, test):
        for i in (0, len(ds) // 2, len(ds) - 1):
            x, y = ds[i]
            path = ds.samples[i].path
            assert x.dtype == torch.float32 and tuple(x.shape) == (ds.to_frames.time_steps, 2, *ds.to_frames.output_hw)
            assert y == int(path.parent.name)
            assert float(x.sum()) == counts[path.relative_to(NMNIST).as_posix()]  # the last event is counted
    assert [int(s.path.stem) for s in train.samples] == list(range(1, 1001))


# ----------------------------------------------------------------------------------------------- ATIS (N-MNIST)


def test_atis_round_trip_overflow_markers_and_tonic(tmp_path: Path) -> None:
    ev = random_events(3000, 34, 34, t_max=300_000)
    path = tmp_path / "sample.bin"
    write_atis_bin(path, ev)
    assert same_events(read_nmnist(path), ev)
    # Insert two overflow markers (y = 240): every later timestamp gains 2**13 us per marker, as in Tonic.
    raw = bytearray(path.read_bytes())
    marker = bytes([0, 240, 0, 0, 0])
    with_markers = raw[: 5 * 1000] + marker + raw[5 * 1000 : 5 * 2000] + marker + raw[5 * 2000 :]
    path.write_bytes(bytes(with_markers))
    got = read_nmnist(path)
    want_t = ev["t"].copy()
    want_t[1000:] += 8192
    want_t[2000:] += 8192
    assert np.array_equal(got["t"], want_t) and np.array_equal(got["x"], ev["x"])
    tio = tonic_io()
    dtype = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
    assert same_events(got, tio.read_mnist_file(str(path), dtype=dtype))


def test_atis_backward_timestamps_error_and_repairs(tmp_path: Path) -> None:
    ev = make_events([1, 2, 3, 4, 5], [1, 1, 1, 1, 1], [10, 20, 15, 30, 25], [1, 0, 1, 0, 1])
    path = tmp_path / "back.bin"
    write_atis_bin(path, ev)
    with pytest.raises(DatasetError, match=r"back\.bin: byte offset 10: .*record 2: timestamp 15 us is earlier"):
        read_nmnist(path)
    assert read_nmnist(path, on_backwards="sort")["t"].tolist() == [10, 15, 20, 25, 30]
    assert read_nmnist(path, on_backwards="sort")["x"].tolist() == [1, 3, 2, 5, 4]  # stable
    dropped = read_nmnist(path, on_backwards="drop")
    assert dropped["t"].tolist() == [10, 20, 30] and dropped["x"].tolist() == [1, 2, 4]
    with pytest.raises(ValueError, match="on_backwards"):
        read_nmnist(path, on_backwards="ignore")  # type: ignore[arg-type]


def test_atis_truncated_and_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "cut.bin"
    write_atis_bin(path, random_events(10, 34, 34, 1000))
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(DatasetError, match=r"cut\.bin: byte offset 45: truncated .*3 trailing bytes"):
        read_nmnist(path)
    wide = tmp_path / "wide.bin"
    write_atis_bin(wide, make_events([1, 40, 2, 50], [1, 1, 35, 1], [1, 2, 3, 4], [0, 1, 0, 1]))
    with pytest.raises(DatasetError, match=r"wide\.bin: byte offset 5: .*record 1: coordinate \(x=40, y=1\) outside"):
        read_nmnist(wide)
    assert read_nmnist(wide, on_invalid="drop")["t"].tolist() == [1]
    assert len(read_atis_bin(wide, sensor_size=None)) == 4
    with pytest.raises(DatasetError, match="file not found"):
        read_nmnist(tmp_path / "missing.bin")
    with pytest.raises(DatasetError, match="directory"):
        read_nmnist(tmp_path)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")  # an interrupted copy: not a blank sample
    for reader in (read_nmnist, read_aedat2, read_aedat31, read_aedat4):
        with pytest.raises(DatasetError, match=r"empty\.bin: byte offset 0: empty file \(0 bytes"):
            reader(empty)


# ----------------------------------------------------------------------------------------------------- AEDAT 3.1


def test_aedat31_round_trip_packets_overflow_invalid_and_other_types(tmp_path: Path) -> None:
    ev = random_events(5000, t_max=3_000_000)
    ev["t"][3000:] += (1 << 31) + 5  # crosses the 31-bit timestamp: eventTSOverflow becomes 1
    invalid = np.zeros(len(ev), dtype=bool)
    invalid[::7] = True
    path = tmp_path / "user01_lab.aedat"
    write_aedat31(path, ev, packet_size=700, invalid=invalid, extra_packets=True)
    got = read_aedat31(path)
    assert same_events(got, ev[~invalid])
    assert int(got["t"].max()) > 1 << 31


def test_aedat31_agrees_with_tonic_reader(tmp_path: Path) -> None:
    """Tonic's AEDAT 3 reader (``tonic.io.get_aer_events_from_file`` with ``read_dvs_ibm``'s bit layout) on a plain
    file: polarity packets only, all events valid, no overflow (Tonic reads every packet as polarity events,
    ignores the valid mark and the overflow counter, so only such files can agree)."""
    tio = tonic_io()
    ev = random_events(4000, t_max=5_000_000, seed=1)
    path = tmp_path / "plain.aedat"
    write_aedat31(path, ev, packet_size=512)
    version, start, _ = tio.read_aedat_header_from_file(str(path))
    assert version == 3.1
    raw = tio.get_aer_events_from_file(str(path), version, start)
    addr = raw["address"]
    theirs = make_events((addr >> 17) & 0x1FFF, (addr >> 2) & 0x1FFF, raw["timeStamp"], (addr >> 1) & 1)
    assert same_events(read_aedat31(path), theirs)
    assert same_events(theirs, ev)


def _aedat31_bytes(tmp_path: Path, n: int = 50) -> bytes:
    path = tmp_path / "base.aedat"
    write_aedat31(path, random_events(n, t_max=100_000, seed=2), packet_size=20)
    return path.read_bytes()


def test_aedat31_bad_input_names_file_and_offset(tmp_path: Path) -> None:
    data = _aedat31_bytes(tmp_path)
    end = data.index(b"#!END-HEADER\r\n") + len(b"#!END-HEADER\r\n")
    cases = {
        "wrong_header": (b"#!AER-DAT2.0\r\n" + data[14:], r"byte offset 0: expected an AEDAT 3\.1 header"),
        "no_end": (data[: end - 14], r"truncated header"),
        "cut_header": (data[: end + 10], rf"byte offset {end}: truncated packet header \(10 of 28"),
        "cut_packet": (data[:-3], r"truncated packet: its header declares 10 events"),
        "bad_size": (data[:end] + b"\x01\x00\x01\x00\x07" + data[end + 5 :], rf"byte offset {end}: polarity packet"),
    }
    for name, (payload, pattern) in cases.items():
        path = tmp_path / f"{name}.aedat"
        path.write_bytes(payload)
        with pytest.raises(DatasetError, match=rf"{name}\.aedat: .*{pattern}"):
            read_aedat31(path)
    far = make_events([5, 200], [1, 2], [1, 2], [0, 1])
    write_aedat31(tmp_path / "far.aedat", far)
    with pytest.raises(DatasetError, match=rf"far\.aedat: byte offset {end + 28 + 8}: .*x=200"):
        read_aedat31(tmp_path / "far.aedat")
    back = make_events([1, 2, 3], [1, 2, 3], [5, 9, 7], [0, 1, 0])
    write_aedat31(tmp_path / "back.aedat", back)
    with pytest.raises(DatasetError, match=r"back\.aedat: byte offset \d+: .*timestamp 7 us is earlier"):
        read_aedat31(tmp_path / "back.aedat")
    assert read_aedat31(tmp_path / "back.aedat", on_backwards="sort")["t"].tolist() == [5, 7, 9]


# ----------------------------------------------------------------------------------------------------- AEDAT 2.0


@pytest.mark.parametrize("layout", ["tonic", "spikingjelly", "raw"])
def test_aedat2_round_trip(tmp_path: Path, layout: str) -> None:
    ev = random_events(3000, seed=3)
    path = tmp_path / "cifar10_cat_0.aedat"
    write_aedat2(path, ev, layout)  # type: ignore[arg-type]
    assert same_events(read_aedat2(path, layout), ev)  # type: ignore[arg-type]


def test_aedat2_agrees_with_tonic_and_layouts_relate(tmp_path: Path) -> None:
    """Tonic 1.7's ``read_dvs_128`` itself fails (it unpacks two of the three values its header reader returns), so
    the cross-check runs its two parts: ``read_aedat_header_from_file`` + ``get_aer_events_from_file`` and the bit
    layout of ``read_dvs_128`` (x = bits 8..14, y = bits 1..7, p = bit 0)."""
    tio = tonic_io()
    ev = random_events(3000, seed=4)
    path = tmp_path / "cifar10_dog_3.aedat"
    write_aedat2(path, ev)
    version, start, _ = tio.read_aedat_header_from_file(str(path))
    assert version == 2.0
    raw = tio.get_aer_events_from_file(str(path), version, start)
    addr = raw["address"]
    theirs = make_events((addr >> 8) & 0x7F, (addr >> 1) & 0x7F, raw["timeStamp"], addr & 1)
    ours = read_aedat2(path)
    assert same_events(ours, theirs)
    sj = read_aedat2(path, "spikingjelly")  # SpikingJelly: 127 - each axis, polarity inverted
    assert np.array_equal(sj["x"], 127 - ours["x"]) and np.array_equal(sj["y"], 127 - ours["y"])
    assert np.array_equal(sj["p"], ~ours["p"])
    raw_layout = read_aedat2(path, "raw")
    assert np.array_equal(raw_layout["x"], ours["y"]) and np.array_equal(raw_layout["y"], ours["x"])


def test_aedat2_external_events_undefined_bits_and_bad_input(tmp_path: Path) -> None:
    ev = random_events(100, seed=5)
    external = np.zeros(100, dtype=bool)
    external[[3, 50]] = True
    path = tmp_path / "ext.aedat"
    write_aedat2(path, ev, external=external)
    assert same_events(read_aedat2(path), ev[~external])
    data = path.read_bytes()
    start = len(data) - 800
    high = bytearray(data)
    high[start + 8 * 7] = 0x01  # record 7: bit 24 set
    (tmp_path / "high.aedat").write_bytes(bytes(high))
    with pytest.raises(DatasetError, match=rf"high\.aedat: byte offset {start + 56}: .*bits 16\.\.31"):
        read_aedat2(tmp_path / "high.aedat")
    assert len(read_aedat2(tmp_path / "high.aedat", on_invalid="drop")) == 97
    (tmp_path / "cut.aedat").write_bytes(data[:-5])
    with pytest.raises(DatasetError, match=rf"cut\.aedat: byte offset {len(data) - 8}: truncated AEDAT 2\.0"):
        read_aedat2(tmp_path / "cut.aedat")
    (tmp_path / "v3.aedat").write_bytes(b"#!AER-DAT3.1\r\n" + data[14:])
    with pytest.raises(DatasetError, match=r"v3\.aedat: byte offset 0: expected a jAER AEDAT 2\.0 header"):
        read_aedat2(tmp_path / "v3.aedat")
    back = make_events([1, 2], [1, 2], [9, 3], [0, 1])
    write_aedat2(tmp_path / "back.aedat", back)
    with pytest.raises(DatasetError, match=r"back\.aedat: byte offset \d+: .*timestamp 3 us is earlier"):
        read_aedat2(tmp_path / "back.aedat")
    assert read_aedat2(tmp_path / "back.aedat", on_backwards="drop")["t"].tolist() == [9]


# ------------------------------------------------------------------------------------------------------- AEDAT 4


@needs_aedat
@pytest.mark.skipif(not AEDAT4_SAMPLE.is_file(), reason="AEDAT 4 sample absent")
def test_aedat4_sample_through_the_optional_decoder() -> None:
    tio = tonic_io()
    ours = read_aedat4(AEDAT4_SAMPLE)
    assert len(ours) == 111_954 and int(ours["x"].max()) < 320 and int(ours["y"].max()) < 240
    theirs = tio.read_aedat4(str(AEDAT4_SAMPLE))
    assert same_events(ours, make_events(theirs["x"], theirs["y"], theirs["t"], theirs["on"]))
    assert same_events(read_aedat4(AEDAT4_SAMPLE, isolate=False), ours)


def test_aedat4_bad_magic_and_missing_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "x.aedat4"
    bad.write_bytes(b"#!AER-DAT3.1\r\n" + bytes(40))
    with pytest.raises(DatasetError, match=r"x\.aedat4: byte offset 0: expected the AEDAT 4 magic"):
        read_aedat4(bad)
    good_magic = tmp_path / "y.aedat4"
    good_magic.write_bytes(b"#!AER-DAT4.0\r\n" + bytes(40))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match=r"sparsesnn\[aedat4\]"):
        read_aedat4(good_magic, isolate=False)


# -------------------------------------------------------------------------------------------------------- frames


def test_frames_validation() -> None:
    with pytest.raises(ConfigError, match="exactly one of n_frames"):
        ToFrames((34, 34), n_frames=8, frame_duration_us=1000)
    with pytest.raises(ConfigError, match="exactly one of n_frames"):
        ToFrames((34, 34))
    with pytest.raises(ConfigError, match="length"):
        ToFrames((34, 34), n_frames=8, length=4)
    with pytest.raises(ConfigError, match="n_frames must be a positive integer"):
        ToFrames((34, 34), n_frames=0)
    with pytest.raises(ConfigError, match="split_by"):
        ToFrames((34, 34), n_frames=2, split_by="events")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="larger than the 34x34 sensor"):
        ToFrames((34, 34), n_frames=2, size=48)
    with pytest.raises(ConfigError, match="frame_duration_us=1000 needs length"):
        build_dataset("nmnist", NMNIST, "train", frame_duration_us=1000)


def test_frame_bin_conventions() -> None:
    t = np.array([0, 10, 49, 50, 99, 100])
    assert frame_index(t, 2)[0].tolist() == [0, 0, 0, 1, 1, 1]  # the last event lands in the last bin
    assert frame_index(t, 2, "count")[0].tolist() == [0, 0, 0, 1, 1, 1]
    assert frame_index(np.arange(7), 3, "count")[0].tolist() == [0, 0, 0, 1, 1, 2, 2]  # sizes differ by <= 1
    assert frame_index(np.array([5, 5, 5]), 4)[0].tolist() == [0, 0, 0]
    index, n = frame_index(t, frame_duration_us=40)
    assert index.tolist() == [0, 0, 1, 1, 2, 2] and n == 3
    ev = make_events([0, 1, 2, 3, 0, 1], [0, 0, 1, 1, 2, 3], t, [1, 0, 1, 1, 0, 1])
    frames = ToFrames((4, 4), n_frames=2)(ev)
    assert frames.shape == (2, 2, 4, 4) and frames.dtype == np.float32 and frames.sum() == 6
    assert frames[1, 1, 3, 1] == 1 and frames[0, 0, 0, 1] == 1  # channel 1 = ON, [y, x]
    padded = ToFrames((4, 4), frame_duration_us=40, length=5)(ev)
    assert padded.shape == (5, 2, 4, 4) and padded.sum() == 6 and padded[3:].sum() == 0
    trimmed = ToFrames((4, 4), frame_duration_us=40, length=2)(ev)
    assert trimmed.shape == (2, 2, 4, 4) and trimmed.sum() == 4
    empty = ToFrames((4, 4), n_frames=3)(np.empty(0, dtype=EVENT_DTYPE))
    assert empty.shape == (3, 2, 4, 4) and not empty.any()


def test_frames_downsample_shapes_and_counts() -> None:
    ev = random_events(20_000, seed=6)
    full = ToFrames((128, 128), n_frames=4)(ev)
    half = ToFrames((128, 128), n_frames=4, size=64)(ev)
    assert half.shape == (4, 2, 64, 64)
    assert np.array_equal(half, full.reshape(4, 2, 64, 2, 64, 2).sum((3, 5)))  # integer factor = sum pooling
    small = ToFrames((128, 128), n_frames=4, size=48)(ev)
    assert small.shape == (4, 2, 48, 48)
    assert np.allclose(small.sum((2, 3)), full.sum((2, 3)), rtol=1e-5)  # area pooling preserves counts
    assert ToFrames((128, 128), n_frames=2, size=(32, 48))(ev).shape == (2, 2, 32, 48)
    m = area_matrix(128, 48)
    assert np.allclose(m.sum(0), 1.0) and np.allclose(m.sum(1), 128 / 48)
    assert ToFrames((34, 34), n_frames=1, size=17)(make_events([33], [33], [0], [True]))[0, 1, 16, 16] == 1


# --------------------------------------------------------------------------------------------------------- cache


def _tiny_nmnist(root: Path, n_per_digit: int = 2) -> Path:
    for split in ("Train", "Test"):
        for digit in range(10):
            folder = root / split / str(digit)
            folder.mkdir(parents=True)
            for k in range(n_per_digit):
                index = digit * n_per_digit + k + 1
                write_atis_bin(folder / f"{index:05d}.bin", random_events(200, 34, 34, 300_000, seed=index))
    return root


def test_an_empty_sample_file_in_a_dataset_is_an_error_not_a_blank_sample(tmp_path: Path) -> None:
    root = _tiny_nmnist(tmp_path / "nmnist", n_per_digit=1)
    (root / "Train" / "3" / "00004.bin").write_bytes(b"")
    ds, _ = build_dataset("nmnist", root, "train")
    index = next(i for i, sample in enumerate(ds.samples) if sample.path.name == "00004.bin")
    with pytest.raises(DatasetError, match=r"00004\.bin: byte offset 0: empty file"):
        ds[index]


def test_frame_cache_hit_stale_parameter_and_corrupt_rebuild(tmp_path: Path) -> None:
    root = _tiny_nmnist(tmp_path / "nmnist")
    cache_dir = tmp_path / "cache"
    ds, _ = build_dataset("nmnist", root, "train", cache_dir=cache_dir)
    plain, _ = build_dataset("nmnist", root, "train")
    first = ds.frames(0)
    assert ds.cache.stats == {"hits": 0, "misses": 1, "rebuilt": 0, "writes": 1}
    again, _ = build_dataset("nmnist", root, "train", cache_dir=cache_dir)
    assert np.array_equal(again.frames(0), first) and again.cache.stats["hits"] == 1
    assert np.array_equal(first, plain.frames(0))
    # A changed frame parameter is another key: never the stale frames.
    other, _ = build_dataset("nmnist", root, "train", cache_dir=cache_dir, n_frames=3)
    assert other.frames(0).shape == (3, 2, 34, 34) and other.cache.stats["misses"] == 1
    coarse, _ = build_dataset("nmnist", root, "train", cache_dir=cache_dir, split_by="count")
    assert np.array_equal(coarse.frames(0), build_dataset("nmnist", root, "train", split_by="count")[0].frames(0))
    assert coarse.cache.stats["misses"] == 1
    # A changed source file (new contents, new mtime) is another key too.
    source = ds.samples[0].path
    write_atis_bin(source, random_events(50, 34, 34, 1000, seed=99))
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    fresh, _ = build_dataset("nmnist", root, "train", cache_dir=cache_dir)
    assert fresh.frames(0).sum() == 50 and fresh.cache.stats["misses"] == 1
    # Corrupt entries (truncated, garbage, another shape) are rebuilt, never served, never raised.
    key = fresh._key(0)
    entry = fresh.cache.path(key)
    good = entry.read_bytes()
    for damaged in (good[:-7], b"garbage", good[:40] + bytes(len(good) - 40)):
        entry.write_bytes(damaged)
        again, _ = build_dataset("nmnist", root, "train", cache_dir=cache_dir)
        assert again.frames(0).sum() == 50
        assert again.cache.stats["rebuilt"] == 1 and again.cache.stats["writes"] == 1
        assert entry.read_bytes() == good
    cache = FrameCache(cache_dir)
    cache.store(key, np.zeros((2, 2, 34, 34), np.float32))
    assert cache.load(key, (8, 2, 34, 34)) is None and cache.stats["rebuilt"] == 1
    fractional = np.full((1, 2, 3, 3), 0.25, np.float32)
    cache.store("ab" + "0" * 62, fractional)
    assert np.array_equal(cache.load("ab" + "0" * 62), fractional)
    assert cache_key({"a": 1}) != cache_key({"a": 2})


def test_frame_cache_fast_reads_equal_np_load_and_keys_follow_the_file(tmp_path: Path) -> None:
    import hashlib
    import io

    from sparsesnn.data import cache as frame_cache

    root = _tiny_nmnist(tmp_path / "nmnist")
    ds, _ = build_dataset("nmnist", root, "train", cache_dir=tmp_path / "cache")
    key = ds._key(0)
    first = ds.frames(0)
    assert ds._key(0) == key and ds.frames(0).flags.writeable and ds.cache.stats["hits"] == 1
    source = ds.samples[0].path  # the same dataset object sees its file change: a new key, new frames
    write_atis_bin(source, random_events(50, 34, 34, 1000, seed=99))
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    assert ds._key(0) != key and ds.frames(0).sum() == 50 != first.sum() and ds.cache.stats["misses"] == 2
    cache = FrameCache(tmp_path / "other")
    for name, array in {
        "uint16": np.arange(48, dtype=np.float32).reshape(2, 2, 3, 4),
        "float32": np.full((1, 2, 3, 3), 0.25, np.float32),
        "empty": np.zeros((0, 2, 3, 3), np.float32),
    }.items():
        k = name * 4
        cache.store(k, array)
        out = cache.load(k)
        assert out is not None and out.dtype == np.float32 and out.flags.writeable, name
        assert np.array_equal(out, array) and out.shape == array.shape, name
        body = memoryview(cache.path(k).read_bytes())[40:]
        assert frame_cache._read_npy(body) is not None, name  # np.save's own header: the fast path
    # any other .npy header (here version 2.0) is left to np.load and still read
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.arange(6, dtype=np.uint16).reshape(1, 2, 3), version=(2, 0))
    body = buf.getvalue()
    assert frame_cache._read_npy(memoryview(body)) is None
    cache.path("v2v2").parent.mkdir(parents=True, exist_ok=True)
    cache.path("v2v2").write_bytes(b"SSNNFRM1" + hashlib.sha256(body).digest() + body)
    assert np.array_equal(cache.load("v2v2"), np.arange(6, dtype=np.float32).reshape(1, 2, 3))


# -------------------------------------------------------------------------------------------------- augmentation


def test_frame_augmentation_is_reproducible_and_shape_preserving() -> None:
    x = torch.from_numpy(ToFrames((34, 34), n_frames=6)(random_events(3000, 34, 34, 100_000, seed=7)))
    aug = Compose((RandomTranslate(3), RandomHorizontalFlip(0.5), EventDrop(0.2), TimeJitter(0.3)))
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(11)
    g1 = aug(x, None)
    torch.manual_seed(11)
    assert torch.equal(g1, aug(x, None))  # the global RNG path, as the datasets' __getitem__ uses
    big = torch.full((4, 2, 16, 16), 50.0)
    dropped = EventDrop(0.3)(big, torch.Generator().manual_seed(0))
    assert torch.equal(dropped, dropped.round()) and abs(float(dropped.mean()) - 35.0) < 0.5
    jittered = TimeJitter(0.5)(x, torch.Generator().manual_seed(1))
    assert torch.equal(jittered.sum(0), x.sum(0)) and not torch.equal(jittered, x)
    shifted = RandomTranslate(2)(torch.ones(1, 1, 5, 5), torch.Generator().manual_seed(3))
    assert 9 <= float(shifted.sum()) <= 25 and set(shifted.unique().tolist()) <= {0.0, 1.0}
    flipped = RandomHorizontalFlip(1.0)(x, None)
    assert torch.equal(flipped, x.flip(-1))
    with pytest.raises(ValueError):
        EventDrop(1.5)
    rng = np.random.default_rng(0)
    ev = random_events(1000, seed=8)
    assert 850 < len(drop_events(ev, 0.1, rng)) < 950
    jit = jitter_times(ev, 100.0, rng)
    assert len(jit) == 1000 and np.all(np.diff(jit["t"]) >= 0)


def test_dataset_augmentation_defaults(tmp_path: Path) -> None:
    root = _tiny_nmnist(tmp_path / "nmnist", 1)
    ds, _ = build_dataset("nmnist", root, "train", augment=True)
    assert not any(isinstance(t, RandomHorizontalFlip) for t in ds.transform.transforms)
    x0 = ds.get(3, torch.Generator().manual_seed(1))[0]
    assert torch.equal(x0, ds.get(3, torch.Generator().manual_seed(1))[0]) and x0.shape == (8, 2, 34, 34)
    assert build_dataset("nmnist", root, "test")[0].transform is None
    gesture_root = _tiny_gesture(tmp_path / "gesture")
    gesture, _ = build_dataset("dvs_gesture", gesture_root, "train", augment=True)
    assert not any(isinstance(t, RandomHorizontalFlip) for t in gesture.transform.transforms)  # off by default
    flipping, _ = build_dataset("dvs_gesture", gesture_root, "train", augment=True, flip=True)
    assert any(isinstance(t, RandomHorizontalFlip) for t in flipping.transform.transforms)
    cifar, _ = build_dataset("cifar10_dvs", _tiny_cifar10_dvs(tmp_path / "c10"), "train", augment=True, size=48)
    assert any(isinstance(t, RandomHorizontalFlip) for t in cifar.transform.transforms)
    assert RandomTranslate(4) in cifar.transform.transforms  # W // 10 at 48x48


# ------------------------------------------------------------------------------------ DVS Gesture and CIFAR10-DVS


def _tiny_gesture(root: Path) -> Path:
    """Two training recordings and one test recording in the DvsGesture layout, 3 labelled windows each."""
    root.mkdir(parents=True)
    names = {"train": ["user01_lab.aedat", "user02_led.aedat"], "test": ["user24_natural.aedat"]}
    for split, files in names.items():
        (root / f"trials_to_{split}.txt").write_text("\n".join(files) + "\n")
        for seed, name in enumerate(files):
            write_aedat31(root / name, random_events(3000, t_max=3_000_000, seed=10 + seed), packet_size=256)
            rows = ["class,startTime_usec,endTime_usec", "3,100000,900000", "1,1000000,1800000", "11,2000000,2900000"]
            (root / name.replace(".aedat", "_labels.csv")).write_text("\r\n".join(rows) + "\r\n")
    return root


def test_dvs_gesture_dataset(tmp_path: Path) -> None:
    root = _tiny_gesture(tmp_path / "DvsGesture")
    train, info = build_dataset("dvs_gesture", root, "train", n_frames=4, size=32, cache_dir=tmp_path / "cache")
    test, _ = build_dataset("dvs_gesture", root, "test", n_frames=4, size=32)
    assert len(train) == 6 and len(test) == 3
    assert info.sample_shape == (4, 2, 32, 32) and info.num_classes == 11 and info.time_major
    assert train.targets == [2, 0, 10, 2, 0, 10]
    events = read_aedat31(root / "user01_lab.aedat")
    window = events[(events["t"] >= 1_000_000) & (events["t"] < 1_800_000)]
    assert same_events(train.events(1), window)
    x, y = train[1]
    assert y == 0 and float(x.sum()) == pytest.approx(len(window))
    assert train.cache.stats["writes"] == 3  # one decode filled the cache for the recording's three samples
    train[2]
    assert train.cache.stats["hits"] == 1 and train.cache.stats["writes"] == 3
    (root / "trials_to_test.txt").write_text("user24_natural.aedat\nuser01_lab.aedat\n")
    with pytest.raises(DatasetError, match="leaky split"):
        build_dataset("dvs_gesture", root, "train")
    (root / "trials_to_test.txt").write_text("user24_natural.aedat\n")
    (root / "user24_natural_labels.csv").write_text("class,startTime_usec,endTime_usec\n12,5,9\n")
    with pytest.raises(DatasetError, match=r"user24_natural_labels\.csv: line 2: class 12 outside 1\.\.11"):
        build_dataset("dvs_gesture", root, "test")
    (root / "user24_natural.aedat").unlink()
    with pytest.raises(DatasetError, match=r"user24_natural\.aedat not found"):
        build_dataset("dvs_gesture", root, "test")


def _tiny_cifar10_dvs(root: Path, per_class: int = 12) -> Path:
    for label, name in enumerate(CIFAR10_DVS_CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            write_aedat2(root / name / f"cifar10_{name}_{i}.aedat", random_events(300, seed=100 * label + i))
    return root


def test_cifar10_dvs_split_is_deterministic_stratified_and_disjoint(tmp_path: Path) -> None:
    root = _tiny_cifar10_dvs(tmp_path / "CIFAR10-DVS")
    train, info = build_dataset("cifar10_dvs", root, "train", size=48)
    test, _ = build_dataset("cifar10_dvs", root, "test", size=48)
    assert len(train) == 110 and len(test) == 10 and info.train_size == 110 and info.test_size == 10
    assert info.sample_shape == (10, 2, 48, 48)
    assert {s.path for s in train.samples}.isdisjoint({s.path for s in test.samples})
    assert np.bincount(test.targets).tolist() == [1] * 10
    assert [s.path.name for s in test.samples][:2] == ["cifar10_airplane_11.aedat", "cifar10_automobile_11.aedat"]
    assert [s.path.name for s in train.samples][9:11] == ["cifar10_airplane_9.aedat", "cifar10_airplane_10.aedat"]
    tebn, _ = build_dataset("cifar10_dvs", root, "test", test_at="start", train_fraction=0.75)
    assert [s.path.name for s in tebn.samples][:4] == [f"cifar10_airplane_{i}.aedat" for i in range(3)] + [
        "cifar10_automobile_0.aedat"
    ]
    x, y = test[0]
    assert x.shape == (10, 2, 48, 48) and y == 0
    assert float(x.sum()) == pytest.approx(300, rel=1e-5)
    with pytest.raises(ConfigError, match="train_fraction"):
        build_dataset("cifar10_dvs", root, "train", train_fraction=1.0)
    (root / "truck" / "cifar10_truck_0.aedat").write_bytes(b"#!AER-DAT2.0\r\n" + bytes(13))
    with pytest.raises(DatasetError, match=r"cifar10_truck_0\.aedat: byte offset 22: truncated"):
        build_dataset("cifar10_dvs", root, "train", test_at="end")[0][len(train) - 11]


# ------------------------------------------------------------------------------------------------------- fuzzing


def _mutations(base: bytes, head: int) -> st.SearchStrategy[bytes]:
    """Truncations, overwritten bytes (header and body), inserted bytes and random tails after the header."""
    size = len(base)
    cut = st.integers(0, size).map(lambda n: base[:n])
    flip = st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 255)), min_size=1, max_size=12).map(
        lambda edits: _apply(base, edits)
    )
    insert = st.tuples(st.integers(0, size), st.binary(min_size=1, max_size=9)).map(
        lambda a: base[: a[0]] + a[1] + base[a[0] :]
    )
    tail = st.binary(max_size=300).map(lambda b: base[:head] + b)
    return st.one_of(cut, flip, insert, tail, st.binary(max_size=200))


def _apply(base: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(base)
    for pos, value in edits:
        out[pos] = value
    return bytes(out)


def _only_dataset_errors(tmp_path: Path, payload: bytes, suffix: str, read) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(payload)
    try:
        events = read(path)
    except DatasetError as err:
        assert "fuzz" in str(err) and ("byte offset" in str(err) or "file not found" in str(err))
        return
    assert events.dtype == EVENT_DTYPE
    if len(events) > 1:
        assert np.all(np.diff(events["t"]) >= 0)


_FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
_NMNIST_BASE = b"".join(
    bytes([x % 34, (x * 7) % 34, (x >> 8) | 0x80 * (x % 2), x % 256, (x * 3) % 256]) for x in range(40)
)


@_FUZZ
@given(payload=_mutations(_NMNIST_BASE, 0))
def test_fuzz_atis_raises_only_dataset_errors(tmp_path: Path, payload: bytes) -> None:
    _only_dataset_errors(tmp_path, payload, ".bin", read_nmnist)


def _make_base(writer, name: str) -> bytes:  # type: ignore[no-untyped-def]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        writer(path)
        return path.read_bytes()


_AEDAT31_BASE = _make_base(
    lambda p: write_aedat31(p, random_events(40, seed=9), packet_size=16, extra_packets=True), "a"
)
_AEDAT2_BASE = _make_base(lambda p: write_aedat2(p, random_events(40, seed=9)), "b")


@_FUZZ
@given(payload=_mutations(_AEDAT31_BASE, _AEDAT31_BASE.index(b"#!END-HEADER\r\n") + 14))
def test_fuzz_aedat31_raises_only_dataset_errors(tmp_path: Path, payload: bytes) -> None:
    _only_dataset_errors(tmp_path, payload, ".aedat", read_aedat31)


@_FUZZ
@given(payload=_mutations(_AEDAT2_BASE, len(_AEDAT2_BASE) - 320))
def test_fuzz_aedat2_raises_only_dataset_errors(tmp_path: Path, payload: bytes) -> None:
    _only_dataset_errors(tmp_path, payload, ".aedat", read_aedat2)


@needs_aedat
@pytest.mark.skipif(not AEDAT4_SAMPLE.is_file(), reason="AEDAT 4 sample absent")
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzz_aedat4_raises_only_dataset_errors(tmp_path: Path, data: st.DataObject) -> None:
    """The aedat package aborts the interpreter on some malformed files; read_aedat4 isolates it in a child."""
    base = AEDAT4_SAMPLE.read_bytes()[:60_000]
    payload = data.draw(_mutations(base, 14))
    path = tmp_path / "fuzz.aedat4"
    path.write_bytes(payload)
    try:
        events = read_aedat4(path)
    except DatasetError as err:
        assert "fuzz.aedat4" in str(err) and "byte offset" in str(err)
        return
    assert events.dtype == EVENT_DTYPE
