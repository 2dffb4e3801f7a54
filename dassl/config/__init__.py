from .checked import CheckedCfgNode, ConfigError, leaf_values
from .defaults import _C as cfg_default

__all__ = ["CheckedCfgNode", "ConfigError", "cfg_default", "get_cfg_default", "leaf_values"]


def get_cfg_default():
    """A fresh copy of the default configuration (yacs ``CfgNode``)."""
    return cfg_default.clone()
