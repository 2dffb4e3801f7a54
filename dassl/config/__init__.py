from .checked import CheckedCfgNode, ConfigError, full_keys
from .defaults import _C as cfg_default

__all__ = ["CheckedCfgNode", "ConfigError", "cfg_default", "full_keys", "get_cfg_default"]


def get_cfg_default():
    """A fresh copy of the default configuration (yacs ``CfgNode``)."""
    return cfg_default.clone()
