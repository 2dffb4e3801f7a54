"""Trainers: importing the package imports every trainer module in it, so each trainer registers
itself in dassl's TRAINER_REGISTRY (no import to forget); `extend_cfg(cfg)` adds every trainer's
TRAINER.<NAME>.* defaults; `default_cfg()` is the config train.py and predict.py start from."""
import importlib
import pkgutil

import datasets  # importing registers every dataset
from dassl.config import get_cfg_default

# Modules of the package that are not trainers: `predict` builds trainers for inference (and
# imports this package to register them).
_NOT_TRAINERS = {"predict"}

MODULES = [importlib.import_module(f"{__name__}.{info.name}")
           for info in pkgutil.iter_modules(__path__)
           if info.name not in _NOT_TRAINERS]


def extend_cfg(cfg):
    """Add the config defaults of every trainer module that defines `extend_cfg(cfg)`."""
    for module in MODULES:
        if hasattr(module, "extend_cfg"):
            module.extend_cfg(cfg)


def default_cfg():
    """Dassl's defaults with every trainer's and dataset's keys."""
    cfg = get_cfg_default()
    extend_cfg(cfg)
    datasets.extend_cfg(cfg)
    return cfg
