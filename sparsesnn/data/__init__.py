"""Datasets: a registry of loaders that return ``(Dataset, DatasetInfo)``; importing this package registers them.

Static images live in :mod:`~sparsesnn.data.images`; event-camera datasets (``nmnist``, ``dvs_gesture``,
``cifar10_dvs``) in :mod:`~sparsesnn.data.neuromorphic`, built on the decoders of :mod:`~sparsesnn.data.events`.
Streaming input (event files read incrementally, binned into the datasets' frames window by window) is
:mod:`~sparsesnn.data.stream`.

``build_dataset("mnist", "data/mnist", "train")`` builds one by name; ``DATASETS.names()`` lists what is available.
"""

from sparsesnn.data import event_transforms, events, frames, images, neuromorphic, stream, transforms
from sparsesnn.data.base import DATASETS, ArrayDataset, DatasetInfo, build_dataset
from sparsesnn.data.images import read_idx

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DatasetInfo",
    "build_dataset",
    "event_transforms",
    "events",
    "frames",
    "images",
    "neuromorphic",
    "read_idx",
    "stream",
    "transforms",
]
