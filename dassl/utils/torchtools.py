"""Checkpoint reading / writing and small model utilities.

Checkpoints are ``torch.save`` dicts with ``state_dict``, ``epoch``, ``optimizer``, ``scheduler``
(and ``val_result`` for the best-validation model), as upstream Dassl writes them. They are read
with ``torch.load(weights_only=True)``: a checkpoint is untrusted input.
"""
import io
import os
import os.path as osp
import pickle
import random
import re
import shutil
from collections import OrderedDict

import numpy as np
import torch

from .errors import UserError
from .run_files import (
    BEST_MODEL_NAME,
    CHECKPOINT_POINTER,
    EPOCH_CHECKPOINT_PREFIX,
    epoch_checkpoint_name,
)
from .tools import atomic_write, mkdir_if_missing


class CheckpointNotFoundError(UserError, FileNotFoundError):
    """A checkpoint file (or the run folder that should hold it) does not exist."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file that cannot be read safely or does not fit the model."""


class PickledObjectState:
    """Inert stand-in for a scheduler / optimizer object that upstream Dassl pickled.

    Upstream checkpoints written with a warm-up scheduler hold a pickled
    ``torch.optim.lr_scheduler.CosineAnnealingLR`` (with its optimizer) in ``scheduler["successor"]``.
    We unpickle those objects into this class instead of the real one: their attributes become
    plain data in ``__dict__`` and no code of the original class runs.
    """

    def __repr__(self):
        return f"PickledObjectState({sorted(self.__dict__)})"

    def plain_state(self):
        """The object's attributes without the optimizer it referenced (a ``state_dict()``)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}


def _plain_dict(default_factory=None):
    # collections.defaultdict (an optimizer's ``state``) read back as a plain dict: the unpickler
    # only fills plain dicts, and the factory is never needed after loading.
    return {}


# Exactly the globals that upstream Dassl checkpoints contain besides tensors and plain containers.
_PICKLED_CLASS_NAMES = (
    "torch.optim.lr_scheduler.CosineAnnealingLR",
    "torch.optim.lr_scheduler.StepLR",
    "torch.optim.lr_scheduler.MultiStepLR",
    "torch.optim.sgd.SGD",
    "torch.optim.adam.Adam",
    "torch.optim.adamw.AdamW",
    "torch.optim.rmsprop.RMSprop",
    "torch.optim.radam.RAdam",
    "dassl.optim.radam.RAdam",
)
_UPSTREAM_ALLOWED_GLOBALS = [(PickledObjectState, name) for name in _PICKLED_CLASS_NAMES] + [
    (_plain_dict, "collections.defaultdict"),
    dict,  # the defaultdict's factory argument
]


# Checkpoints (files, or folders holding them) the user trusts to run code when unpickled: a list
# separated like PATH. The only way this project ever loads a checkpoint with weights_only=False.
TRUSTED_CHECKPOINTS_VARIABLE = "TRUSTED_CHECKPOINTS"


def trusted_checkpoint(fpath):
    """True when ``fpath`` (or a folder above it) is listed in $TRUSTED_CHECKPOINTS."""
    listed = [entry for entry in os.environ.get(TRUSTED_CHECKPOINTS_VARIABLE, "").split(os.pathsep) if entry]
    real = osp.realpath(fpath)
    for entry in listed:
        trusted = osp.realpath(osp.expanduser(entry))
        if real == trusted or real.startswith(trusted.rstrip(os.sep) + os.sep):
            return True
    return False


def load_checkpoint(fpath):
    """Read a checkpoint safely (``weights_only=True``), on CPU.

    Pickled schedulers / optimizers of upstream Dassl checkpoints come back as
    ``PickledObjectState`` (plain attributes); everything else must be tensors and containers,
    unless the user listed the file in $TRUSTED_CHECKPOINTS.
    """
    if fpath is None:
        raise ValueError("load_checkpoint() got fpath=None: pass the path of a checkpoint file")
    if not osp.exists(fpath):
        raise CheckpointNotFoundError(f'no checkpoint file at "{fpath}": check the path')
    trusted = trusted_checkpoint(fpath)
    if trusted:
        print(f'Note: loading "{fpath}" with full unpickling (it is listed in ${TRUSTED_CHECKPOINTS_VARIABLE})')
    with torch.serialization.safe_globals(_UPSTREAM_ALLOWED_GLOBALS):
        try:
            return torch.load(fpath, map_location="cpu", weights_only=not trusted)
        except Exception as error:
            # A real pickled object names a dotted global; damaged bytes can read as a nonsense one.
            found = re.search(r"GLOBAL ((?:[A-Za-z_]\w*\.)+[A-Za-z_]\w*)(?:\s|$)", str(error))
            if not isinstance(error, pickle.UnpicklingError) or not found:
                raise _unreadable(fpath, error) from error
            raise CheckpointError(
                f'checkpoint "{fpath}" holds an object ({found.group(1)}) that needs code execution to '
                f"load, so it is refused; if you trust the file, allow it with "
                f"{TRUSTED_CHECKPOINTS_VARIABLE}={fpath}"
            ) from error


def _unreadable(fpath, error):
    """One line for a file torch cannot read: its own reason, without torch's advice about
    ``weights_only`` (which does not apply to a damaged file)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(("Weights only load failed", "Please file an issue",
                                                               "Check the documentation"))]
    reason = (reasons or lines or [type(error).__name__])[0].split(". ")[0]
    return CheckpointError(f'cannot read checkpoint "{fpath}": {reason}; the file is truncated or not a checkpoint')


