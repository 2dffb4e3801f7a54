"""The root config node: yacs' CfgNode whose merges explain a wrong key, value or file.

yacs reports a typo as ``Non-existent key: OPTIM.MAXEPOCH`` and a wrong value as ``Type mismatch
(<class 'int'> vs. <class 'str'>) with values (10 vs. abc) ...``, with a traceback. Here both
become a ``ConfigError`` that names the key, suggests the closest existing one and says which
type is expected; ``train.py`` prints it as a one-line error.
"""
import difflib
import os.path as osp

import yaml
from yacs.config import CfgNode

from dassl.utils import ConfigError


def leaf_values(node, prefix=""):
    """Every leaf of ``node`` as {dotted key (e.g. "OPTIM.MAX_EPOCH"): value}."""
    values = {}
    for key, value in node.items():
        if isinstance(value, CfgNode):
            values.update(leaf_values(value, f"{prefix}{key}."))
        else:
            values[prefix + key] = value
    return values


# The values numpy, torch and Python accept as a seed (SEED < 0 means no fixed seed).
SEED_LIMIT = 2 ** 32


def check_values(cfg):
    """Refuse, naming the key, engine settings that torch or numpy would reject with a
    traceback once the run has started."""
    if cfg.SEED >= SEED_LIMIT:
        raise ConfigError(f"SEED (--seed) is {cfg.SEED}: a seed must be below 2**32 ({SEED_LIMIT})")
    if cfg.DATALOADER.NUM_WORKERS < 0:
        raise ConfigError(f"DATALOADER.NUM_WORKERS is {cfg.DATALOADER.NUM_WORKERS}: give 0 (load "
                          "in the main process) or more")
    for loader in ("TRAIN_X", "TRAIN_U", "TEST"):
        size = cfg.DATALOADER[loader].BATCH_SIZE
        if size < 1:
            raise ConfigError(f"DATALOADER.{loader}.BATCH_SIZE is {size}: a batch holds at least one image")


class CheckedCfgNode(CfgNode):
    """Root of the default config. ``merge_from_file`` / ``merge_from_list`` merge one key at a
    time, so that an unknown key or a value of the wrong type raises a ConfigError naming it."""

    def merge_from_file(self, cfg_filename):
        if not osp.isfile(cfg_filename):
            raise ConfigError(
                f'config file "{cfg_filename}" does not exist: check the path (dataset configs '
                "are in configs/datasets/, method configs in configs/trainers/<TRAINER>/)"
            )
        try:
            with open(cfg_filename, "r", encoding="utf-8") as f:
                loaded = yaml.safe_load(f)
        except UnicodeDecodeError as error:
            raise ConfigError(f'config file "{cfg_filename}" is not UTF-8 text ({error.reason} at '
                              f"byte {error.start}): save it as UTF-8") from error
        except yaml.YAMLError as error:
            reason = " ".join(str(error).split())
            raise ConfigError(f'config file "{cfg_filename}" is not valid YAML: {reason}') from error
        if loaded is None:
            return
        if not isinstance(loaded, dict):
            raise ConfigError(f'config file "{cfg_filename}" holds a {type(loaded).__name__}, not '
                              "a mapping of config keys (KEY: value lines, sections indented)")
        loaded = CfgNode(loaded)
        for key, value in self._leaves_of(loaded):
            self._merge_one(key, value, f' in "{cfg_filename}"')

    def merge_from_list(self, cfg_list):
        if len(cfg_list) % 2:
            raise ConfigError(
                f"config overrides come in KEY VALUE pairs, got an odd number of words ({len(cfg_list)}): "
                f"{' '.join(map(str, cfg_list))}"
            )
        for key, value in zip(cfg_list[0::2], cfg_list[1::2], strict=True):
            self._merge_one(key, value, " on the command line")

    def _leaves_of(self, loaded, node=None, prefix=""):
        """(dotted key, value) pairs of a loaded file: nested mappings are descended where the
        config has a section of that name, and are values (to be checked) anywhere else."""
        node = self if node is None else node
        for key, value in loaded.items():
            section = node.get(key)
            if isinstance(value, dict) and isinstance(section, CfgNode):
                yield from self._leaves_of(value, section, f"{prefix}{key}.")
            else:
                yield prefix + key, value

    def _merge_one(self, key, value, where):
        self._check_key(key, where)
        try:
            super().merge_from_list([key, value])
        except ValueError as error:
            raise ConfigError(self._type_mismatch(key, value, where)) from error

    def has_key(self, key):
        """True when the dotted ``key`` names a key or a section of the config."""
        node = self
        for part in key.split("."):
            if not isinstance(node, CfgNode) or part not in node:
                return False
            node = node[part]
        return True

    def _check_key(self, key, where):
        if not self.has_key(key):
            raise ConfigError(self._unknown_key(key, where))

    def _unknown_key(self, key, where):
        message = f"unknown config key {key}{where}"
        close = difflib.get_close_matches(key, list(leaf_values(self)), n=1)
        if close:
            return f"{message}; did you mean {close[0]}?"
        return f"{message}; see dassl/config/defaults.py and the trainers' extend_cfg for the keys"

    def _type_mismatch(self, key, value, where):
        expected = self
        for part in key.split("."):
            expected = expected[part]
        value = self._decode_cfg_value(value)
        message = (f"{key} expects {type(expected).__name__}, got {value!r} "
                   f"({type(value).__name__}){where}")
        if isinstance(expected, float) and type(value) is int:
            message += f"; write it as {float(value)}"
        return message
