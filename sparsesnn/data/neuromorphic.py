"""Event-camera datasets read from their original files: N-MNIST, DVS128 Gesture and CIFAR10-DVS.

Each registry entry returns ``(EventFrameDataset, DatasetInfo)``. A sample is ``(frames, label)`` with ``frames``
a float32 tensor ``[T, 2, H, W]`` of event counts (:class:`~sparsesnn.data.frames.ToFrames`; channel 0 = OFF,
1 = ON) and ``DatasetInfo(time_major=True, sample_shape=(T, 2, H, W), default_time_steps=T)``; the engine batches
them and transposes to ``[T, B, 2, H, W]``. Nothing is downloaded. Every file problem raises
:class:`~sparsesnn.core.errors.DatasetError` naming the file (and the byte offset, see :mod:`sparsesnn.data.events`).

Frame parameters (all three datasets): ``n_frames`` (default: the dataset's T), ``split_by`` ("time" or "count"),
or instead ``frame_duration_us`` with ``length`` (frames per sample; required so that samples batch); ``size``:
output ``H = W`` (or ``[H, W]``) by area pooling of counts. ``cache_dir`` (default None: no cache) keeps the frames
of every sample on disk under a key of all of these (:mod:`sparsesnn.data.cache`).

Augmentation (``augment=True``; the config passes it to the train split only): a random translation by up to
``max_shift`` pixels (zero filled), a horizontal flip when ``flip`` (off by default where it changes the class),
``drop_prob`` (event drop) and ``jitter_prob`` (move events to a neighbouring frame), both 0 unless set; see
:mod:`sparsesnn.data.event_transforms`. ``__getitem__`` draws from torch's global RNG, which the engine seeds
per batch right before the batch's samples are read (in the main process or in a loader worker), so augmentation
is the same for a given seed with any ``data.num_workers`` and after a mid-epoch resume. ``get(index, generator)``
takes an explicit ``torch.Generator``.

Datasets
--------
``nmnist`` (Orchard et al., Front. Neurosci. 2015): ``root/Train/<digit>/*.bin`` and ``root/Test/<digit>/*.bin``
(lower-case folder names work too); the label is the folder name. Samples are ordered by file name (numeric aware)
then digit, which for the official naming is the MNIST order. 34x34 sensor, 10 classes, default T = 8.

``dvs_gesture`` (Amir et al., CVPR 2017): ``root`` holds the ``userXX_<lighting>.aedat`` recordings (AEDAT 3.1),
one ``userXX_<lighting>_labels.csv`` per recording (``class,startTime_usec,endTime_usec``, classes 1..11) and the
official ``trials_to_train.txt`` / ``trials_to_test.txt``. Each CSV row is one sample: the events with
``startTime_usec <= t < endTime_usec`` (SpikingJelly's convention), label ``class - 1``. A recording listed in
both files is an error (a leaky split). 128x128 sensor, 11 classes, default T = 16. ``flip`` is off by default:
mirroring turns "right hand wave" into "left hand wave". A recording is decoded once for all its samples: with a
cache the frames of every sample of that recording are written at once; without one, the most recently decoded
recording stays in memory.

``cifar10_dvs`` (Li et al., Front. Neurosci. 2017): ``root/<class>/*.aedat`` (jAER AEDAT 2.0, DVS128), the ten
CIFAR-10 class folders ``airplane`` .. ``truck``. The dataset has no official split; ours is deterministic and
stratified: within each class the files are sorted by name (numeric aware, so ``cifar10_cat_9`` precedes
``cifar10_cat_10``), the first ``round(n * train_fraction)`` (default 0.9: 900 of 1000) are train and the rest test
(``test_at="end"``); ``test_at="start"`` puts the first ones in test instead, which with ``train_fraction=0.9`` is
the split of TEBN / SpikingJelly's ``CIFAR10DVSTEBNSplit`` (test = samples 0..99 of each class). ``layout`` picks
how DVS128 addresses map to image axes (default "tonic"; see :func:`sparsesnn.data.events.read_aedat2`).
128x128 sensor, 10 classes, default T = 10.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch.utils.data import Dataset

from sparsesnn.core.errors import ConfigError, DatasetError
from sparsesnn.data.base import DatasetInfo, DatasetSettings, register_dataset, root_dir
from sparsesnn.data.cache import FrameCache, cache_key
from sparsesnn.data.event_transforms import (
    Compose,
    EventDrop,
    FrameTransform,
    RandomHorizontalFlip,
    RandomTranslate,
    TimeJitter,
)
from sparsesnn.data.events import (
    DECODER_VERSION,
    DVS128_SENSOR,
    NMNIST_SENSOR,
    read_aedat2,
    read_aedat31,
    read_atis_bin,
)
from sparsesnn.data.frames import ToFrames

__all__ = [
    "CIFAR10_DVS_CLASSES",
    "DVS_GESTURE_CLASSES",
    "CIFAR10DVSSettings",
    "DVSGestureSettings",
    "EventDatasetSpec",
    "EventFrameDataset",
    "EventFramesSettings",
    "EventSample",
    "NMNISTSettings",
    "load_event_dataset",
]

DVS_GESTURE_CLASSES = (
    "hand clapping",
    "right hand wave",
    "left hand wave",
    "right arm clockwise",
    "right arm counter-clockwise",
    "left arm clockwise",
    "left arm counter-clockwise",
    "arm roll",
    "air drums",
    "air guitar",
    "other gestures",
)
CIFAR10_DVS_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders embedded numbers numerically: ``a_9`` < ``a_10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


@dataclass(frozen=True)
class EventSample:
    """One sample: a source file, its label and, for recordings cut into samples, the window ``[start_us, end_us)``."""

    path: Path
    label: int
    start_us: int | None = None
    end_us: int | None = None


class EventFrameDataset(Dataset[tuple[torch.Tensor, int]]):
    """Samples of event files turned into frames, with an optional disk cache and frame augmentation.

    ``read(path)`` decodes one source file into events; samples sharing a file (DVS Gesture) are decoded together.
    ``key_params`` holds the decoder options that go into every cache key besides the frame parameters.
    """

    def __init__(
        self,
        name: str,
        root: Path,
        samples: Sequence[EventSample],
        read: Callable[[Path], np.ndarray],
        to_frames: ToFrames,
        transform: FrameTransform | None = None,
        cache_dir: str | Path | None = None,
        key_params: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.root = root
        self.samples = list(samples)
        self.read = read
        self.to_frames = to_frames
        self.transform = transform
        self.cache = FrameCache(cache_dir) if cache_dir is not None else None
        self.key_params = dict(key_params or {})
        self._memo: tuple[Path, np.ndarray] | None = None
        self._keys: dict[int, tuple[tuple[int, int], str]] = {}  # index -> ((size, mtime_ns) of its file, cache key)
        groups: dict[Path, list[int]] = {}
        for i, s in enumerate(self.samples):
            groups.setdefault(s.path, []).append(i)
        self._groups = groups
        self.targets = [s.label for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def _file_events(self, path: Path) -> np.ndarray:
        if self._memo is not None and self._memo[0] == path:
            return self._memo[1]
        events = self.read(path)
        if len(self._groups[path]) > 1:
            self._memo = (path, events)
        return events

    def events(self, index: int) -> np.ndarray:
        """The decoded events of sample ``index`` (the sample's window of its recording)."""
        sample = self.samples[index]
        events = self._file_events(sample.path)
        if sample.start_us is None:
            return events
        t = events["t"]
        lo = int(np.searchsorted(t, sample.start_us, side="left"))
        hi = int(np.searchsorted(t, sample.end_us, side="left"))
        return events[lo:hi]

    def _key(self, index: int) -> str:
        """The cache key of sample ``index``; remembered while its file keeps its size and modification time."""
        sample = self.samples[index]
        try:
            stat = sample.path.stat()
        except OSError as err:
            raise DatasetError(f"{sample.path}: cannot stat the file ({err})") from err
        stamp = (stat.st_size, stat.st_mtime_ns)
        known = self._keys.get(index)
        if known is not None and known[0] == stamp:
            return known[1]
        try:
            rel = sample.path.relative_to(self.root).as_posix()
        except ValueError:
            rel = sample.path.as_posix()
        key = cache_key(
            {
                "dataset": self.name,
                "file": rel,
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "window": [sample.start_us, sample.end_us],
                "frames": self.to_frames.cache_params(),
                "decoder": DECODER_VERSION,
                **self.key_params,
            }
        )
        self._keys[index] = (stamp, key)
        return key

    def _shape(self) -> tuple[int, ...] | None:
        t = self.to_frames.time_steps
        return None if t is None else (t, 2, *self.to_frames.output_hw)

    def frames(self, index: int) -> np.ndarray:
        """Float32 frames ``[T, 2, H, W]`` of sample ``index`` before augmentation (from the cache when enabled)."""
        if self.cache is None:
            return self.to_frames(self.events(index))
        key = self._key(index)
        shape = self._shape()
        frames = self.cache.load(key, shape)
        if frames is not None:
            self.cache.stats["hits"] += 1
            return frames
        self.cache.stats["misses"] += 1
        path = self.samples[index].path
        frames = self.to_frames(self.events(index))
        self.cache.store(key, frames)
        for other in self._groups[path]:  # one decode fills the cache for every sample of this recording
            if other != index:
                other_key = self._key(other)
                if self.cache.load(other_key, shape) is None:
                    self.cache.store(other_key, self.to_frames(self.events(other)))
        return frames

    def get(self, index: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
        """Sample ``index`` augmented with ``generator`` (None: torch's global RNG)."""
        x = torch.from_numpy(np.ascontiguousarray(self.frames(index), dtype=np.float32))
        if self.transform is not None:
            x = self.transform(x, generator)
        return x, self.samples[index].label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.get(index, None)

    def __repr__(self) -> str:
        return f"EventFrameDataset({self.name!r}, {len(self)} samples, {self.to_frames!r})"


# ------------------------------------------------------------------------------------------------------ shared setup


def _check_split(dataset: str, split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"{dataset}: split must be 'train' or 'test', got {split!r}")


def _frames_spec(
    dataset: str,
    sensor: tuple[int, int],
    default_t: int,
    n_frames: int | None,
    split_by: str,
    frame_duration_us: int | None,
    length: int | None,
    size: int | Sequence[int] | None,
) -> ToFrames:
    if n_frames is None and frame_duration_us is None:
        n_frames = default_t
    if frame_duration_us is not None and n_frames is None and length is None:
        raise ConfigError(
            f"{dataset}: frame_duration_us={frame_duration_us} needs length (the number of frames per sample, so "
            "that samples of a batch have the same T)"
        )
    if size is not None and not isinstance(size, int):
        size = tuple(size)  # type: ignore[assignment]
    try:
        return ToFrames(
            sensor_size=sensor,
            n_frames=n_frames,
            split_by=split_by,  # type: ignore[arg-type]
            frame_duration_us=frame_duration_us,
            length=length,
            size=size,  # type: ignore[arg-type]
        )
    except ConfigError as err:
        raise ConfigError(f"{dataset}: {err}") from None


def _augmentation(
    dataset: str, augment: bool, max_shift: int, flip: bool, drop_prob: float, jitter_prob: float
) -> FrameTransform | None:
    if not augment:
        return None
    try:
        steps: list[FrameTransform] = []
        if max_shift:
            steps.append(RandomTranslate(max_shift))
        if flip:
            steps.append(RandomHorizontalFlip(0.5))
        if drop_prob:
            steps.append(EventDrop(drop_prob))
        if jitter_prob:
            steps.append(TimeJitter(jitter_prob))
    except ValueError as err:
        raise ConfigError(f"{dataset}: {err}") from None
    return Compose(tuple(steps)) if steps else None


def _info(name: str, num_classes: int, spec: ToFrames, split: str, n: int, other: int | None) -> DatasetInfo:
    t = spec.time_steps
    assert t is not None
    h, w = spec.output_hw
    return DatasetInfo(
        name=name,
        num_classes=num_classes,
        sample_shape=(t, 2, h, w),
        time_major=True,
        default_time_steps=t,
        train_size=n if split == "train" else other,
        test_size=n if split == "test" else other,
    )


# ----------------------------------------------------------------------------------------------------------- N-MNIST


def _nmnist_split_dir(root: Path, split: str) -> Path:
    names = ("Train", "train") if split == "train" else ("Test", "test")
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(
        f"nmnist: {root / names[0]} not found (nor {root / names[1]}); expected <root>/Train/<digit>/*.bin"
    )


def _nmnist_samples(root: Path, split: str) -> list[EventSample]:
    folder = _nmnist_split_dir(root, split)
    found: list[tuple[tuple[Any, ...], int, Path]] = []
    for sub in folder.iterdir():
        if not sub.is_dir() or not sub.name.isdigit():
            continue
        label = int(sub.name)
        if label > 9:
            raise DatasetError(f"nmnist: {sub}: expected digit folders 0..9, found {sub.name!r}")
        for f in sub.iterdir():
            if f.suffix == ".bin" and not f.name.startswith("."):
                found.append((natural_key(f.name), label, f))
    if not found:
        raise DatasetError(f"nmnist: no .bin files in {folder}/<digit>/; expected the extracted N-MNIST {split} set")
    found.sort(key=lambda item: (item[0], item[1]))
    return [EventSample(path, label) for _, label, path in found]


# --------------------------------------------------------------------------------------------------- DVS128 Gesture


def read_trials(path: Path) -> list[str]:
    """Recording names listed in ``trials_to_train.txt`` / ``trials_to_test.txt`` (one per line, blanks skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(
            f"dvs_gesture: {path} not found (the official trials list of the DvsGesture archive)"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read the trials list ({err})") from err
    names = [line.strip() for line in text.splitlines() if line.strip()]
    for number, name in enumerate(names, 1):
        if not name.endswith(".aedat") or "/" in name or "\\" in name:
            raise DatasetError(
                f"{path}: entry {number}: expected a recording file name like 'user01_lab.aedat', found {name!r}"
            )
    return names


def read_gesture_labels(path: Path, num_classes: int = 11) -> list[tuple[int, int, int]]:
    """Rows ``(label 0-based, start_us, end_us)`` of a DVS Gesture ``*_labels.csv`` (``class,startTime_usec,
    endTime_usec`` with classes 1..11), validated: integers, known class, ``start < end``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"dvs_gesture: {path} not found (each recording needs its _labels.csv)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read the labels file ({err})") from err
    rows = list(csv.reader(text.splitlines()))
    if not rows or [c.strip() for c in rows[0]] != ["class", "startTime_usec", "endTime_usec"]:
        found = rows[0] if rows else "an empty file"
        raise DatasetError(f"{path}: line 1: expected the header 'class,startTime_usec,endTime_usec', found {found!r}")
    out: list[tuple[int, int, int]] = []
    for number, row in enumerate(rows[1:], 2):
        if not row or all(not c.strip() for c in row):
            continue
        try:
            cls, start, end = (int(c) for c in row)
        except ValueError:
            raise DatasetError(f"{path}: line {number}: expected three integers, found {row!r}") from None
        if not 1 <= cls <= num_classes:
            raise DatasetError(f"{path}: line {number}: class {cls} outside 1..{num_classes}")
        if not 0 <= start < end:
            raise DatasetError(
                f"{path}: line {number}: expected 0 <= startTime_usec < endTime_usec, found {start}, {end}"
            )
        out.append((cls - 1, start, end))
    return out


def _gesture_samples(root: Path, split: str) -> list[EventSample]:
    train = read_trials(root / "trials_to_train.txt")
    test = read_trials(root / "trials_to_test.txt")
    leaked = sorted(set(train) & set(test))
    if leaked:
        raise DatasetError(
            f"dvs_gesture: {len(leaked)} recordings are listed in both trials_to_train.txt and trials_to_test.txt "
            f"(a leaky split), e.g. {leaked[0]!r}"
        )
    samples: list[EventSample] = []
    for name in train if split == "train" else test:
        recording = root / name
        if not recording.is_file():
            raise DatasetError(f"dvs_gesture: {recording} not found (listed in trials_to_{split}.txt)")
        labels = root / f"{name.removesuffix('.aedat')}_labels.csv"
        for label, start, end in read_gesture_labels(labels):
            samples.append(EventSample(recording, label, start, end))
    if not samples:
        raise DatasetError(f"dvs_gesture: trials_to_{split}.txt in {root} lists no labelled samples")
    return samples


# ------------------------------------------------------------------------------------------------------- CIFAR10-DVS


def cifar10_dvs_split(
    root: Path, train_fraction: float = 0.9, test_at: str = "end"
) -> tuple[list[EventSample], list[EventSample]]:
    """The deterministic stratified split ``(train, test)`` of CIFAR10-DVS in ``root`` (see the module docstring)."""
    train: list[EventSample] = []
    test: list[EventSample] = []
    for label, name in enumerate(CIFAR10_DVS_CLASSES):
        folder = root / name
        if not folder.is_dir():
            raise DatasetError(
                f"cifar10_dvs: {folder} not found; expected one folder per class ({', '.join(CIFAR10_DVS_CLASSES)})"
            )
        files = sorted(
            (f for f in folder.iterdir() if f.suffix == ".aedat" and not f.name.startswith(".")),
            key=lambda f: natural_key(f.name),
        )
        if len(files) < 2:
            raise DatasetError(f"cifar10_dvs: {folder} holds {len(files)} .aedat files; need at least 2 to split")
        n_train = min(max(math.floor(len(files) * train_fraction + 0.5), 1), len(files) - 1)
        if test_at == "end":
            tr, te = files[:n_train], files[n_train:]
        else:
            te, tr = files[: len(files) - n_train], files[len(files) - n_train :]
        train.extend(EventSample(f, label) for f in tr)
        test.extend(EventSample(f, label) for f in te)
    return train, test


# ---------------------------------------------------------------------------------------------------- the settings


class EventFramesSettings(DatasetSettings):
    """Frames and augmentation of an event dataset (see the module docstring)."""

    n_frames: int | None = Field(None, ge=1, description="frames per sample (None: the dataset's T)")
    split_by: Literal["time", "count"] = Field("time", description="equal time bins or equal event counts")
    frame_duration_us: int | None = Field(None, ge=1, description="frames of this duration instead (needs length)")
    length: int | None = Field(None, ge=1, description="frames per sample with frame_duration_us")
    size: int | tuple[int, int] | None = Field(None, description="output H = W (or [H, W]) by area pooling")
    augment: bool = Field(False, description="augment the train split (translation, flip, drop, jitter)")
    max_shift: int | None = Field(None, ge=0, description="random translation by up to this many pixels")
    flip: bool = Field(False, description="random horizontal flip (off where it changes the class)")
    drop_prob: float = Field(0.0, ge=0.0, lt=1.0, description="probability of dropping each event")
    jitter_prob: float = Field(0.0, ge=0.0, le=1.0, description="probability of moving an event to a next frame")
    cache_dir: str | None = Field(None, description="keep every sample's frames on disk here (None: no cache)")
    on_backwards: Literal["error", "sort", "drop"] = Field("error", description="a timestamp that goes back")
    on_invalid: Literal["error", "drop"] = Field("error", description="an event outside the sensor")

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _path(cls, v: Any) -> Any:
        return str(v) if isinstance(v, Path) else v


class NMNISTSettings(EventFramesSettings):
    """N-MNIST (34x34, 10 classes, T = 8 by default; no flip: a mirrored digit is another glyph)."""

    max_shift: int | None = Field(2, ge=0, description="random translation by up to this many pixels")


class DVSGestureSettings(EventFramesSettings):
    """DVS128 Gesture (128x128, 11 classes, T = 16 by default; no flip: it swaps left and right gestures)."""

    max_shift: int | None = Field(
        None, ge=0, description="random translation by up to this many pixels (None: W // 16)"
    )


class CIFAR10DVSSettings(EventFramesSettings):
    """CIFAR10-DVS (128x128, 10 classes, T = 10 by default) and its deterministic stratified split."""

    max_shift: int | None = Field(
        None, ge=0, description="random translation by up to this many pixels (None: W // 10)"
    )
    flip: bool = Field(True, description="random horizontal flip (a mirrored object keeps its class)")
    train_fraction: float = Field(0.9, gt=0.0, lt=1.0, description="fraction of each class in the train split")
    test_at: Literal["end", "start"] = Field("end", description="which files of each class are the test split")
    layout: Literal["tonic", "spikingjelly", "raw"] = Field("tonic", description="how DVS128 addresses map to axes")


# ------------------------------------------------------------------------------------------ one loader for the three


@dataclass(frozen=True)
class EventDatasetSpec:
    """What distinguishes one event dataset from another; :func:`load_event_dataset` does the rest."""

    name: str
    sensor: tuple[int, int]
    default_frames: int
    num_classes: int
    #: ``max_shift`` when it is None: the output width divided by this
    shift_divisor: int
    #: ``(samples of the split, size of the other split or None)``
    samples: Callable[[Path, str, Any], tuple[list[EventSample], int | None]]
    #: the decoder of one file, from the settings
    reader: Callable[[Any], Callable[[Path], np.ndarray]]
    #: the settings that change what the decoder returns (part of the frame-cache key)
    decoder_keys: tuple[str, ...] = ("on_backwards", "on_invalid")


def load_event_dataset(
    spec: EventDatasetSpec, root: str | Path | None, split: str, s: EventFramesSettings
) -> tuple[EventFrameDataset, DatasetInfo]:
    """The ``split`` of an event dataset as frames: samples, decoder, frames, augmentation and cache by ``s``."""
    _check_split(spec.name, split)
    frames = _frames_spec(
        spec.name, spec.sensor, spec.default_frames, s.n_frames, s.split_by, s.frame_duration_us, s.length, s.size
    )
    base = root_dir(spec.name, root)
    samples, other = spec.samples(base, split, s)
    shift = frames.output_hw[1] // spec.shift_divisor if s.max_shift is None else s.max_shift
    ds = EventFrameDataset(
        spec.name,
        base,
        samples,
        spec.reader(s),
        frames,
        _augmentation(spec.name, s.augment, shift, s.flip, s.drop_prob, s.jitter_prob),
        s.cache_dir,
        {key: getattr(s, key) for key in spec.decoder_keys},
    )
    return ds, _info(spec.name, spec.num_classes, frames, split, len(ds), other)


def _cifar10_dvs_samples(root: Path, split: str, s: CIFAR10DVSSettings) -> tuple[list[EventSample], int]:
    train, test = cifar10_dvs_split(root, s.train_fraction, s.test_at)
    return (train, len(test)) if split == "train" else (test, len(train))


NMNIST_SPEC = EventDatasetSpec(
    "nmnist",
    NMNIST_SENSOR,
    8,
    10,
    34,
    lambda root, split, _s: (_nmnist_samples(root, split), None),
    lambda s: partial(read_atis_bin, sensor_size=NMNIST_SENSOR, on_backwards=s.on_backwards, on_invalid=s.on_invalid),
)
DVS_GESTURE_SPEC = EventDatasetSpec(
    "dvs_gesture",
    DVS128_SENSOR,
    16,
    11,
    16,
    lambda root, split, _s: (_gesture_samples(root, split), None),
    lambda s: partial(read_aedat31, sensor_size=DVS128_SENSOR, on_backwards=s.on_backwards, on_invalid=s.on_invalid),
)
CIFAR10_DVS_SPEC = EventDatasetSpec(
    "cifar10_dvs",
    DVS128_SENSOR,
    10,
    10,
    10,
    _cifar10_dvs_samples,
    lambda s: partial(read_aedat2, layout=s.layout, on_backwards=s.on_backwards, on_invalid=s.on_invalid),
    ("layout", "on_backwards", "on_invalid"),
)

register_dataset("nmnist", NMNISTSettings)(partial(load_event_dataset, NMNIST_SPEC))
register_dataset("dvs_gesture", DVSGestureSettings)(partial(load_event_dataset, DVS_GESTURE_SPEC))
register_dataset("cifar10_dvs", CIFAR10DVSSettings)(partial(load_event_dataset, CIFAR10_DVS_SPEC))
