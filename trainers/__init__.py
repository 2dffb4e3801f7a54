"""Trainers: importing the package imports every module in it, so each trainer registers itself
in dassl's TRAINER_REGISTRY (no import to forget); `extend_cfg(cfg)` adds every trainer's
TRAINER.<NAME>.* defaults."""
import importlib
import pkgutil

MODULES = [importlib.import_module(f"{__name__}.{info.name}")
           for info in pkgutil.iter_modules(__path__)]


def extend_cfg(cfg):
    """Add the config defaults of every trainer module that defines `extend_cfg(cfg)`."""
    for module in MODULES:
        if hasattr(module, "extend_cfg"):
            module.extend_cfg(cfg)
