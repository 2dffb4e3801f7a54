"""The datasets, in CoOp's on-disk layouts (DATASETS.md).

Every module of this package is imported here, so each dataset registers itself in
``DATASET_REGISTRY`` and a new dataset file cannot be forgotten in a list.
"""
import importlib
import pkgutil

from dassl.data.datasets import DatasetError

from .base_new import base_labels_for, split_base_new_labels, subsample_classes

__all__ = ["DatasetError", "base_labels_for", "extend_cfg", "split_base_new_labels", "subsample_classes"]

# The preparation tool is run as ``python -m datasets.prepare``; importing it here first would
# make runpy warn that the module was already imported.
_NOT_IMPORTED = {"prepare"}

_MODULES = [
    importlib.import_module(f"{__name__}.{info.name}")
    for info in pkgutil.iter_modules(__path__)
    if info.name not in _NOT_IMPORTED
]


def extend_cfg(cfg):
    """Add the config keys that dataset modules define (``extend_cfg`` in a module)."""
    for module in _MODULES:
        if hasattr(module, "extend_cfg"):
            module.extend_cfg(cfg)