def _strip_module_prefix(state_dict):
    # Weights saved from nn.DataParallel carry a "module." prefix that a plain model lacks.
    return OrderedDict((key.removeprefix("module."), value) for key, value in state_dict.items())


def save_checkpoint(state, save_dir, is_best=False, remove_module_from_keys=True, model_name=""):
    """Write ``state`` to ``save_dir/model_name`` (default ``model.pth.tar-<epoch>``) atomically.

    Also records the file name in ``save_dir/checkpoint`` (read by ``latest_checkpoint_path``),
    except for ``model-best.pth.tar``: resuming continues from the latest epoch, not the best one.
    When ``is_best``, the file is also copied to ``model-best.pth.tar``.
    """
    mkdir_if_missing(save_dir)
    if remove_module_from_keys:
        state = dict(state)
        state["state_dict"] = _strip_module_prefix(state["state_dict"])
    if not model_name:
        model_name = epoch_checkpoint_name(state["epoch"])
    fpath = osp.join(save_dir, model_name)
    # Serialised in memory first: torch.save writing to the file itself turns a full disk or a
    # file-size limit into an opaque "unexpected pos" error instead of the OSError naming it.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_write(fpath, binary=True) as f:
        f.write(buffer.getbuffer())
    print(f"Checkpoint saved to {fpath}")

    if model_name != BEST_MODEL_NAME:
        with atomic_write(osp.join(save_dir, CHECKPOINT_POINTER)) as f:
            f.write(f"{osp.basename(fpath)}\n")

    if is_best:
        best_fpath = osp.join(save_dir, BEST_MODEL_NAME)
        with open(fpath, "rb") as source, atomic_write(best_fpath, binary=True) as f:
            shutil.copyfileobj(source, f)
        print(f'Best checkpoint saved to "{best_fpath}"')


_EPOCH_CHECKPOINT = re.compile(re.escape(EPOCH_CHECKPOINT_PREFIX) + r"(\d+)")


def epoch_checkpoints(model_folder):
    """``{epoch: path}`` of the ``model.pth.tar-<epoch>`` files in a model's folder (empty when
    there are none, or no such folder)."""
    if not osp.isdir(model_folder):
        return {}
    return {
        int(match.group(1)): osp.join(model_folder, file_name)
        for file_name in os.listdir(model_folder)
        if (match := _EPOCH_CHECKPOINT.fullmatch(file_name))
    }


