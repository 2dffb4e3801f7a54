"""The training loop and its hooks (Dassl's TrainerBase / SimpleTrainer / TrainerX).

A trainer overrides ``build_model`` and ``forward_backward`` (and, if needed, the batch parsing
and inference hooks); the loop, checkpoints, LR stepping, evaluation, mixed precision, early
stopping and best-validation model selection live here once.
"""
import contextlib
import datetime
import hashlib
import io
import os
import os.path as osp
import sys
import time
import uuid
from collections import OrderedDict

import numpy as np
import torch
from tqdm import tqdm

from dassl.config import ConfigError
from dassl.data import DataManager
from dassl.data.datasets import DatasetError
from dassl.config.identity import evaluated_model
from dassl.engine.resume import resume_directory
from dassl.evaluation import ClassSubset, build_evaluator
from dassl.utils import (
    AverageMeter,
    CheckpointError,
    CheckpointNotFoundError,
    MetricMeter,
    UserError,
    atomic_write,
    console_stream,
    epoch_checkpoints,
    get_rng_state,
    latest_checkpoint_path,
    load_checkpoint,
    load_state_dict_leniently,
    mkdir_if_missing,
    read_latest_checkpoint,
    read_model_checkpoint,
    restore_training_state,
    save_checkpoint,
    write_json,
)
from dassl.utils.download import file_digest
from dassl.utils.run_files import (
    BEST_MODEL_NAME,
    LOG_FILE,
    RESULTS_FILE,
    TRAIN_END_MESSAGE,
    epoch_checkpoint_name,
)

PRECISIONS = ("fp16", "bf16", "fp32", "amp")
# Environment variable: "0" keeps fp16 / amp configs in fp32 on a CPU with native bf16.
CPU_BF16_VARIABLE = "CPU_BF16"


def cpu_has_native_bf16():
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16 weights run
    about twice as fast as fp32; elsewhere bf16 is emulated and slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)
FINAL_MODELS = ("last_step", "best_val")
# Buffers that depend on the class names of the evaluated split; never restored from a checkpoint.
CLASSNAME_DEPENDENT_KEYS = ("token_prefix", "token_suffix")


def _as_list(names):
    return [names] if isinstance(names, str) else list(names)


def _folder_listing(folder):
    if not osp.isdir(folder):
        return "does not exist"
    return f"holds {', '.join(sorted(os.listdir(folder))) or 'nothing'}"


def _describe_missing_model(directory, model_path):
    """Why ``model_path`` (under the run folder ``directory``) cannot be loaded: what the run
    folder and the model's sub-folder hold instead."""
    model_folder = osp.dirname(model_path)
    lines = [f'model not found at "{model_path}"',
             f'--model-dir "{directory}" {_folder_listing(directory)}']
    if osp.isdir(directory):
        lines.append(f'"{model_folder}" {_folder_listing(model_folder)}')
    lines.append("Pass --model-dir of a training run of this trainer (the folder holding "
                 f"{osp.basename(model_folder)}/) and --load-epoch of an epoch saved there.")
    return "\n".join(lines)


