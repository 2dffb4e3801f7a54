"""The dataset registry and ``build_dataset(cfg)``."""
import importlib

from dassl.utils import Registry

DATASET_REGISTRY = Registry("dataset", config_key="DATASET.NAME, set by --dataset-config-file")


def _register_project_datasets():
    """Import the repository's ``datasets`` package, whose modules register themselves."""
    try:
        importlib.import_module("datasets")
    except ModuleNotFoundError as error:
        if error.name != "datasets":
            raise


def build_dataset(cfg):
    """Build the dataset registered under ``cfg.DATASET.NAME``."""
    name = cfg.DATASET.NAME
    if name not in DATASET_REGISTRY:
        _register_project_datasets()
    dataset_class = DATASET_REGISTRY.get(name)
    if cfg.VERBOSE:
        print(f"Loading dataset: {name}")
    return dataset_class(cfg)
