"""Trainers: importing the package imports every trainer module in it, so each trainer registers
itself in dassl's TRAINER_REGISTRY (no import to forget); `extend_cfg(cfg)` adds every trainer's
TRAINER.<NAME>.* defaults; `default_cfg()` is the config train.py and predict.py start from.

A trainer file dropped into this folder (e.g. one written for the CoOp codebase) is a plugin,
imported after the built-in trainer modules: if it fails to import, one line names the file and
the error, and the other trainers still load; if it registers a trainer name that a built-in one
has (e.g. `MaPLe`), the file's trainer replaces the built-in one, and one line says so.
"""
import importlib
import os.path as osp
import pkgutil
import sys

import datasets  # importing registers every dataset
from dassl.config import get_cfg_default
from dassl.engine import TRAINER_REGISTRY

# Modules of the package that are not trainers: `predict` builds trainers for inference (and
# imports this package to register them).
_NOT_TRAINERS = {"predict"}
# This project's trainer modules; any other module in the folder is a user's plugin.
BUILT_IN = {"bmip", "cocoop", "coop", "coprompt", "ivlp", "maple", "prompting", "promptsrc",
            "regularised", "vpt", "zsclip"}

MODULES = []
# module name -> "file: error" of the trainer files that failed to import
FAILED = {}


def load_trainer_modules():
    """Import the trainer modules not imported yet (all of them on the first call); report each
    file that fails to import in one line on stderr and go on with the others."""
    # Built-in modules first (their trainers and extend_cfg too), so that a plugin's win.
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name not in BUILT_IN):
        name = f"{__name__}.{info.name}"
        if info.name in _NOT_TRAINERS or name in FAILED or any(m.__name__ == name for m in MODULES):
            continue
        try:
            if info.name in BUILT_IN:
                MODULES.append(importlib.import_module(name))
                continue
            with TRAINER_REGISTRY.replacing() as replaced:
                MODULES.append(importlib.import_module(name))
            for trainer in replaced:
                print(f"note: trainer file {_module_file(info)} registers {trainer}: it replaces "
                      f"the built-in {trainer} (rename its class to keep both)", file=sys.stderr)
        except Exception as error:  # a broken plugin must not take the other trainers down
            sys.modules.pop(name, None)
            first_line = (str(error).splitlines() or [""])[0]
            FAILED[name] = f"{_module_file(info)}: {type(error).__name__}: {first_line}"
            print(f"warning: trainer file {FAILED[name]} (skipped)", file=sys.stderr)
    return MODULES


def _module_file(info):
    path = osp.join(info.module_finder.path, info.name)
    return path if info.ispkg else path + ".py"


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


def apply_backbone_input(cfg, opts=()):
    """For an open_clip backbone (MODEL.BACKBONE.NAME `<model>/<tag>`, clip/openclip.py): its
    image size and normalisation into INPUT.SIZE / PIXEL_MEAN / PIXEL_STD, which the method
    configs set for OpenAI's CLIP; a key that `opts` (the command line's KEY VALUE pairs) sets
    keeps its value. Nothing changes for OpenAI's names and local files."""
    from clip.openclip import input_settings

    given = set(list(opts or ())[::2])
    settings = input_settings(cfg.MODEL.BACKBONE.NAME)
    cfg.merge_from_list([item for key, value in settings.items() if key not in given
                         for item in (key, value)])


load_trainer_modules()
