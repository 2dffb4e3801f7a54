import inspect
import os.path as osp

from dassl.utils import ConfigError, Registry

TRAINER_REGISTRY = Registry("trainer", config_key="TRAINER.NAME / --trainer")


def build_trainer(cfg):
    """Instantiate the trainer registered under ``cfg.TRAINER.NAME``.

    A trainer that reads a config key nobody defined (a trainer file from the CoOp codebase,
    whose train.py sets its keys, dropped in without an ``extend_cfg``) stops with one line."""
    trainer_class = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    if cfg.VERBOSE:
        print(f"Loading trainer: {cfg.TRAINER.NAME}")
    try:
        return trainer_class(cfg)
    except AttributeError as error:
        key = undefined_config_key(error, cfg)
        if key is None:
            raise
        source = inspect.getsourcefile(trainer_class) or trainer_class.__module__
        raise ConfigError(
            f"trainer {cfg.TRAINER.NAME} ({osp.relpath(source)}) reads the config key {key}, "
            "which no trainer file defines: give the file an extend_cfg(cfg) function that adds "
            "its keys and defaults (the CoOp codebase adds them in its train.py)") from error


def undefined_config_key(error, cfg):
    """The full name of the key whose lookup raised `error` (a CfgNode's AttributeError), or
    None when `error` did not come from a config lookup."""
    traceback = error.__traceback__
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    frame = traceback.tb_frame
    node, name = frame.f_locals.get("self"), frame.f_locals.get("name")
    if (frame.f_code.co_name != "__getattr__" or not isinstance(name, str)
            or not isinstance(node, dict)):
        return None
    path = _path_of(cfg, node)
    return None if path is None else ".".join([*path, name])


def _path_of(root, node, path=()):
    if root is node:
        return list(path)
    for key, value in root.items():
        if isinstance(value, dict):
            found = _path_of(value, node, (*path, key))
            if found is not None:
                return found
    return None
