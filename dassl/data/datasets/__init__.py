from .base_dataset import DatasetBase, DatasetError, Datum
from .build import DATASET_REGISTRY, build_dataset
