"""Datasets: a registry of loaders that return ``(Dataset, DatasetInfo)``; importing this package registers them.

``build_dataset("mnist", "data/mnist", "train")`` builds one by name; ``DATASETS.names()`` lists what is available.
"""

from sparsesnn.data import images, transforms
from sparsesnn.data.base import DATASETS, ArrayDataset, DatasetInfo, build_dataset
from sparsesnn.data.images import read_idx

__all__ = ["DATASETS", "ArrayDataset", "DatasetInfo", "build_dataset", "images", "read_idx", "transforms"]
