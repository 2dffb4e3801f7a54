"""Whether a run may resume: the settings it continues with must train what it started training.

A run killed at epoch 57 of 400 and restarted with other settings (OPTIM.MAX_EPOCH 3, OPTIM.LR
0.5) would otherwise resume silently, finish a schedule that never ran, and leave a config.yaml
describing that schedule. ``check_resume_config`` compares the resolved config with the
config.yaml saved by the run being resumed and refuses when a key that changes what is trained
differs. The keys in ``RESUME_SAFE_KEYS`` (dassl.config.identity) may differ: they say where files are, how fast data is
loaded, what is printed, or how the final model is scored, not what is learned.
"""
import os.path as osp

import yaml
from yacs.config import CfgNode

from dassl.config import leaf_values
# The rule of what changes training lives with the run identity, which applies it too.
from dassl.config.identity import RESUME_SAFE_KEYS, changes_training  # noqa: F401
from dassl.utils import UserError, holds_checkpoint
from dassl.utils.run_files import CONFIG_FILE


class ResumeConfigError(UserError):
    """The settings of a resumed run differ from those its checkpoints were trained with."""


def resume_directory(cfg):
    """The folder a training run resumes from: RESUME when given, else OUTPUT_DIR."""
    return cfg.RESUME or cfg.OUTPUT_DIR


def config_differences(saved, current):
    """``(key, saved value, current value)`` for each training key the two configs set
    differently. Keys one of them lacks (added or removed by a code update) are not compared."""
    # Through YAML, as the saved one went, so that a tuple equals its saved list.
    current = CfgNode.load_cfg(current.dump())
    saved_values, current_values = leaf_values(saved), leaf_values(current)
    return [
        (key, saved_values[key], current_values[key])
        for key in sorted(saved_values.keys() & current_values.keys())
        if changes_training(key) and saved_values[key] != current_values[key]
    ]


def check_resume_config(cfg):
    """Raise ResumeConfigError when ``cfg`` would resume a run trained with other settings.

    Call it before anything writes to OUTPUT_DIR. Nothing to compare (no checkpoint, or a run
    folder without config.yaml, e.g. one of upstream Dassl) passes.
    """
    directory = resume_directory(cfg)
    if cfg.RESUME and not holds_checkpoint(directory):
        what = "holds no checkpoint" if osp.isdir(directory) else "is not a folder"
        raise ResumeConfigError(
            f'--resume "{directory}" {what} to resume from: give the output folder of the '
            "interrupted run (leave --resume out to train from scratch)")
    if not holds_checkpoint(directory):
        return
    saved_path = osp.join(directory, CONFIG_FILE)
    if not osp.isfile(saved_path):
        print(f'Note: no {CONFIG_FILE} in "{directory}" to check the resumed settings against')
        return
    try:
        with open(saved_path) as f:
            saved = CfgNode.load_cfg(f)
    except yaml.YAMLError as error:
        reason = str(error).splitlines()[0]
        raise ResumeConfigError(
            f'cannot check the resumed settings: "{saved_path}" is not valid YAML ({reason}); '
            "put back a good copy, or delete it to resume without the check"
        ) from error
    differences = config_differences(saved, cfg)
    if not differences:
        return
    listed = "\n".join(f"  {key}: {old!r} -> {new!r}" for key, old, new in differences)
    raise ResumeConfigError(
        f'"{directory}" holds checkpoints of a run trained with other settings; resuming it with '
        f"these would train something else than {saved_path} describes. Differing keys (saved -> "
        f"now):\n{listed}\nUse a new --output-dir, or remove the checkpoints to start over (the "
        "protocol scripts' FORCE=1 does that); to continue the run, repeat its settings."
    )
