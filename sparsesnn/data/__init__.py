"""Datasets: a registry of loaders that return ``(Dataset, DatasetInfo)``; importing this package registers them.

Static images live in :mod:`~sparsesnn.data.images`; event-camera datasets (``nmnist``, ``dvs_gesture``,
``cifar10_dvs``) in :mod:`~sparsesnn.data.neuromorphic`, built on the decoders of :mod:`~sparsesnn.data.events`.

``build_dataset("mnist", "data/mnist", "train")`` builds one by name; ``DATASETS.names()`` lists what is available.
"""

from sparsesnn.data import event_transforms, events, frames, images, neuromorphic, transforms
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
    "transforms",
]