class TrainerBase:
    """Model registry, checkpointing, LR stepping and the epoch loop."""

    def __init__(self):
        self._models = OrderedDict()
        self._optims = OrderedDict()
        self._scheds = OrderedDict()
        self._writer = None
        self.scaler = None
        self.should_stop = False
        # Epoch count of the latest checkpoint saved only so that a killed run can resume (see
        # SimpleTrainer.save_epoch_checkpoint); removed once a newer one exists.
        self._rolling_epoch = None

    def register_model(self, name="model", model=None, optim=None, sched=None):
        if self.__dict__.get("_models") is None:
            raise AttributeError("Call super().__init__() before register_model()")
        if name in self._models:
            raise KeyError(f'A model named "{name}" is already registered')
        if model is None:
            raise ValueError(f'register_model("{name}") got model=None')
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched

    def get_model_names(self, names=None):
        registered = list(self._models.keys())
        if names is None:
            return registered
        names = _as_list(names)
        for name in names:
            if name not in registered:
                raise KeyError(f'No model named "{name}"; registered: {registered}')
        return names

    # ------------------------------------------------------------------ checkpoints
    def state_dict_to_save(self, name):
        """What ``save_model`` writes for model ``name`` (override to save fewer tensors)."""
        return self._models[name].state_dict()

    def load_state_dict_into(self, name, state_dict, epoch):
        """Put a checkpoint's ``state_dict`` into model ``name`` (override for stricter rules)."""
        return load_state_dict_leniently(self._models[name], state_dict, name)

    def _engine_state(self, rolling=False):
        """Loop state beyond the weights that a resumed run needs to continue identically."""
        state = {"rng_state": get_rng_state(), "rolling": rolling}
        state["best_result"] = float(getattr(self, "best_result", -np.inf))
        state["epochs_without_improvement"] = getattr(self, "epochs_without_improvement", 0)
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name="",
                   rolling=False):
        """Write one checkpoint per registered model to ``directory/<name>/``.

        The dict holds upstream's keys (state_dict, epoch, optimizer, scheduler, val_result) plus
        ``engine_state`` (RNG states, early-stopping counters, AMP scaler) for exact resuming;
        ``rolling`` marks a checkpoint kept only until the next epoch's (see save_epoch_checkpoint).
        """
        engine_state = self._engine_state(rolling)
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            checkpoint = {
                "state_dict": self.state_dict_to_save(name),
                "epoch": epoch + 1,
                "optimizer": optim.state_dict() if optim is not None else None,
                "scheduler": sched.state_dict() if sched is not None else None,
                "val_result": val_result,
                "engine_state": engine_state,
                # The CLIP weights trained with, so an evaluation with others can say so.
                "clip_sha256": self.clip_sha256,
                # The training run, so that an evaluation records which run it scored.
                "run_id": self.run_id,
            }
            save_checkpoint(checkpoint, osp.join(directory, name), is_best=is_best, model_name=model_name)

    def resume_model_if_exist(self, directory):
        """Continue from the latest checkpoint in ``directory``; return the epoch to start at.

        Each model's latest checkpoint is the one its ``checkpoint`` pointer names, else its
        highest ``model.pth.tar-N`` (``latest_checkpoint_path``, the rule of ``holds_checkpoint``)."""
        names = self.get_model_names()
        if any(latest_checkpoint_path(osp.join(directory, name)) is None for name in names):
            print("No checkpoint found, train from scratch")
            return 0
        print(f'Found checkpoint at "{directory}" (will resume training)')
        start_epoch, engine_state = 0, None
        for name in names:
            checkpoint = read_latest_checkpoint(osp.join(directory, name))
            self.load_state_dict_into(name, checkpoint["state_dict"], checkpoint["epoch"])
            start_epoch = restore_training_state(checkpoint, self._optims[name], self._scheds[name],
                                                 latest_checkpoint_path(osp.join(directory, name)))
            engine_state = checkpoint.get("engine_state")
            if engine_state:
                self._restore_loop_state(engine_state)
            if self._is_output_dir(directory) and checkpoint.get("run_id"):
                self.run_id = checkpoint["run_id"]  # the same run, continued
            print(f"Resumed {name} at epoch {start_epoch}")
        if self._is_output_dir(directory):
            if engine_state and engine_state.get("rolling"):
                self._rolling_epoch = start_epoch
            self._remove_older_rolling_checkpoints(start_epoch)
        return start_epoch

    def _remove_older_rolling_checkpoints(self, start_epoch):
        """Remove rolling checkpoints older than the one resumed from: a kill between saving an
        epoch and removing the previous rolling one leaves that one behind."""
        for name in self.get_model_names():
            for epoch, path in sorted(epoch_checkpoints(osp.join(self.output_dir, name)).items()):
                if epoch < start_epoch and self._is_rolling(path):
                    os.remove(path)
                    print(f"Removed {path}, a rolling checkpoint left by an interrupted run")

    @staticmethod
    def _is_rolling(path):
        """Whether an older checkpoint is a rolling one; an unreadable one is kept, with a
        warning, and does not stop the run from resuming from its good latest checkpoint."""
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as error:
            print(f"Warning: {error}; kept (this run resumes from a later checkpoint)")
            return False
        return isinstance(checkpoint, dict) and bool((checkpoint.get("engine_state") or {}).get("rolling"))

    def _is_output_dir(self, directory):
        # A rolling checkpoint is removed only from the folder this run writes to, never from
        # another run's folder that it resumed from.
        output_dir = getattr(self, "output_dir", None)
        return output_dir is not None and osp.abspath(directory) == osp.abspath(output_dir)

    def _restore_loop_state(self, state):
        """The early-stopping counters and AMP scaler of ``engine_state`` (the RNG states are
        restored by ``restore_training_state``)."""
        self.best_result = state["best_result"]
        self.epochs_without_improvement = state["epochs_without_improvement"]
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def _checkpoint_file(self, directory, name, epoch):
        """The file ``load_model`` reads: epoch N, else the best model, else the latest epoch
        (the one the ``checkpoint`` pointer names, else the highest ``model.pth.tar-N``, as in
        released weights that come without the pointer)."""
        folder = osp.join(directory, name)
        if epoch is not None:
            return osp.join(folder, epoch_checkpoint_name(epoch))
        best = osp.join(folder, BEST_MODEL_NAME)
        if osp.exists(best):
            return best
        latest = latest_checkpoint_path(folder)
        if latest is None:
            return best
        print(f"Note: no {BEST_MODEL_NAME} in {folder}; loading the latest, {latest}")
        return latest

    def load_model(self, directory, epoch=None):
        """Load each registered model from ``directory/<name>/``: ``model.pth.tar-<epoch>``, or
        ``model-best.pth.tar`` (falling back to the latest checkpoint) when ``epoch`` is None."""
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        for name in self.get_model_names():
            model_path = self._checkpoint_file(directory, name, epoch)
            if not osp.exists(model_path):
                raise CheckpointNotFoundError(_describe_missing_model(directory, model_path))
            checkpoint = read_model_checkpoint(model_path)
            state_dict = {
                key: value
                for key, value in checkpoint["state_dict"].items()
                if key.rsplit(".", 1)[-1] not in CLASSNAME_DEPENDENT_KEYS
            }
            loaded_epoch = checkpoint["epoch"]
            val_result = checkpoint.get("val_result")
            note = f", val_result={val_result:.1f}" if isinstance(val_result, (int, float)) else ""
            print(f'Load {model_path} to {name} (epoch={loaded_epoch}{note})')
            self._check_clip_weights(checkpoint, model_path)
            self.load_state_dict_into(name, state_dict, loaded_epoch)
            self.loaded_model_dir = directory
            self.loaded_epoch = loaded_epoch
            self.loaded_best = osp.basename(model_path) == BEST_MODEL_NAME
            self.model_run_id = checkpoint.get("run_id")
            self.loaded_checkpoints[name] = file_digest(model_path, "sha256")

    @property
    def clip_sha256(self):
        """The SHA-256 of this run's CLIP file, from the run identity train.py sets (None
        without one)."""
        return (self.run_identity or {}).get("clip_sha256")

    def _check_clip_weights(self, checkpoint, model_path):
        """Refuse a checkpoint trained with other CLIP weights than this run loads (ours record
        their fingerprint), unless TEST.ALLOW_OTHER_CLIP asks for it; a checkpoint of another
        codebase gets a note."""
        current, trained = self.clip_sha256, checkpoint.get("clip_sha256")
        self.model_clip_sha256 = trained
        if current is None:
            return
        if trained is None:
            print(f"Note: {model_path} does not record the CLIP weights it was trained with "
                  f"(a checkpoint of another codebase?); evaluating with CLIP SHA-256 {current}")
        elif trained != current and not self.cfg.TEST.ALLOW_OTHER_CLIP:
            raise UserError(
                f"{model_path} was trained with the CLIP weights of SHA-256 {trained}, but "
                f"MODEL.BACKBONE.NAME ({self.cfg.MODEL.BACKBONE.NAME}) has SHA-256 {current}: "
                "give the training's CLIP file, or add TEST.ALLOW_OTHER_CLIP True to score the "
                "checkpoint on other weights (a setting of its own in the tables)")
        elif trained != current:
            print(f"WARNING: {model_path} was trained with the CLIP weights of SHA-256 {trained}, "
                  f"but MODEL.BACKBONE.NAME ({self.cfg.MODEL.BACKBONE.NAME}) has SHA-256 "
                  f"{current} (TEST.ALLOW_OTHER_CLIP): the numbers are those of the checkpoint "
                  "on other CLIP weights")

    # ------------------------------------------------------------------ modes, LR
    def set_model_mode(self, mode="train", names=None):
        for name in self.get_model_names(names):
            if mode == "train":
                self._models[name].train()
            elif mode in ("test", "eval"):
                self._models[name].eval()
            else:
                raise KeyError(f'Unknown model mode "{mode}": use "train" or "eval"')

    def update_lr(self, names=None):
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def get_current_lr(self, names=None):
        name = self.get_model_names(names)[0]
        return self._optims[name].param_groups[0]["lr"]

    # ------------------------------------------------------------------ tensorboard
    def init_writer(self, log_dir):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            print(f"Initialize tensorboard (log_dir={log_dir})")
            self._writer = SummaryWriter(log_dir=log_dir)

    def close_writer(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write_scalar(self, tag, scalar_value, global_step=None):
        if self._writer is not None:
            self._writer.add_scalar(tag, scalar_value, global_step)

    # ------------------------------------------------------------------ loop
    def train(self, start_epoch, max_epoch):
        self.start_epoch = start_epoch
        self.max_epoch = max_epoch
        try:
            self.before_train()
            # self.epoch + 1 is always the number of epochs done, also when none ran.
            self.epoch = self.start_epoch - 1
            while self.epoch + 1 < self.max_epoch and not self.should_stop:
                self.epoch += 1
                self.before_epoch()
                self.run_epoch()
                self.after_epoch()
            self.after_train()
        finally:
            # Also when training fails: the writer holds an open event file.
            self.close_writer()

    def before_train(self):
        pass

    def after_train(self):
        pass

    def before_epoch(self):
        pass

    def after_epoch(self):
        pass

    def run_epoch(self):
        raise NotImplementedError

    def test(self, split=None):
        raise NotImplementedError

    def parse_batch_train(self, batch):
        raise NotImplementedError

    def parse_batch_test(self, batch):
        raise NotImplementedError

    def forward_backward(self, batch):
        raise NotImplementedError

    def model_inference(self, input):
        raise NotImplementedError

    # ------------------------------------------------------------------ optimisation step
    def autocast(self):
        """Context for the forward pass: autocast under AMP, nothing otherwise."""
        if getattr(self, "precision", "fp32") == "amp":
            return torch.autocast(device_type=self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    def model_zero_grad(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def detect_anomaly(self, loss):
        if not torch.isfinite(loss).all():
            raise FloatingPointError(
                "Loss is infinite or NaN! With PREC fp16 try amp or fp32, or lower OPTIM.LR"
            )

    def model_backward(self, loss):
        self.detect_anomaly(loss)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def model_update(self, names=None):
        for name in self.get_model_names(names):
            optim = self._optims[name]
            if optim is None:
                continue
            if self.scaler is not None:
                self.scaler.step(optim)
            else:
                optim.step()
        if self.scaler is not None:
            self.scaler.update()

    def model_backward_and_update(self, loss, names=None):
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)


def new_run_id():
    return uuid.uuid4().hex[:16]


def data_hash(items):
    """A short hash of which images, with which class names, a split holds: order-free and
    independent of where the dataset lies (paths relative to the images' common folder)."""
    paths = [osp.abspath(item.impath) for item in items]
    top = osp.commonpath(paths) if len(paths) > 1 else osp.dirname(paths[0])
    lines = sorted(f"{osp.relpath(path, top)}\t{item.classname}"
                   for path, item in zip(paths, items))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


class SimpleTrainer(TrainerBase):
    """A trainer with one labelled training loader, evaluation, and the config-driven hooks."""

    def __init__(self, cfg):
        super().__init__()
        self.check_cfg(cfg)
        self.cfg = cfg
        if torch.cuda.is_available() and cfg.USE_CUDA:
            self.device = torch.device("cuda")
        else:
            self.device = torch.device("cpu")
        self.precision = self._resolve_precision(cfg)
        if self.precision == "amp":
            self.scaler = torch.amp.GradScaler(self.device.type)

        self.start_epoch = self.epoch = 0
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.output_dir = cfg.OUTPUT_DIR
        self.best_result = -np.inf
        self.epochs_without_improvement = 0
        self.loaded_model_dir = None
        self.loaded_epoch = None
        self.loaded_best = False
        self.model_clip_sha256 = None
        # A run's own id (kept by its checkpoints across resumes); the training run and the
        # checkpoint files (SHA-256 by model name) that an evaluation scored.
        self.run_id = new_run_id()
        self.model_run_id = None
        self.loaded_checkpoints = {}
        # Set by train.py (dassl.config.identity.run_identity); written to results.json.
        self.run_identity = None
        # Set by train.py --subset-output: [{"subset": "base" | "new", "output_dir", "fields",
        # "identity"}], tests of a class subset filed from the all-class test (_class_subsets).
        self.subset_runs = None

        self.build_data_loader()
        self.build_model()
        self.evaluator = build_evaluator(cfg, lab2cname=self.lab2cname, base_labels=self._open_world_base_labels())
        self._validating = False

    def _open_world_base_labels(self):
        """The dataset's base labels when the test scores base and new classes apart: in the
        open-world protocol, or in a plain run (no RUN.PROTOCOL) over all classes. Cross-dataset
        and domain-generalisation tests (RUN.PROTOCOL xd / dg) also see all classes, but were
        trained on another dataset's classes, so base / new accuracies would mean nothing."""
        protocol = self.cfg.RUN.PROTOCOL
        plain_run_over_all_classes = not protocol and self.cfg.DATASET.SUBSAMPLE_CLASSES == "all"
        if protocol == "openworld" or plain_run_over_all_classes:
            return getattr(self.dm.dataset, "base_labels", None)
        return None

    def check_cfg(self, cfg):
        """Override to reject configs the trainer cannot run (called before anything is built)."""
        if cfg.TEST.FINAL_MODEL not in FINAL_MODELS:
            raise ConfigError(f'TEST.FINAL_MODEL "{cfg.TEST.FINAL_MODEL}" must be one of {list(FINAL_MODELS)}')

    def _resolve_precision(self, cfg):
        """``TRAINER.<NAME>.PREC`` (fp16 | bf16 | fp32 | amp; fp32 when the trainer has no such
        key). bf16 and fp16 store the frozen weights in that type (the trainer does it); amp
        autocasts over fp32 weights.

        fp16 and amp need a GPU. On CPU they run bf16 when the CPU computes it natively (and
        CPU_BF16 is not "0"), else fp32, and say so: autocast over frozen fp32 weights is never
        used on CPU (it re-casts every weight at every call, slower than fp32).
        """
        name = cfg.TRAINER.NAME.upper()
        section = cfg.TRAINER.get(name)
        precision = section.get("PREC", "fp32") if section is not None else "fp32"
        if precision not in PRECISIONS:
            raise ConfigError(
                f'TRAINER.{name}.PREC "{precision}" must be one of {list(PRECISIONS)}'
            )
        if self.device.type != "cpu":
            return precision
        native_bf16 = cpu_has_native_bf16()
        if precision in ("fp16", "amp"):
            if native_bf16 and os.environ.get(CPU_BF16_VARIABLE) != "0":
                print(f"Note: PREC {precision} needs a GPU; this CPU computes bf16 natively, so "
                      f"the run uses bf16 weights (set {CPU_BF16_VARIABLE}=0 for fp32)")
                return "bf16"
            print(f"Note: PREC {precision} needs a GPU; running in fp32 on CPU")
            return "fp32"
        if precision == "bf16" and not native_bf16:
            print("Note: this CPU has no native bf16 (AVX512-BF16 / AMX): PREC bf16 runs "
                  "emulated, slower than fp32")
        return precision

    def build_data_loader(self):
        """Create the DataManager; override to pass custom transforms or a dataset wrapper."""
        self.use_data_manager(DataManager(self.cfg))

    def use_data_manager(self, dm):
        """Take the loaders, class names and counts that the hooks read from ``dm``."""
        self.train_loader_x = dm.train_loader_x
        self.train_loader_u = dm.train_loader_u
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm

    def build_model(self):
        raise NotImplementedError(
            f"{type(self).__name__} must override build_model() and register its model(s) "
            "with self.register_model(name, model, optim, sched)"
        )

    def train(self):
        super().train(self.start_epoch, self.max_epoch)

    @property
    def selects_on_validation(self):
        """True when every epoch ends with a validation pass (early stopping / best_val)."""
        best_val = self.cfg.TEST.FINAL_MODEL == "best_val" and not self.cfg.TEST.NO_TEST
        return self.cfg.TRAIN.EARLY_STOPPING or best_val

    def before_train(self):
        if self.max_epoch < 1:
            raise ConfigError(f"OPTIM.MAX_EPOCH is {self.max_epoch}: training needs at least one epoch "
                              "(to evaluate a model without training, use --eval-only)")
        if self.selects_on_validation and self.val_loader is None:
            raise ConfigError(
                "TRAIN.EARLY_STOPPING / TEST.FINAL_MODEL best_val select the model on the "
                f"validation split, but dataset {self.cfg.DATASET.NAME} has none; turn them off "
                "(model selection on the test set would bias the reported accuracy)"
            )
        if self.selects_on_validation:
            self._check_validation_is_not_test()
        self.start_epoch = self.resume_model_if_exist(resume_directory(self.cfg))
        # A resumed run that had already stopped early does not train further.
        self.should_stop = self._patience_exhausted(self.start_epoch)
        writer_dir = osp.join(self.output_dir, "tensorboard")
        mkdir_if_missing(writer_dir)
        self.init_writer(writer_dir)
        self.time_start = time.time()

    def _check_validation_is_not_test(self):
        """Refuse to select the model on images that the final test scores (USERS.md #18)."""
        dataset = self.dm.dataset
        val_paths = {item.impath for item in dataset.val}
        leaked = val_paths.intersection(item.impath for item in dataset.test)
        if leaked:
            raise DatasetError(
                f"dataset {self.cfg.DATASET.NAME}: {len(leaked)} of its {len(val_paths)} validation "
                f'images are test images (e.g. "{min(leaked)}"), and TRAIN.EARLY_STOPPING / '
                "TEST.FINAL_MODEL best_val would select the model on them, biasing the reported "
                "accuracy. Turn model selection off with TEST.FINAL_MODEL last_step "
                "TRAIN.EARLY_STOPPING False, or give the dataset a validation split disjoint from "
                "its test split."
            )

    def after_train(self):
        print(TRAIN_END_MESSAGE)
        if not self.cfg.TEST.NO_TEST:
            if self.cfg.TEST.FINAL_MODEL == "best_val":
                print("Deploy the model with the best val performance")
                self.load_model(self._best_model_dir())
            else:
                print("Deploy the last-epoch model")
                self.loaded_model_dir = self.output_dir
                self.loaded_epoch = self.epoch + 1
                self.loaded_best = False
                self.model_clip_sha256 = self.clip_sha256
                self.model_run_id = self.run_id
                self.loaded_checkpoints = {
                    name: file_digest(path, "sha256") for name in self.get_model_names()
                    if osp.isfile(path := osp.join(self.output_dir, name,
                                                   epoch_checkpoint_name(self.loaded_epoch)))}
            self.test()
        elapsed = round(time.time() - self.time_start)
        print(f"Elapsed: {datetime.timedelta(seconds=elapsed)}")

    def _best_model_dir(self):
        """OUTPUT_DIR, or the RESUME folder when the best epoch came before the interruption."""
        name = self.get_model_names()[0]
        if self.cfg.RESUME and not osp.exists(osp.join(self.output_dir, name, BEST_MODEL_NAME)):
            return self.cfg.RESUME
        return self.output_dir

    def after_epoch(self):
        if self.selects_on_validation:
            self._validate_and_select()
        self.save_epoch_checkpoint()

    def save_epoch_checkpoint(self):
        """Save ``model.pth.tar-<epoch>`` after every epoch, so a killed run resumes where it was.

        Checkpoints of the epochs TRAIN.CHECKPOINT_FREQ asks for and of the final epoch (last or
        early-stopped) are kept. Any other epoch's checkpoint is rolling: it is removed as soon
        as the next epoch's is written (with Dassl's default CHECKPOINT_FREQ 0, upstream saves
        the final epoch only, and a run killed at epoch 43 of 500 restarts from scratch).
        """
        done = self.epoch + 1
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        requested = (freq > 0 and done % freq == 0) or done == self.max_epoch or self.should_stop
        self.save_model(self.epoch, self.output_dir, rolling=not requested)
        self._remove_rolling_checkpoint()
        self._rolling_epoch = None if requested else done

    def _remove_rolling_checkpoint(self):
        if self._rolling_epoch is None:
            return
        for name in self.get_model_names():
            path = osp.join(self.output_dir, name, epoch_checkpoint_name(self._rolling_epoch))
            if osp.exists(path):
                os.remove(path)

    def _validate_and_select(self):
        """Validate; keep the best model as model-best.pth.tar; stop early if due."""
        self._validating = True
        try:
            result = self.test(split="val")
        finally:
            self._validating = False
        # A result above the best resets the patience; one more than TRAIN.BEST_VAL_MIN_DELTA
        # above it becomes the best (and model-best), as in the BMIP authors' code.
        if result > self.best_result + self.cfg.TRAIN.BEST_VAL_MIN_DELTA:
            self.best_result = result
            self.epochs_without_improvement = 0
            if self.cfg.TEST.FINAL_MODEL == "best_val":
                self.save_model(self.epoch, self.output_dir, val_result=result, model_name=BEST_MODEL_NAME)
            return
        if result > self.best_result:
            self.epochs_without_improvement = 0
            return
        self.epochs_without_improvement += 1
        print(
            f"Validation accuracy has not improved for {self.epochs_without_improvement} "
            f"epoch(s) (best {self.best_result:.1f})"
        )
        if self._patience_exhausted(self.epoch + 1):
            patience = self.cfg.TRAIN.PATIENT_COUNT
            print(f"Early stopping: no improvement for TRAIN.PATIENT_COUNT={patience} epochs")
            self.should_stop = True

    def _patience_exhausted(self, epochs_done):
        return (
            self.cfg.TRAIN.EARLY_STOPPING
            and self.epochs_without_improvement >= self.cfg.TRAIN.PATIENT_COUNT
            and epochs_done >= self.cfg.TRAIN.EARLY_STOPPING_MIN_EPOCH
        )

    @torch.no_grad()
    def test(self, split=None):
        """Evaluate on ``split`` (default TEST.SPLIT); returns the first metric (accuracy).

        Outside the per-epoch validation pass, also writes ``results.json`` to OUTPUT_DIR.
        """
        self.set_model_mode("eval")
        self.evaluator.reset()
        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
        else:
            split = "test"
            data_loader = self.test_loader
        print(f"Evaluate on the *{split}* set")
        subsets = [] if self._validating else self._class_subsets()
        for batch in tqdm(data_loader, file=console_stream(), leave=False):
            input, label = self.parse_batch_test(batch)
            output = self.model_inference(input)
            self.evaluator.process(output, label)
            for subset, _ in subsets:
                subset.process(output, label)
        # The subsets' results first: a log parser reads the last "* accuracy" line as the run's.
        for subset, run in subsets:
            self._file_subset_run(split, subset, run)
        results = self.evaluator.evaluate()
        for key, value in results.items():
            self.write_scalar(f"{split}/{key}", value, self.epoch)
        if not self._validating:
            self.write_results_json(split, results)
        return list(results.values())[0]

    @classmethod
    def scores_classes_independently(cls, cfg):
        """True when a class's logit does not depend on the other candidate classes, so a test
        of a class subset equals the all-class test's logits restricted to it (train.py
        --subset-output). Trainers that mix classes (e.g. a statistic over all class prompts)
        return False."""
        return True

    def _class_subsets(self):
        """(ClassSubset, run) for each of ``subset_runs`` (set by train.py --subset-output): the
        test of the base or new classes alone, scored from this all-class test's logits."""
        runs = self.subset_runs or []
        base = getattr(self.dm.dataset, "base_labels", None)
        if runs and base is None:
            raise UserError("--subset-output needs a test over all classes of a base-to-new "
                            "split (DATASET.SUBSAMPLE_CLASSES all, RUN.PROTOCOL openworld)")
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.TEST.COMPUTE_CMAT = False  # the confusion matrix file is the all-class test's
        subsets = []
        for run in runs:
            labels = sorted(base) if run["subset"] == "base" else sorted(set(self.lab2cname) - set(base))
            evaluator = build_evaluator(cfg, lab2cname={index: self.lab2cname[label]
                                                        for index, label in enumerate(labels)})
            subsets.append((ClassSubset(evaluator, labels), run))
        return subsets

    def _file_subset_run(self, split, subset, run):
        """The results.json and log.txt a separate test of the subset would have written."""
        print(f"The {run['subset']} classes alone (filed in {run['output_dir']}):")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            results = subset.evaluator.evaluate()
        print(printed.getvalue(), end="")
        mkdir_if_missing(run["output_dir"])
        log = osp.join(self.output_dir, LOG_FILE)
        sys.stdout.flush()
        earlier = open(log).read() if osp.isfile(log) else ""
        with atomic_write(osp.join(run["output_dir"], LOG_FILE)) as f:
            f.write(f"One pass: the {run['subset']} classes scored from the all-class test in "
                    f"{self.output_dir}, whose log up to that test follows.\n{earlier}"
                    f"{printed.getvalue()}")
        labels = set(subset.labels)
        items = [item for item in self.dm.dataset.test if item.label in labels]
        self.write_results_json(split, results, subset.evaluator, run, items)

    def write_results_json(self, split, results, evaluator=None, subset_run=None, items=None):
        """Write the final test's numbers and the run's identity to OUTPUT_DIR/results.json
        (SUBSET_RUN: those of a class subset, to its own folder, see _class_subsets; ITEMS: the
        images it scored), with what ties the numbers to their data and model: the hash of the
        evaluated images (test_hash), the run's id (a training run's, kept across resumes; an
        evaluation's own) and, for an evaluation, the training run and checkpoints it loaded."""
        cfg = self.cfg
        subset_run = subset_run or {}
        record = {
            "protocol": cfg.RUN.PROTOCOL,
            "dataset": cfg.DATASET.NAME,
            # The dataset's own name (a UserDataset's folder or SPLIT_NAME), else its registry name.
            "dataset_name": getattr(self.dm.dataset, "name", None) or cfg.DATASET.NAME,
            "dataset_config": cfg.RUN.DATASET_CONFIG_NAME,
            "trainer": cfg.TRAINER.NAME,
            "config": cfg.RUN.CONFIG_NAME,
            "seed": cfg.SEED,
            "split": split,
            "subsample_classes": cfg.DATASET.SUBSAMPLE_CLASSES,
            # The shots the sample holds (fewer than asked when the classes have fewer images).
            "num_shots": getattr(self.dm.dataset, "num_shots_used", None) or cfg.DATASET.NUM_SHOTS,
            "num_shots_requested": cfg.DATASET.NUM_SHOTS,
            "backbone": cfg.MODEL.BACKBONE.NAME,
            **subset_run.get("fields", {}),
        }
        evaluator = evaluator or self.evaluator
        if hasattr(evaluator, "total"):
            record["total"] = evaluator.total
            record["correct"] = evaluator.correct
        record.update((key, float(value)) for key, value in results.items())
        if hasattr(evaluator, "per_class_accuracy"):
            record["per_class_accuracy"] = {
                evaluator.classname(label): accuracy
                for label, (_, _, accuracy) in evaluator.per_class_accuracy().items()
            }
        if getattr(evaluator, "_base_labels", None) is not None:
            (_, num_base), (_, num_new) = evaluator.base_new_counts()
            record["num_base_images"] = num_base
            record["num_new_images"] = num_new
        record["fewshot_hash"] = getattr(self.dm.dataset, "fewshot_hash", None)
        record["dataset_hash"] = getattr(self.dm.dataset, "dataset_hash", None)
        evaluated = items if items is not None else self.dm.dataset.test if split == "test" else None
        record["test_hash"] = data_hash(evaluated) if evaluated else None
        record["run_id"] = self.run_id if not (cfg.RUN.EVAL_ONLY or subset_run) else new_run_id()
        record["lineage"] = {"model_run_id": self.model_run_id,
                             "checkpoints": dict(self.loaded_checkpoints),
                             "model_dir": (osp.abspath(self.loaded_model_dir)
                                           if self.loaded_model_dir else None)}
        record["model_dir"] = self.loaded_model_dir
        record["load_epoch"] = self.loaded_epoch
        record["final_model"] = cfg.TEST.FINAL_MODEL
        if self.run_identity is not None:
            record["identity"] = {**self.run_identity, **subset_run.get("identity", {}),
                                  "model": evaluated_model(self.loaded_epoch, self.loaded_best)}
            record["model_clip_sha256"] = self.model_clip_sha256
        record["timestamp"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        path = osp.join(subset_run.get("output_dir") or self.output_dir, RESULTS_FILE)
        write_json(record, path)
        print(f"Results written to {path}")

    def model_inference(self, input):
        return self.model(input)

    def parse_batch_test(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)


class TrainerX(SimpleTrainer):
    """Supervised training on the labelled loader ``train_loader_x``."""

    def run_epoch(self):
        self.set_model_mode("train")
        losses = MetricMeter()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        self.num_batches = len(self.train_loader_x)

        end = time.time()
        for batch_idx, batch in enumerate(self.train_loader_x):
            self.batch_idx = batch_idx
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(batch)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)

            meet_freq = (self.batch_idx + 1) % self.cfg.TRAIN.PRINT_FREQ == 0
            if meet_freq or self.num_batches < self.cfg.TRAIN.PRINT_FREQ:
                self._print_progress(batch_time, data_time, losses)
            n_iter = self.epoch * self.num_batches + self.batch_idx
            for name, meter in losses.meters.items():
                self.write_scalar("train/" + name, meter.avg, n_iter)
            self.write_scalar("train/lr", self.get_current_lr(), n_iter)
            end = time.time()

    def _print_progress(self, batch_time, data_time, losses):
        remaining = self.num_batches - self.batch_idx - 1
        remaining += (self.max_epoch - self.epoch - 1) * self.num_batches
        eta = datetime.timedelta(seconds=int(batch_time.avg * remaining))
        print(
            f"epoch [{self.epoch + 1}/{self.max_epoch}] "
            f"batch [{self.batch_idx + 1}/{self.num_batches}] "
            f"time {batch_time.val:.3f} ({batch_time.avg:.3f}) "
            f"data {data_time.val:.3f} ({data_time.avg:.3f}) "
            f"{losses} "
            f"lr {self.get_current_lr():.4e} "
            f"eta {eta}"
        )

    def parse_batch_train(self, batch):
        input = batch["img"].to(self.device)
        label = batch["label"].to(self.device)
        domain = batch["domain"].to(self.device)
        return input, label, domain
