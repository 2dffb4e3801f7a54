"""The dataset registry and ``build_dataset(cfg)``.

The engine knows no dataset: dataset modules register themselves when imported, and the entry
points import them (train.py and predict.py through the trainers package, which imports the
project's ``datasets``), as in upstream Dassl / CoOp.
"""
from dassl.utils import Registry

DATASET_REGISTRY = Registry("dataset", config_key="DATASET.NAME, set by --dataset-config-file")


def build_dataset(cfg):
    """Build the dataset registered under ``cfg.DATASET.NAME``."""
    dataset_class = DATASET_REGISTRY.get(cfg.DATASET.NAME)
    if cfg.VERBOSE:
        print(f"Loading dataset: {cfg.DATASET.NAME}")
    return dataset_class(cfg)
