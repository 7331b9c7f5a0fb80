"""Dataset plumbing shared by every loader: the dataset info record, an in-memory dataset, and the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch.utils.data import Dataset

from sparsesnn.core.errors import ConfigError, DatasetError
from sparsesnn.core.registry import Registry
from sparsesnn.core.settings import Settings, validate_settings


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and the engine need to know about a dataset.

    ``sample_shape`` is the shape of one input without the batch dimension: ``(C, H, W)`` for static images (the
    engine encodes them over T steps), ``(T, C, H, W)`` for event frames (``time_major=True``: already spike-like
    and time-major, T = ``default_time_steps``).
    """

    name: str
    num_classes: int
    sample_shape: tuple[int, ...]
    time_major: bool = False
    default_time_steps: int | None = None
    train_size: int | None = None
    test_size: int | None = None

    @property
    def in_channels(self) -> int:
        return self.sample_shape[1] if self.time_major else self.sample_shape[0]

    @property
    def input_size(self) -> int:
        """Spatial size (H) of one frame; 1 for flat inputs."""
        spatial = self.sample_shape[2:] if self.time_major else self.sample_shape[1:]
        return int(spatial[0]) if spatial else 1


class ArrayDataset(Dataset[tuple[torch.Tensor, int]]):
    """Inputs and integer labels held in memory as tensors, with optional per-batch transform.

    ``batch(indices)`` returns a whole batch by fancy indexing (no per-sample Python loop); ``transform`` receives
    a batch ``[B, ...]`` and a ``torch.Generator`` so augmentation is reproducible from the loader's seed.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        transform: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None,
    ) -> None:
        if inputs.shape[0] != targets.shape[0]:
            raise ValueError(f"{inputs.shape[0]} inputs but {targets.shape[0]} targets")
        self.inputs = inputs
        self.targets = targets.long()
        self.transform = transform

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.inputs[index]
        if self.transform is not None:
            x = self.transform(x.unsqueeze(0), None)[0]
        return x, int(self.targets[index])

    def batch(
        self, indices: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.inputs[indices]
        if self.transform is not None:
            x = self.transform(x, generator)
        return x, self.targets[indices]


def label_problem(targets: torch.Tensor, indices: torch.Tensor, info: DatasetInfo) -> str | None:
    """Why a batch's integer ``targets`` are not class labels of ``info`` (None when they all are in
    ``[0, num_classes)``), naming the first bad sample by its index in the dataset (``indices``). Soft or
    floating-point targets are not checked. One min/max over the batch's labels: run it on the host copy of the
    batch, where it costs microseconds and no device synchronisation."""
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool or targets.ndim != 1:
        return None
    low, high = (int(v) for v in targets.aminmax())
    if low >= 0 and high < info.num_classes:
        return None
    bad = ((targets < 0) | (targets >= info.num_classes)).nonzero()[0, 0]
    return (
        f"sample {int(indices[bad])} has label {int(targets[bad])}, outside [0, {info.num_classes}) for its "
        f"{info.num_classes} classes"
    )


def non_finite_sample(inputs: torch.Tensor, indices: torch.Tensor) -> int | None:
    """The dataset index (from ``indices``) of the first sample of a batch whose inputs hold NaN or infinity, or None
    (the slow path, after one fused check found some)."""
    finite = torch.isfinite(inputs.reshape(inputs.shape[0], -1)).all(dim=1)
    if bool(finite.all()):
        return None
    return int(indices[(~finite).nonzero()[0, 0].cpu()])


def root_dir(dataset: str, root: str | Path | None) -> Path:
    """``root`` as a directory that exists, or the :class:`~sparsesnn.core.errors.DatasetError` that says what is
    wrong."""
    if root is None:
        raise DatasetError(f"{dataset}: root is required (the directory holding the original files); got None")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetError(f"{dataset}: root {path} is not a directory")
    return path


class DatasetSettings(Settings):
    """What a dataset's config ``[data.params]`` may set (and ``data.normalize`` / ``data.augment`` where the
    dataset takes them); each dataset subclasses it beside its loader."""


S = TypeVar("S", bound=DatasetSettings)
Loaded = tuple[Dataset[Any], DatasetInfo]


@dataclass(frozen=True)
class DatasetLoader(Generic[S]):
    """A registered dataset: its settings model and ``load(root, split, settings)``. Calling it with keyword
    settings validates them first (a bad one is a :class:`~sparsesnn.core.errors.ConfigError` naming it)."""

    name: str
    Settings: type[S]
    load: Callable[[str | Path | None, str, S], Loaded]

    def __call__(self, root: str | Path | None, split: str, **params: Any) -> Loaded:
        try:
            settings = validate_settings(self.Settings, self.name, params)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return self.load(root, split, settings)


DATASETS: Registry[DatasetLoader[Any]] = Registry("dataset")


def register_dataset(
    name: str, settings: type[S]
) -> Callable[[Callable[[str | Path | None, str, S], Loaded]], DatasetLoader[S]]:
    """``@register_dataset("mnist", ImageSettings)`` on ``load(root, split, settings)``."""

    def add(load: Callable[[str | Path | None, str, S], Loaded]) -> DatasetLoader[S]:
        loader = DatasetLoader(name, settings, load)
        DATASETS.register(name)(loader)
        return loader

    return add


def build_dataset(name: str, root: str | Path | None, split: str, **params: Any) -> tuple[Dataset[Any], DatasetInfo]:
    """Build a registered dataset: ``build_dataset("mnist", "data/mnist", "train")``.

    ``split`` is "train" or "test". ``root`` is the directory of the original files (ignored by embedded sets).
    Loaders never download: a missing file raises :class:`sparsesnn.core.errors.DatasetError`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return DATASETS[name](root, split, **params)
