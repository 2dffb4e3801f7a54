from .base_dataset import DatasetBase, DatasetError, Datum
from .build import DATASET_REGISTRY, build_dataset

__all__ = [
    "build_dataset",
    "DATASET_REGISTRY",
    "DatasetBase",
    "DatasetError",
    "Datum",
]
