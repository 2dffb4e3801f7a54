from .checked import CheckedCfgNode, ConfigError, check_values, leaf_values
from .defaults import _C as cfg_default

__all__ = ["CheckedCfgNode", "ConfigError", "cfg_default", "check_values", "get_cfg_default", "leaf_values"]


def get_cfg_default():
    """A fresh copy of the default configuration (yacs ``CfgNode``)."""
    return cfg_default.clone()