def latest_checkpoint_path(fdir):
    """The checkpoint training resumes from in the model folder ``fdir``: the one that
    ``fdir/checkpoint`` names (the latest epoch saved), else the highest ``model.pth.tar-N`` (as in
    released weights, which come without the pointer); None when there is neither."""
    pointer = osp.join(fdir, CHECKPOINT_POINTER)
    if osp.isfile(pointer):
        with open(pointer) as f:
            return osp.join(fdir, f.readline().strip())
    epochs = epoch_checkpoints(fdir)
    return epochs[max(epochs)] if epochs else None


def holds_checkpoint(run_folder):
    """True when training can resume from the run folder ``run_folder``: one of its model folders
    has a latest checkpoint (``latest_checkpoint_path``). A best model alone is not one."""
    if not osp.isdir(run_folder):
        return False
    return any(
        latest_checkpoint_path(osp.join(run_folder, name)) is not None
        for name in os.listdir(run_folder)
        if osp.isdir(osp.join(run_folder, name))
    )


def read_latest_checkpoint(fdir):
    """The checkpoint dict of the latest epoch saved in the model folder ``fdir``."""
    fpath = latest_checkpoint_path(fdir)
    if fpath is None:
        raise CheckpointNotFoundError(
            f'no "{CHECKPOINT_POINTER}" file or {EPOCH_CHECKPOINT_PREFIX}N in "{fdir}": pass the '
            "folder of one model of a run (e.g. <output>/prompt_learner), which holds its checkpoints"
        )
    print(f'Loading checkpoint from "{fpath}"')
    return read_model_checkpoint(fpath)


def read_model_checkpoint(fpath):
    """``load_checkpoint``, refusing what is not a model's checkpoint (a dict with an ``epoch``
    and a ``state_dict`` of tensors) or holds NaN or infinite weights, which would evaluate to
    a meaningless accuracy or train on from garbage."""
    checkpoint = load_checkpoint(fpath)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'checkpoint "{fpath}" holds a {type(checkpoint).__name__}, not a '
                              'checkpoint (a dict with "state_dict" and "epoch"): is it the right file?')
    state_dict = checkpoint.get("state_dict")
    if not isinstance(state_dict, dict) or not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        found = "none" if state_dict is None else f"a {type(state_dict).__name__}"
        raise CheckpointError(f'checkpoint "{fpath}" has no "state_dict" of tensors (found {found}): '
                              "is it the right file?")
    if not isinstance(checkpoint.get("epoch"), int):
        raise CheckpointError(f'checkpoint "{fpath}" records no epoch (an integer under "epoch")')
    non_finite = [key for key, value in state_dict.items()
                  if (value.is_floating_point() or value.is_complex()) and not torch.isfinite(value).all()]
    if non_finite:
        listed = ", ".join(non_finite[:5]) + (f" and {len(non_finite) - 5} more" if len(non_finite) > 5 else "")
        raise CheckpointError(f'checkpoint "{fpath}" holds NaN or infinite values in {listed}; it '
                              "cannot be evaluated or trained on: use another epoch's checkpoint "
                              "(--load-epoch) or train again")
    return checkpoint


def load_state_dict_leniently(model, state_dict, name="model"):
    """Load the tensors ``state_dict`` has into ``model``; the model's other tensors keep their
    values (a prompt learner's checkpoint holds the learned tensors only). Keys the model does
    not have are reported."""
    result = model.load_state_dict(state_dict, strict=False)
    if result.unexpected_keys:
        print(
            f"Warning: keys in the checkpoint that model {name} does not have: "
            f"{result.unexpected_keys}"
        )
    return result


