"""The dataset registry and ``build_dataset(cfg)``."""
import importlib

from dassl.utils import Registry

from .base_dataset import DatasetError

DATASET_REGISTRY = Registry("DATASET")


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
    if name not in DATASET_REGISTRY:
        raise DatasetError(
            f'Unknown dataset "{name}" (DATASET.NAME). Registered datasets: '
            f"{', '.join(DATASET_REGISTRY.registered_names())}. See DATASETS.md."
        )
    if cfg.VERBOSE:
        print(f"Loading dataset: {name}")
    return DATASET_REGISTRY.get(name)(cfg)
