"""Dassl's utilities under upstream's names.

The modules that import torch, numpy or PIL (logger, meters, tools, torchtools) load on first
use of one of their names (PEP 562), so that a light user of the package (the protocol scripts' --help,
the config, the run-file names, the downloader) answers without importing torch.
"""
import importlib
from .download import DownloadFailed, digest_mismatch, download, folder_lock
from .errors import ConfigError, UserError
from .registry import Registry

# The lazily loaded modules and the names they provide.
_LAZY_MODULES = {
    "logger": ("close_logger", "console_stream", "keep_old_file", "setup_logger"),
    "meters": ("AverageMeter", "MetricMeter"),
    "tools": ("ImageError", "ImageNotFoundError", "atomic_write", "check_isfile",
              "collect_env_info", "listdir_nohidden", "mkdir_if_missing", "read_image",
              "read_json", "remove_abandoned_temporary_files", "remove_temporary_files",
              "set_random_seed", "WriteError", "write_json"),
    "run_lock": ("RunFolderBusy", "handover", "remove_stale_lock", "run_folder_lock"),
    "torchtools": ("CheckpointError", "CheckpointNotFoundError", "PickledObjectState",
                   "count_num_param", "epoch_checkpoints", "get_rng_state", "holds_checkpoint",
                   "latest_checkpoint_path", "load_checkpoint", "load_pretrained_weights",
                   "load_state_dict_leniently", "read_latest_checkpoint", "read_model_checkpoint",
                   "restore_training_state", "resume_from_checkpoint", "save_checkpoint",
                   "set_rng_state"),
}
_LAZY = {name: module for module, names in _LAZY_MODULES.items() for name in names}


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "atomic_write",
    "AverageMeter",
    "check_isfile",
    "CheckpointError",
    "CheckpointNotFoundError",
    "close_logger",
    "collect_env_info",
    "ConfigError",
    "console_stream",
    "count_num_param",
    "digest_mismatch",
    "download",
    "DownloadFailed",
    "epoch_checkpoints",
    "folder_lock",
    "get_rng_state",
    "handover",
    "holds_checkpoint",
    "ImageError",
    "ImageNotFoundError",
    "keep_old_file",
    "latest_checkpoint_path",
    "listdir_nohidden",
    "load_checkpoint",
    "load_pretrained_weights",
    "load_state_dict_leniently",
    "MetricMeter",
    "mkdir_if_missing",
    "PickledObjectState",
    "read_image",
    "read_json",
    "read_latest_checkpoint",
    "Registry",
    "remove_abandoned_temporary_files",
    "remove_stale_lock",
    "remove_temporary_files",
    "restore_training_state",
    "run_folder_lock",
    "RunFolderBusy",
    "resume_from_checkpoint",
    "save_checkpoint",
    "set_random_seed",
    "set_rng_state",
    "setup_logger",
    "UserError",
    "WriteError",
    "write_json",
]