def restore_training_state(checkpoint, optimizer=None, scheduler=None, origin="the checkpoint"):
    """Put a checkpoint's optimizer, scheduler and random number generator states back; return
    its epoch (the number of epochs done, where training continues). A state that does not fit
    is a ``CheckpointError`` naming ``origin`` (the file)."""
    if optimizer is not None and checkpoint.get("optimizer"):
        _restore(origin, "optimizer state", optimizer.load_state_dict, checkpoint["optimizer"])
        print("Loaded optimizer")
    if scheduler is not None and checkpoint.get("scheduler"):
        _check_same_types(origin, "scheduler state", checkpoint["scheduler"], scheduler.state_dict())
        _restore(origin, "scheduler state", scheduler.load_state_dict, checkpoint["scheduler"])
        print("Loaded scheduler")
    # Upstream Dassl's checkpoints have no RNG states; ours keep them in the engine's state.
    rng_state = (checkpoint.get("engine_state") or {}).get("rng_state")
    if rng_state is not None:
        _restore(origin, "random number generator state", set_rng_state, rng_state)
        print("Restored random number generator states")
    return checkpoint["epoch"]


def _restore(origin, what, load, state):
    try:
        load(state)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        raise _unfit(origin, what, " ".join(str(error).split()) or type(error).__name__) from error


def _check_same_types(origin, what, state, current):
    """A state dict whose entries differ in type from the live object's (``load_state_dict`` of
    schedulers copies anything, and the next step fails)."""
    if not isinstance(state, dict):
        raise _unfit(origin, what, f"a {type(state).__name__}, not a dict")
    for key, value in current.items():
        number = (int, float)
        if key in state and not isinstance(state[key], type(value)) and not (
                isinstance(value, number) and isinstance(state[key], number) and not isinstance(state[key], bool)):
            raise _unfit(origin, what, f"{key} is {state[key]!r}, where a {type(value).__name__} belongs")


def _unfit(origin, what, reason):
    return CheckpointError(f'cannot resume from checkpoint "{origin}": its {what} does not fit '
                           f"({reason}); train again in a new --output-dir")


def resume_from_checkpoint(fdir, model, optimizer=None, scheduler=None):
    """Restore the latest checkpoint of the model folder ``fdir`` (Dassl's API); return the
    epoch to start from. Reads upstream Dassl's checkpoints and ours (which may hold the
    learned tensors only)."""
    checkpoint = read_latest_checkpoint(fdir)
    load_state_dict_leniently(model, checkpoint["state_dict"])
    print("Loaded model weights")
    start_epoch = restore_training_state(checkpoint, optimizer, scheduler)
    print(f"Previous epoch: {start_epoch}")
    return start_epoch


def get_rng_state():
    """Python, NumPy and torch RNG states as tensors / plain data (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached_gaussian),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state):
    python_state = state["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    kind, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_pretrained_weights(model, weight_path):
    """Copy the weights of ``weight_path`` whose names and shapes match into ``model``."""
    checkpoint = load_checkpoint(weight_path)
    state_dict = checkpoint.get("state_dict", checkpoint)
    state_dict = _strip_module_prefix(state_dict)
    model_dict = model.state_dict()
    matched, discarded = OrderedDict(), []
    for key, value in state_dict.items():
        if key in model_dict and model_dict[key].size() == value.size():
            matched[key] = value
        else:
            discarded.append(key)
    if not matched:
        raise CheckpointError(
            f'No weight in "{weight_path}" matches the model by name and shape: '
            "check that the file belongs to this architecture"
        )
    model_dict.update(matched)
    model.load_state_dict(model_dict)
    print(f'Loaded pretrained weights from "{weight_path}"')
    if discarded:
        print(f"Keys discarded (missing in the model or of another shape): {discarded}")


def count_num_param(model=None, params=None):
    """Number of elements in ``model``'s parameters (or in the iterable ``params``)."""
    if model is not None:
        return sum(p.numel() for p in model.parameters())
    if params is not None:
        return sum(p.numel() for p in params)
    raise ValueError("count_num_param() needs model or params")

