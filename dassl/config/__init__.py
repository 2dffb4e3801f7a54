from .checked import CheckedCfgNode, ConfigError, full_keys
from .defaults import _C as cfg_default


def get_cfg_default():
    """A fresh copy of the default configuration (yacs ``CfgNode``)."""
    return cfg_default.clone()


def clean_cfg(cfg, trainer):
    """Remove the ``TRAINER.<NAME>`` sections of trainers other than ``trainer``."""
    keys = [key for key in cfg.TRAINER if key != "NAME" and key != trainer.upper()]
    for key in keys:
        cfg.TRAINER.pop(key, None)
