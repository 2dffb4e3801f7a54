"""The paper's evaluation protocols, written once.

What the protocol scripts, run_all.sh and parse_test_res.py must agree on lives here: the dataset
lists, the trainers with their default configs, the output-folder layout (MaPLe's, SPEC.md §3, so
existing output trees and ours sit side by side), what a finished run looks like, and the
train.py command of every step.

    python -m scripts.protocols TRAINER SCRIPT ARGS... [KEY VALUE ...]

is what each `scripts/<trainer>/<script>.sh` runs; scripts/sweep.py builds sweeps from the same
pieces. The environment it reads:
    DATA        dataset root (required)
    OUTPUT      output root (default: output)
    CFG         config name (configs/trainers/<TRAINER>/<CFG>.yaml) instead of the default
    SHOTS       shots per class (default: 16)
    SOURCE      xd_test: the xd_train source whose model is tested (default: imagenet)
    TAG         a name for the config folder of runs with other settings (default: a short form
                of the overrides that change training or evaluation)
    LOAD_EPOCH  evaluate this epoch's checkpoint instead of the last (or best-validation) one,
                into a folder of its own (<CFG>_epoch<N>)
    FORCE=1     run again even when finished, from scratch, in a staging folder (seed<S>.staging)
                that replaces the run folder only once it finished: a failure leaves the
                previous results as they were
    PYTHON      the interpreter of the .sh wrappers (default: python)

A run's identity (dassl/config/identity.py) is everything that changes its numbers; results.json
records it. The folder says the plain case in MaPLe's layout: shots_<K> is the resolved number of
shots (SHOTS, or a DATASET.NUM_SHOTS override); runs with overrides that change training or
evaluation get the config folder <CFG>_<TAG>; an xd_test of a model trained on another source
than ImageNet lies under evaluation_from_<source>/. A finished run whose identity is the one
requested is skipped; one whose identity differs stops the script with the differences; an
unfinished training run resumes when its folder holds a checkpoint, else it starts afresh. The
base / new / open-world tests of one model that all need running (reproduce.sh, sweeps) are done
in one pass over the test images (one_pass). An evaluation counts as finished only while its result
is newer than the model it evaluated: after the training run is trained again (FORCE=1), its
evaluations run again too. Released weights (reproduce.sh, reproduce_xd.sh) are
evaluated into folders of their own, the config folder named <CFG>_released, so they never
overwrite or mix with the runs trained here.
"""
import contextlib
import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import yaml

from dassl.config import get_cfg_default
import dassl.utils as dassl_utils  # its checkpoint helpers load torch on first use, not here
from dassl.utils.run_files import (
    BEST_MODEL_NAME,
    CONFIG_FILE,
    EPOCH_CHECKPOINT_PREFIX,
    LOCK_FILE,
    LOG_FILE,
    RESULTS_FILE,
    TRAIN_END_MESSAGE,
    remove_refused_run,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SHOTS = 16
SEEDS = (1, 2, 3)

# Dataset names are the stems of configs/datasets/<name>.yaml, the names the scripts take.
BASE2NEW_DATASETS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers",
                     "food101", "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
XD_SOURCE = "imagenet"
XD_TARGETS = tuple(name for name in BASE2NEW_DATASETS if name != XD_SOURCE)
DG_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")


DATASET_CONFIGS = REPO_ROOT / "configs" / "datasets"


USER_DATASET = "UserDataset"  # the registry name of users' own data (datasets/user_dataset.py)


@functools.cache
def _dataset_config(dataset):
    path = DATASET_CONFIGS / f"{dataset}.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def registry_name(dataset):
    """The DATASET.NAME of configs/datasets/<dataset>.yaml, or None without such a config."""
    return _dataset_config(dataset).get("DATASET", {}).get("NAME")


@functools.cache
def display_name(dataset):
    """The paper's column name of a dataset: the DATASET.NAME of configs/datasets/<dataset>.yaml
    (its registry name); for users' own data, the dataset's own name (SPLIT_NAME, or its
    folder's); `dataset` itself when there is no such config."""
    name = registry_name(dataset) or dataset
    if name == USER_DATASET:
        from yacs.config import CfgNode

        from datasets.user_dataset import UserDataset, extend_cfg

        cfg = CfgNode({"DATASET": CfgNode()})
        extend_cfg(cfg)
        cfg.DATASET.USER.update(_dataset_config(dataset)["DATASET"].get("USER") or {})
        return UserDataset.own_name(cfg)
    return name


@dataclass(frozen=True)
class TrainerSpec:
    """A trainer as the scripts run it: registry name and default configs."""
    name: str                  # TRAINER.NAME, also the trainer folder of the output layout
    config: str                # base-to-new / open-world config
    xd_config: str             # cross-dataset / domain-generalisation config
    config_folder: str = ""    # configs/trainers/<folder>/; the trainer's name when empty
    trains: bool = True        # ZeroshotCLIP has nothing to train: every step only evaluates

    @property
    def config_dir(self):
        return REPO_ROOT / "configs" / "trainers" / (self.config_folder or self.name)


# Keys are the folder names under scripts/.
TRAINERS = {
    "zsclip": TrainerSpec("ZeroshotCLIP", "vit_b16_ep50", "vit_b16_ep50", config_folder="CoOp",
                          trains=False),
    "coop": TrainerSpec("CoOp", "vit_b16_ep50", "vit_b16_ep50"),
    "cocoop": TrainerSpec("CoCoOp", "vit_b16_c4_ep10_batch1_ctxv1", "vit_b16_c4_ep10_batch1_ctxv1"),
    "vpt": TrainerSpec("VPT", "vit_b16_c2_ep5_batch4_4", "vit_b16_c2_ep5_batch4_4"),
    "ivlp": TrainerSpec("IVLP", "vit_b16_c2_ep5_batch4_2+2ctx", "vit_b16_c2_ep5_batch4_2+2ctx"),
    "maple": TrainerSpec("MaPLe", "vit_b16_c2_ep5_batch4_2ctx",
                         "vit_b16_c2_ep5_batch4_2ctx_cross_datasets"),
    "bmip": TrainerSpec("BMIP", "BMIP_ctx2_dp9_lr2", "BMIP_ctx2_dp9_lr2_cross_datasets"),
    # Regularisers over a prompting (TRAINER.<METHOD>.PROMPTING): over BMIP with
    # CFG=vit_b16_c2_ep20_batch4_4ctx_bmip / CFG=coprompt_bmip.
    "promptsrc": TrainerSpec("PromptSRC", "vit_b16_c2_ep20_batch4_4+4ctx",
                             "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets"),
    "coprompt": TrainerSpec("CoPrompt", "coprompt", "coprompt"),
}


@dataclass(frozen=True)
class Step:
    """One run of a protocol: which classes it sees, whether it trains, where its model is."""
    protocol: str              # RUN.PROTOCOL (xd_test becomes "dg" on an ImageNet variant)
    subsample: str             # DATASET.SUBSAMPLE_CLASSES
    trains: bool
    model_step: str = ""       # the step whose run folder holds the model this step evaluates
    cross_dataset: bool = False  # uses the trainer's xd config and the cross-dataset layout


STEPS = {
    "base2new_train": Step("base2new", "base", trains=True),
    "base2new_test": Step("base2new", "new", trains=False, model_step="base2new_train"),
    "openworld_test": Step("openworld", "all", trains=False, model_step="base2new_train"),
    # Released weights evaluated on the base classes (reproduce.sh): MaPLe's test_base folder.
    "base2new_test_base": Step("base2new", "base", trains=False),
    "xd_train": Step("xd", "all", trains=True, cross_dataset=True),
    "xd_test": Step("xd", "all", trains=False, model_step="xd_train", cross_dataset=True),
}

# output/<a>/<b>/<dataset>/shots_<K>/<TRAINER>/<CFG>/seed<S>/ for the class-split steps.
CLASS_SPLIT_FOLDERS = {
    "base2new_train": ("base2new", "train_base"),
    "base2new_test_base": ("base2new", "test_base"),
    "base2new_test": ("base2new", "test_new"),
    "openworld_test": ("openworld", "test_all"),
}
EVALUATION_FOLDER = "evaluation"
# xd_test of a model trained on another source than ImageNet: evaluation_from_<source>/...
EVALUATION_FROM_PREFIX = "evaluation_from_"
# Appended to the config folder of runs that evaluate released weights (reproduce.sh), so
# they sit beside, never inside, the runs of the same config trained here.
RELEASED_SUFFIX = "_released"


def protocol_of(step, dataset):
    """RUN.PROTOCOL of a step on a dataset: an xd_test on an ImageNet variant is "dg"."""
    if step == "xd_test" and dataset in DG_TARGETS:
        return "dg"
    return STEPS[step].protocol


class ProtocolError(Exception):
    """A mistake the user can fix; the message says how."""


@dataclass(frozen=True)
class Job:
    """One train.py run of a protocol. `dataset` is the source for xd_train, the target for xd_test."""
    trainer: str               # key of TRAINERS
    step: str                  # key of STEPS
    dataset: str
    seed: int
    config: str = ""           # the trainer's default for the step when empty
    shots: int = SHOTS
    source: str = XD_SOURCE    # cross-dataset source whose model xd_test evaluates
    overrides: tuple = ()      # trailing KEY VALUE pairs for train.py
    model_dir: str = ""        # released weights (reproduce); else the model_step's run folder
    tag: str = ""              # TAG: names the config folder of runs with other settings
    load_epoch: int = None     # LOAD_EPOCH: the epoch an evaluation loads (None: the default)

    @property
    def spec(self):
        return TRAINERS[self.trainer]

    @property
    def resolved_config(self):
        if self.config:
            return self.config
        return self.spec.xd_config if STEPS[self.step].cross_dataset else self.spec.config

    @property
    def released(self):
        """True when the job evaluates weights from outside the output tree (reproduce.sh)."""
        return bool(self.model_dir)

    @property
    def folder_tag(self):
        """The user's TAG, else a short form of the overrides that change training or
        evaluation; "" in the plain case."""
        return self.tag or overrides_tag(self.overrides)

    @property
    def epoch_requested(self):
        """LOAD_EPOCH where this job loads a model (evaluations of trained models), else None."""
        loads = self.evaluates_only and (self.released or self.model_job() is not None)
        return self.load_epoch if loads else None

    @property
    def run_tag(self):
        """RUN.TAG, part of the identity: the user's TAG, "released" for released weights."""
        return "+".join(name for name in (self.tag, "released" if self.released else "") if name)

    @property
    def config_folder(self):
        """The config's name in the output layout: <CFG>, then _<TAG> (runs with other
        settings), _epoch<N> (LOAD_EPOCH), _released (released weights)."""
        folder = self.resolved_config
        if self.folder_tag:
            folder += f"_{self.folder_tag}"
        if self.epoch_requested is not None:
            folder += f"_epoch{self.epoch_requested}"
        return folder + (RELEASED_SUFFIX if self.released else "")

    @property
    def protocol(self):
        return protocol_of(self.step, self.dataset)

    @property
    def evaluates_only(self):
        return not (STEPS[self.step].trains and self.spec.trains)

    def model_job(self):
        """The job whose run folder holds the model this one evaluates (None: nothing to load)."""
        step = STEPS[self.step]
        if not self.spec.trains or not step.model_step:
            return None
        dataset = self.source if step.cross_dataset else self.dataset
        return replace(self, step=step.model_step, dataset=dataset, model_dir="", load_epoch=None)


# ----------------------------------------------------------------------------- layout

def run_dir(output, job):
    """The run folder of a job (SPEC.md §3)."""
    output = Path(output)
    trainer, config, seed = job.spec.name, job.config_folder, f"seed{job.seed}"
    if job.step in CLASS_SPLIT_FOLDERS:
        return output.joinpath(*CLASS_SPLIT_FOLDERS[job.step], job.dataset, f"shots_{job.shots}",
                               trainer, config, seed)
    cross_config = f"{config}_{job.shots}shots"
    if job.step == "xd_train":
        return output / job.dataset / trainer / cross_config / seed
    evaluation = (EVALUATION_FOLDER if job.source == XD_SOURCE
                  else f"{EVALUATION_FROM_PREFIX}{job.source}")
    return output / evaluation / trainer / cross_config / job.dataset / seed


# Parts of a key dropped from the short form of an override (OPTIM.MAX_EPOCH -> max_epoch).
_GENERIC_KEY_PARTS = ("NAME", "DIR")
TAG_MAX_LENGTH = 48
_TAG = re.compile(r"[A-Za-z0-9.+-][A-Za-z0-9._+-]*")


def overrides_tag(overrides):
    """A short readable form of the overrides that change training or evaluation, e.g.
    "max_epoch-1+size-32x32" (the same rule as train.py's resume check and the run identity);
    cut with a hash of the whole beyond TAG_MAX_LENGTH characters; "" when there are none."""
    from dassl.config.identity import override_keys

    overrides = list(overrides)
    values = dict(zip(overrides[::2], overrides[1::2], strict=True))  # the last value wins
    parts = []
    for key in override_keys(overrides):
        names = key.split(".")
        name = names[-2] if names[-1] in _GENERIC_KEY_PARTS and len(names) > 1 else names[-1]
        parts.append(f"{name.lower()}-{_short_value(values[key])}")
    tag = "+".join(parts)
    if len(tag) > TAG_MAX_LENGTH:
        digest = hashlib.sha256(shlex.join(overrides).encode()).hexdigest()[:8]
        tag = f"{tag[:TAG_MAX_LENGTH - 9]}-{digest}"
    return tag


def _short_value(value):
    value = value.strip()
    if "/" in value or value.endswith((".pt", ".pth", ".tar", ".yaml")):
        value = Path(value).stem  # a path: its file name
    numbers = re.findall(r"-?[\d.]+", value) if value.startswith(("(", "[")) else ()
    if numbers:
        return "x".join(numbers)
    return re.sub(r"[^A-Za-z0-9.+-]", "", value) or "none"


@dataclass(frozen=True)
class RunKey:
    """What a run folder's path says about the run (the inverse of run_dir)."""
    step: str
    dataset: str
    trainer: str               # TRAINER.NAME as in the folder
    config: str                # the config folder's name (<CFG>_released for released weights)
    seed: int
    shots: int
    source: str = ""           # xd_test: the source dataset of the model (xd_train: its dataset)

    @property
    def protocol(self):
        return protocol_of(self.step, self.dataset)


_SEED = re.compile(r"seed(\d+)")
_SHOTS_FOLDER = re.compile(r"shots_(\d+)")
_CROSS_CONFIG = re.compile(r"(.+)_(\d+)shots")


def parse_run_dir(path):
    """RunKey of a run folder laid out by run_dir (or by the MaPLe / CoCoOp scripts), else None."""
    parts = Path(path).parts
    seed = _SEED.fullmatch(parts[-1]) if parts else None
    if seed is None:
        return None
    seed = int(seed.group(1))
    if len(parts) >= 5 and (parts[-5] == EVALUATION_FOLDER
                            or parts[-5].startswith(EVALUATION_FROM_PREFIX)):
        cross = _CROSS_CONFIG.fullmatch(parts[-3])
        source = parts[-5].removeprefix(EVALUATION_FROM_PREFIX) if parts[-5] != EVALUATION_FOLDER \
            else XD_SOURCE
        if cross:
            return RunKey("xd_test", parts[-2], parts[-4], cross.group(1), seed,
                          int(cross.group(2)), source)
    if len(parts) >= 7:
        shots = _SHOTS_FOLDER.fullmatch(parts[-4])
        for step, folders in CLASS_SPLIT_FOLDERS.items():
            if shots and tuple(parts[-7:-5]) == folders:
                return RunKey(step, parts[-5], parts[-3], parts[-2], seed, int(shots.group(1)))
    if len(parts) >= 4:
        cross = _CROSS_CONFIG.fullmatch(parts[-2])
        if cross:
            return RunKey("xd_train", parts[-4], parts[-3], cross.group(1), seed, int(cross.group(2)))
    return None


# ----------------------------------------------------------------------------- run results

CONSOLE_FILE = "console.txt"  # train.py's terminal output when a sweep runs jobs side by side
_METRIC_LINE = re.compile(r"^\* (accuracy|base_accuracy|new_accuracy|macro_f1|error): ([\d.eE+-]+)%$")
TEST_START_SIGNAL = "=> result"
EVAL_ONLY_LINE = "eval_only: True"


def read_log_metrics(log_file, test_log=None):
    """Metrics of the final test in a Dassl log.txt (the upstream parse_test_res.py rule).

    Only lines after the end signal count, and the last value of each metric wins: in a
    training log the signal is "Finish training" (so per-epoch validation results are
    ignored); in an evaluation-only log it is "=> result". test_log=None picks the signal
    from the log itself (train.py prints its arguments, "eval_only: True" among them), so
    forgetting --test-log no longer finds nothing, and an unfinished training log finds nothing.
    """
    lines = [line.strip() for line in Path(log_file).read_text(errors="replace").splitlines()]
    if test_log is None:
        test_log = TRAIN_END_MESSAGE not in lines and EVAL_ONLY_LINE in lines
    signal = TEST_START_SIGNAL if test_log else TRAIN_END_MESSAGE
    metrics, started = {}, False
    for line in lines:
        started = started or line == signal
        match = _METRIC_LINE.match(line) if started else None
        if match:
            metrics[match.group(1)] = float(match.group(2))
    return metrics


def result_file(folder):
    """The file a run folder's final numbers are read from: results.json, else log.txt (runs of
    the CoOp / MaPLe codebases); None when it has neither."""
    for name in (RESULTS_FILE, LOG_FILE):
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


def read_result_file(path, test_log=None):
    """The metrics in a results.json, or in a log.txt (see read_log_metrics for test_log)."""
    path = Path(path)
    if path.name == RESULTS_FILE:
        return read_results_json(path)
    return read_log_metrics(path, test_log)


def read_results_json(path):
    """The record in a results.json; {} (the run counts as unfinished) when the file cannot be
    read or its accuracy is not a number, which is reported on stderr."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        problem = str(error) if not isinstance(error, RecursionError) else "nested too deeply"
    else:
        accuracy = record.get("accuracy") if isinstance(record, dict) else None
        if (isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool)
                and 0 <= accuracy <= 100):
            return record
        problem = ("not a JSON object" if not isinstance(record, dict)
                   else f"its accuracy is {accuracy!r}, not a percentage")
    print(f"warning: {path} is unreadable ({problem}); its run counts as unfinished", file=sys.stderr)
    return {}


def read_run_metrics(folder):
    """Final-test metrics of a run folder: results.json, else the log; None while unfinished."""
    path = result_file(folder)
    metrics = read_result_file(path) if path is not None else {}
    return metrics if "accuracy" in metrics else None


def is_finished(folder):
    return read_run_metrics(folder) is not None


def result_time(folder, metrics=None):
    """(the "timestamp" of the run's results.json as POSIX seconds or None, the result file's
    mtime); None while the run is unfinished. The recorded timestamp survives copying a tree,
    which resets mtimes. METRICS: the folder's, when already read."""
    metrics = read_run_metrics(folder) if metrics is None else metrics
    if metrics is None:
        return None
    recorded = metrics.get("timestamp")  # only results.json records one
    try:
        stamp = datetime.fromisoformat(recorded).timestamp() if recorded else None
    except (TypeError, ValueError):  # not an ISO time (edited by hand): the file's time counts
        stamp = None
    return stamp, result_file(folder).stat().st_mtime


def model_changed(evaluation_folder, model_folder):
    """True when the finished evaluation in EVALUATION_FOLDER evaluated a model that is gone:
    the training run in MODEL_FOLDER lost its final result (trained again, or being trained
    again), or is another run than the one the evaluation loaded (both record the training
    run's id), or (older records) finished after the evaluation: the recorded timestamps when
    both runs have one, else the result files' mtimes."""
    if not Path(model_folder).is_dir():
        return False  # nothing to compare with (the training run was moved away)
    model_metrics = read_run_metrics(model_folder)
    if model_metrics is None:
        return True
    evaluation_metrics = read_run_metrics(evaluation_folder) or {}
    evaluated = (evaluation_metrics.get("lineage") or {}).get("model_run_id")
    trained = model_metrics.get("run_id")
    if evaluated and trained:  # both record the training run: compare them
        return evaluated != trained
    (model_stamp, model_mtime), (stamp, mtime) = (
        result_time(model_folder, model_metrics),
        result_time(evaluation_folder, evaluation_metrics or None))
    if model_stamp is not None and stamp is not None:
        return model_stamp > stamp
    return model_mtime > mtime


# ----------------------------------------------------------------------------- configs

def dataset_config_file(dataset):
    path = DATASET_CONFIGS / f"{dataset}.yaml"
    if not path.is_file():
        raise ProtocolError(f"unknown dataset {dataset!r}: no {path}{_known_configs(path)}")
    return path


def trainer_config_file(job):
    path = job.spec.config_dir / f"{job.resolved_config}.yaml"
    if not path.is_file():
        raise ProtocolError(f"no config {path} for {job.spec.name}{_known_configs(path)}")
    return path


def _known_configs(path):
    known = sorted(p.stem for p in path.parent.glob("*.yaml"))
    return f" (there: {', '.join(known)})" if known else f" ({path.parent} holds no configs)"


def config_value(key, overrides, *config_files):
    """The value KEY ("OPTIM.MAX_EPOCH") takes in a run: the last override, else the first
    config file that sets it, else Dassl's default."""
    pairs = list(zip(overrides[::2], overrides[1::2], strict=True))
    for name, value in reversed(pairs):
        if name == key:
            return yaml.safe_load(value)
    for config_file in config_files:
        if Path(config_file).is_file():
            node = yaml.safe_load(Path(config_file).read_text()) or {}
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                return node
    node = get_cfg_default()
    for part in key.split("."):
        node = node[part]
    return node


def _subfolders(run_folder):
    run_folder = Path(run_folder)
    return [folder for folder in run_folder.iterdir() if folder.is_dir()] if run_folder.is_dir() else []


def saved_epochs(model_dir):
    """Epochs saved in a run folder (model.pth.tar-<epoch> in any registered model's folder)."""
    return sorted({epoch for folder in _subfolders(model_dir) for epoch in
                   dassl_utils.epoch_checkpoints(folder)})


def model_folders(run_folder):
    """The registered models' folders of a run: sub-folders holding a checkpoint to resume from
    (`checkpoint` or model.pth.tar-<epoch>, see latest_checkpoint_path) or model-best.pth.tar."""
    return sorted(folder for folder in _subfolders(run_folder)
                  if dassl_utils.latest_checkpoint_path(folder) is not None
                  or (folder / BEST_MODEL_NAME).is_file())


def can_resume(run_folder):
    """True when training can continue from the run folder, by the engine's rule (holds_checkpoint:
    a model's folder holds the `checkpoint` pointer or an epoch's checkpoint; model-best alone is
    not a place to resume)."""
    return dassl_utils.holds_checkpoint(run_folder)


def choose_load_epoch(model_dir, config_file, overrides, env):
    """--load-epoch for evaluating MODEL_DIR; None makes the engine load model-best.pth.tar.

    LOAD_EPOCH in the environment wins; a run that tests the best-validation model loads
    model-best; otherwise the last epoch, OPTIM.MAX_EPOCH. Both keys are read from the overrides,
    else from the config.yaml that train.py saved in MODEL_DIR (what the model was trained
    with), else from the config file. When training stopped early, the last epoch's file is
    missing and the latest saved epoch is used instead (and said).
    """
    if env.get("LOAD_EPOCH"):
        epoch, epochs = int(env["LOAD_EPOCH"]), saved_epochs(model_dir)
        if epoch not in epochs:
            present = ", ".join(map(str, epochs)) or "none"
            raise ProtocolError(f"LOAD_EPOCH={epoch}: {model_dir} has no checkpoint of epoch "
                                f"{epoch} (*/{EPOCH_CHECKPOINT_PREFIX}{epoch}); epochs saved: "
                                f"{present}")
        return epoch
    configs = (Path(model_dir) / CONFIG_FILE, config_file)
    has_best = any(Path(model_dir).glob(f"*/{BEST_MODEL_NAME}"))
    if config_value("TEST.FINAL_MODEL", overrides, *configs) == "best_val":
        if not has_best:
            raise ProtocolError(f"the config tests the best-validation model but {model_dir} has "
                                f"no */{BEST_MODEL_NAME}; set LOAD_EPOCH=N to load an epoch")
        return None
    max_epoch = int(config_value("OPTIM.MAX_EPOCH", overrides, *configs))
    epochs = saved_epochs(model_dir)
    if max_epoch in epochs:
        return max_epoch
    if epochs:
        print(f"note: {model_dir} has no checkpoint of epoch {max_epoch} (OPTIM.MAX_EPOCH); "
              f"loading the latest saved one, epoch {epochs[-1]}")
        return epochs[-1]
    if has_best:
        return None
    raise ProtocolError(f"no checkpoint (*/{EPOCH_CHECKPOINT_PREFIX}N or */{BEST_MODEL_NAME}) in "
                        f"{model_dir}")


# ----------------------------------------------------------------------------- commands

@dataclass
class Environment:
    """DATA and OUTPUT (and LOAD_EPOCH, FORCE) as the scripts read them."""
    data: Path
    output: Path
    variables: dict = field(default_factory=dict)

    @classmethod
    def from_variables(cls, variables):
        data = variables.get("DATA", "")
        if not data:
            raise ProtocolError("DATA is not set: export DATA=/path/to/datasets (the folder that "
                                "holds imagenet/, eurosat/, ... as described in DATASETS.md)")
        if not Path(data).is_dir():
            raise ProtocolError(f"DATA={data} is not a folder: set DATA to the folder that holds "
                                "imagenet/, eurosat/, ... (see DATASETS.md)")
        output = variables.get("OUTPUT") or "output"
        return cls(Path(data).resolve(), Path(output).resolve(), dict(variables))


def model_dir_of(job, env):
    if job.model_dir:
        return Path(job.model_dir)
    model_job = job.model_job()
    return run_dir(env.output, model_job) if model_job else None


def train_command(job, env, resume=False, output=None, options=()):
    """The train.py command line of a job (argument list); OUTPUT: another output folder than
    the job's run folder (a staging folder); OPTIONS: more train.py options."""
    out = Path(output) if output is not None else run_dir(env.output, job)
    config_file = trainer_config_file(job)
    command = [sys.executable, str(REPO_ROOT / "train.py"), "--root", str(env.data),
               "--seed", str(job.seed), "--trainer", job.spec.name,
               "--dataset-config-file", str(dataset_config_file(job.dataset)),
               "--config-file", str(config_file), "--output-dir", str(out)]
    model_dir = model_dir_of(job, env)
    if model_dir is not None:
        command += ["--model-dir", str(model_dir)]
        epoch = choose_load_epoch(model_dir, config_file, job.overrides, env.variables)
        if epoch is not None:
            command += ["--load-epoch", str(epoch)]
    if job.evaluates_only:
        command.append("--eval-only")
    elif resume:
        command += ["--resume", str(out)]
    command += list(options)
    source = job.source if job.step == "xd_test" else ""
    command += ["RUN.PROTOCOL", job.protocol, "RUN.STEP", job.step, "RUN.SOURCE", source,
                "RUN.TAG", job.run_tag, "DATASET.NUM_SHOTS", str(job.shots),
                "DATASET.SUBSAMPLE_CLASSES", STEPS[job.step].subsample, *job.overrides]
    return command


def requested_identity(job, env):
    """The identity (dassl.config.identity) the job's run would record, built by train.py's own
    config code from the job's command; its "model" only for evaluations whose model exists."""
    import train

    command, args, cfg = train_config(job, env)
    identity = train.identity_of(cfg, args)
    if "--model-dir" in command:
        identity["model"] = identity_model(args.load_epoch)
    return identity


def train_config(job, env):
    """(command, train.py's arguments, resolved config) of a job, by train.py's own code (the
    heavy imports, torch and the trainers, happen here, only when needed)."""
    import train

    command = train_command(job, env)
    args = train.build_parser().parse_args(command[2:])
    return command, args, train.setup_cfg(args)


def identity_model(load_epoch):
    from dassl.config.identity import evaluated_model

    return evaluated_model(load_epoch, best=load_epoch is None)


def identity_changes(job, env):
    """(field, finished run's value, requested value) for each difference between the finished
    run in the job's folder and the request; [] when they agree or the run recorded no identity
    (runs of other codebases, or of an older version)."""
    from dassl.config.identity import OUTCOME_FIELDS, identity_differences

    recorded = (read_run_metrics(run_dir(env.output, job)) or {}).get("identity")
    if not recorded:
        return []
    try:
        requested = requested_identity(job, env)
    except ProtocolError:
        return []  # the model to evaluate is gone: nothing to compare the model choice with
    ignored = () if "model" in requested else OUTCOME_FIELDS
    return identity_differences(recorded, requested, ignore=ignored)


def check_model_available(job, env):
    """Fail early, saying which script to run first, when the model to evaluate is missing."""
    model_job = job.model_job()
    if job.model_dir:
        if not Path(job.model_dir).is_dir():
            raise ProtocolError(f"weights folder {job.model_dir} not found")
    elif model_job is not None and not is_finished(run_dir(env.output, model_job)):
        first = script_invocation(model_job)
        raise ProtocolError(f"no finished training run in {run_dir(env.output, model_job)}: "
                            f"run `{first}` first")


def script_invocation(job):
    """The command a user types for a job (used in messages and in generated sweeps)."""
    script = REPO_ROOT / "scripts" / job.trainer / f"{job.step}.sh"
    positional = [job.dataset, str(job.seed)]
    if job.step == "xd_train":
        positional = ([] if job.dataset == XD_SOURCE else [job.dataset]) + [str(job.seed)]
    environment = []
    if job.step == "xd_test" and job.source != XD_SOURCE:
        environment.append(f"SOURCE={job.source}")
    if job.config:
        environment.append(f"CFG={job.config}")
    if job.tag:
        environment.append(f"TAG={job.tag}")
    if job.shots != SHOTS and _override(job.overrides, "DATASET.NUM_SHOTS") is None:
        environment.append(f"SHOTS={job.shots}")
    if job.epoch_requested is not None:
        environment.append(f"LOAD_EPOCH={job.epoch_requested}")
    return shlex.join([*environment, "bash", str(script), *positional, *job.overrides])


# What run_job does with a job, as --dry-run shows it.
SKIP, START, RESUME, RETRAIN, REEVALUATE, STALE, DIFFERS = (
    "skip", "start", "resume", "retrain", "reevaluate", "stale", "differs")
ACTION_LABELS = {START: "start", RESUME: "resume", RETRAIN: "retrain (FORCE=1)",
                 REEVALUATE: "re-evaluate (FORCE=1)", STALE: "re-evaluate (model changed)",
                 SKIP: "skip (finished)", DIFFERS: "stop (finished, other settings)"}


def is_forced(env):
    return env.variables.get("FORCE", "0") not in ("", "0")


def planned_action(job, env):
    """What run_job will do: skip a finished run of the requested identity, stop at one of
    another; evaluate again when the model changed since the evaluation; with FORCE=1 train
    from scratch or evaluate again; else resume from a checkpoint, or start."""
    out = run_dir(env.output, job)
    forced = is_forced(env)
    finished = is_finished(out)
    if finished and job.evaluates_only and not forced:
        model_dir = model_dir_of(job, env)
        stale = not job.released and model_dir is not None and model_changed(out, model_dir)
        if stale:
            return STALE
    if finished and not forced:
        return DIFFERS if identity_changes(job, env) else SKIP
    if job.evaluates_only:
        return REEVALUATE if finished else START
    if forced and (model_folders(out) or (out / RESULTS_FILE).is_file()):
        return RETRAIN
    return RESUME if can_resume(out) else START


STAGING_SUFFIX = ".staging"  # seed<S>.staging: a run again (FORCE=1, stale) until it finished
REPLACED_SUFFIX = ".replaced"  # the previous run folder for the moment of the swap


def staging_dir(run_folder):
    return swap_folders(run_folder)[1]


def swap_folders(run_folder):
    """(the run folder on disk, its staging folder, the name it has for the moment of the swap).
    A run folder that is a symbolic link is swapped where it points, so that the link stays."""
    real = Path(run_folder)
    if real.is_symlink():
        real = real.resolve()
    return (real, real.with_name(real.name + STAGING_SUFFIX),
            real.with_name(real.name + REPLACED_SUFFIX))


def replace_run(staging, run_folder):
    """Swap a finished staging folder in for the run folder it replaces; call it holding the
    run folder's lock, which the swap keeps (see _carry_lock). A kill at any point is undone by
    recover_swap."""
    real, _, replaced = swap_folders(run_folder)
    staging = Path(staging)
    if os.path.lexists(replaced):
        remove_folder(replaced)
    _carry_lock(real, staging)
    if os.path.lexists(real):
        real.rename(replaced)
    staging.rename(real)
    remove_folder(replaced)


def recover_swap(run_folder):
    """Complete or roll back what a run killed at its swap left; call it holding the run
    folder's lock. A finished staging run is swapped in (it is not run again); a run folder
    moved aside with nothing finished to replace it is moved back; the folder it replaced is
    removed. A staging folder where a train.py still runs (its protocol script was killed)
    makes it raise RunFolderBusy. Returns True when a finished staging run was swapped in."""
    real, staging, replaced = swap_folders(run_folder)
    if staging.is_dir():
        with dassl_utils.run_folder_lock(staging):
            pass
    finished = staging.is_dir() and is_finished(staging)
    # Killed between the two renames: the run folder is gone, or holds only the lock that
    # this start took (locking a folder creates it).
    moved_aside = os.path.lexists(replaced) and (
        not os.path.lexists(real) or sorted(os.listdir(real)) == [LOCK_FILE])
    swapped = finished
    if moved_aside:
        moved_back = staging if finished else replaced
        _carry_lock(real, moved_back)
        (real / LOCK_FILE).unlink(missing_ok=True)
        moved_back.rename(real)  # onto the empty folder, if any
    elif finished:  # killed after the run finished, before its swap
        replace_run(staging, real)
    elif os.path.lexists(replaced):  # killed after the swap, while removing the previous run
        swapped = True
    if os.path.lexists(replaced):
        remove_folder(replaced)
    return swapped


def _carry_lock(run_folder, folder):
    """Link the run folder's lock file (held by us) into FOLDER, about to take its place, so
    that the run folder stays locked through the renames."""
    lock = Path(run_folder) / LOCK_FILE
    if not lock.is_file():
        return
    (Path(folder) / LOCK_FILE).unlink(missing_ok=True)  # a killed train.py's, or a moved run's
    try:
        os.link(lock, Path(folder) / LOCK_FILE)
    except OSError:
        pass  # no hard links on this file system: unlocked for the moment of the swap


def interrupted_swap(run_folder):
    """True when a run killed at its swap left something for recover_swap to do."""
    _, staging, replaced = swap_folders(run_folder)
    return os.path.lexists(replaced) or (staging.is_dir() and is_finished(staging))


def remove_folder(path):
    """Remove a folder, or the link that stands for one (not what it points to)."""
    if Path(path).is_symlink() or not Path(path).is_dir():
        Path(path).unlink()
    else:
        shutil.rmtree(path)


def differences_message(job, env, differences):
    from dassl.config.identity import format_differences

    return (f"{run_dir(env.output, job)} holds a finished run with other settings than this one "
            f"(finished -> requested):\n{format_differences(differences)}\nTo keep both, give "
            "this run a folder of its own with TAG=<name>; to replace the finished run, run with "
            "FORCE=1 (the old results stay until the new run has finished).")


# The evaluations that one pass over a dataset's test images files together: the open-world
# test (all classes) carries the tests of the base and of the new classes alone.
SUBSET_OF_STEP = {"base2new_test_base": "base", "base2new_test": "new"}
CARRIER_STEP = "openworld_test"
RERUN_ACTIONS = (START, REEVALUATE, STALE)


def one_pass(jobs, env):
    """(carrier, companions) for the first of JOBS. When it is a base / new / open-world test
    and the other tests of the same model on the same dataset are among JOBS, all need running,
    and the trainer scores each class independently of the others, the open-world test (the
    carrier) files them too from its all-class logits: the test images are read once. Else
    (the first job, [])."""
    first = jobs[0]
    steps = (*SUBSET_OF_STEP, CARRIER_STEP)
    if first.step not in steps:
        return first, []
    together = [job for job in jobs if job.step in steps
                and replace(job, step=CARRIER_STEP) == replace(first, step=CARRIER_STEP)]
    carriers = [job for job in together if job.step == CARRIER_STEP]
    companions = [job for job in together if job.step != CARRIER_STEP]
    if not carriers or not companions:
        return first, []
    if any(planned_action(job, env) not in RERUN_ACTIONS for job in together):
        return first, []
    import train

    try:
        cfg = train_config(carriers[0], env)[2]
    except ProtocolError:  # e.g. no model yet: run_job says what to run first
        return first, []
    if not train.scores_classes_independently(cfg):
        return first, []
    return carriers[0], companions


def run_jobs(jobs, env, console=False):
    """Run JOBS in order, the evaluations of one test set in one pass (one_pass), up to the
    first failure: (job, exit status, what went wrong) of that failure, else None."""
    remaining = list(jobs)
    while remaining:
        carrier, companions = one_pass(remaining, env)
        try:
            returncode = run_job(carrier, env, console, companions)
        except ProtocolError as error:
            return carrier, 2, f"error: {error}"
        if returncode:
            return carrier, returncode, (f"train.py exited with {returncode}; see "
                                         f"{run_dir(env.output, carrier)}")
        remaining = [job for job in remaining if job != carrier and job not in companions]
    return None


def run_job(job, env, console=False, companions=()):
    """Run one job as planned_action says. Returns train.py's exit status (0 when skipped).

    A run done again (FORCE=1, or an evaluation of a model trained again) runs in a staging
    folder that replaces the run folder only once finished, so a failure leaves the previous
    results as they were. COMPANIONS (see one_pass) are filed by the same train.py run.
    console=True sends train.py's output to console.txt in the run folder (parallel sweeps).
    The run folders are locked from the plan to the end of train.py (which works under this
    lock), so that a second script on the same folder neither deletes nor mixes files.
    """
    check_dataset_name(job.dataset)
    check_dataset_name(job.source, "SOURCE")
    out = run_dir(env.output, job)
    if planned_action(job, env) == SKIP and not interrupted_swap(out):
        print(f"skip: {out} already finished (it has a final result; FORCE=1 runs it again)")
        dassl_utils.remove_stale_lock(out)
        return 0
    new_folders = [folder for folder in [out] + [run_dir(env.output, companion)
                                                 for companion in companions]
                   if not folder.exists()]
    try:
        with contextlib.ExitStack() as locks:
            lock_environments = [locks.enter_context(dassl_utils.run_folder_lock(out))]
            for companion in companions:  # train.py writes into them under our lock
                lock_environments.append(locks.enter_context(
                    dassl_utils.run_folder_lock(run_dir(env.output, companion))))
            returncode = 1
            try:
                swapped = recover_swap(out)
                for companion in companions:
                    recover_swap(run_dir(env.output, companion))
                unforced = Environment(env.data, env.output, {**env.variables, "FORCE": "0"})
                if swapped and not companions and planned_action(job, unforced) == SKIP:
                    print(f"skip: {out} already finished (the run that was to replace it had "
                          "finished: it replaces it now)")
                    returncode = 0
                    return returncode
                returncode = _run_locked(job, env, out, console, companions, lock_environments)
                return returncode
            finally:
                # Under our locks: folders this call made for a run refused before it did
                # anything go (a sweep's console.txt keeps the error: kept).
                if returncode and not console:
                    for folder in new_folders:
                        remove_refused_run(folder, env.output)
    except dassl_utils.UserError as error:  # busy, a lock file that is a link, a full disk
        raise ProtocolError(str(error)) from error


def _run_locked(job, env, out, console, companions, lock_environments):
    action = planned_action(job, env)  # again: another run may have finished it meanwhile
    if action == SKIP:
        print(f"skip: {out} already finished (it has a final result; FORCE=1 runs it again)")
        return 0
    if action == DIFFERS:
        raise ProtocolError(differences_message(job, env, identity_changes(job, env)))
    check_model_available(job, env)
    runs = [(job, action)] + [(companion, planned_action(companion, env))
                              for companion in companions]
    folders = []  # (run folder, folder train.py writes to)
    for each, each_action in runs:
        each_out = run_dir(env.output, each)
        target = staging_dir(each_out) if each_action in (RETRAIN, REEVALUATE, STALE) else each_out
        if target != each_out and target.exists():
            shutil.rmtree(target)  # what an earlier failed attempt left
        if target != each_out:  # made here, so that a failed attempt stays there to read
            target.mkdir(parents=True)
        folders.append((each_out, target))
    target = folders[0][1]
    options = [argument for companion, (_, folder) in zip(companions, folders[1:], strict=True)
               for argument in ("--subset-output", SUBSET_OF_STEP[companion.step], str(folder))]
    command = train_command(job, env, resume=action == RESUME, output=target, options=options)
    message = "starting" if action == START else ACTION_LABELS[action]
    where = f"{out}" if target == out else f"{out} (in {target.name} until it finished)"
    if companions:
        where += (" and, in one pass over the test images, "
                  + ", ".join(str(each_out) for each_out, _ in folders[1:]))
    print(f"{message}: {where}", flush=True)
    # train.py works under our locks of the folders it writes into (not those of the run
    # folders it is to replace), and holds them itself: it is handed the locked files.
    lock_variables, lock_files = dassl_utils.handover(*[
        lock for lock, (each_out, each_target) in zip(lock_environments, folders, strict=True)
        if each_target == each_out])
    variables = {**os.environ, **env.variables, **lock_variables}
    if not console:
        returncode = subprocess.run(command, env=variables, pass_fds=lock_files).returncode
    else:
        target.mkdir(parents=True, exist_ok=True)
        with open(target / CONSOLE_FILE, "a") as output:
            returncode = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT,
                                        env=variables, pass_fds=lock_files).returncode
    # A run that replaces another, or is filed by another's pass, must have finished.
    checked = [target for each_out, target in folders[1:]] + [
        target for each_out, target in folders[:1] if target != each_out]
    if returncode == 0 and not all(is_finished(folder) for folder in checked):
        returncode = 1
    for each_out, each_target in folders:
        if each_target == each_out:
            continue
        if returncode == 0:
            replace_run(each_target, each_out)
        else:
            print(f"{each_out} keeps its previous results; the failed attempt is in "
                  f"{each_target}", file=sys.stderr)
    return returncode


# ----------------------------------------------------------------------------- script entry

USAGE = {
    "base2new_train": "DATASET SEED",
    "base2new_test": "DATASET SEED",
    "openworld_test": "DATASET SEED",
    "xd_train": "[SOURCE] SEED",
    "xd_test": "DATASET SEED",
    "reproduce": "DATASET SEED WEIGHTS_DIR",
    "reproduce_xd": "DATASET SEED WEIGHTS_DIR",
}
# The steps the released-weights scripts run.
REPRODUCE_STEPS = {"reproduce": ("base2new_test_base", "base2new_test", "openworld_test"),
                   "reproduce_xd": ("xd_test",)}


def jobs_from_arguments(trainer, script, args, variables):
    """The jobs a protocol script runs, from its positional arguments and environment."""
    if trainer not in TRAINERS:
        raise ProtocolError(f"unknown trainer {trainer!r}; known: {', '.join(TRAINERS)}")
    if script not in USAGE:
        raise ProtocolError(f"unknown script {script!r}; known: {', '.join(USAGE)}")
    usage = f"usage: bash scripts/{trainer}/{script}.sh {USAGE[script]} [KEY VALUE ...]"
    args = list(args)
    if script == "xd_train" and args and not args[0].isdigit():
        dataset = args.pop(0)
    elif script == "xd_train":
        dataset = XD_SOURCE
    else:
        if not args:
            raise ProtocolError(usage)
        dataset = args.pop(0)
    if not args or not args[0].isdigit():
        raise ProtocolError(f"{usage}\n(SEED must be a number)")
    seed = int(args.pop(0))
    weights = ""
    if script.startswith("reproduce"):
        if not args:
            raise ProtocolError(usage)
        weights = args.pop(0)
    if len(args) % 2:
        raise ProtocolError(f"{usage}\n(config overrides come in KEY VALUE pairs; got {args})")
    common = dict(trainer=trainer, dataset=check_dataset_name(dataset), seed=seed,
                  source=check_dataset_name(variables.get("SOURCE") or XD_SOURCE, "SOURCE"),
                  **job_settings(variables, args))
    if script == "reproduce":
        model_dir = released_weights_dir(weights, dataset, seed, "base")
        return [Job(step=step, model_dir=str(model_dir), **common)
                for step in REPRODUCE_STEPS[script]]
    if script == "reproduce_xd":
        return [Job(step="xd_test", model_dir=str(released_weights_dir(weights, XD_SOURCE, seed)),
                    **common)]
    return [Job(step=script, **common)]


def job_settings(variables, overrides):
    """The Job fields that scripts and sweeps read from the environment and the overrides."""
    return dict(config=config_from(variables), shots=shots_from(variables, overrides),
                tag=tag_from(variables), load_epoch=load_epoch_from(variables),
                overrides=tuple(overrides))


def _override(overrides, key):
    """The value an override list gives KEY (the last one), or None."""
    overrides = list(overrides)
    values = [value for name, value in zip(overrides[::2], overrides[1::2]) if name == key]
    return values[-1] if values else None


def shots_from(variables, overrides=()):
    """The shots a run uses: a DATASET.NUM_SHOTS override (what train.py applies last), else
    SHOTS, else 16."""
    shots = _override(overrides, "DATASET.NUM_SHOTS")
    name = "DATASET.NUM_SHOTS" if shots is not None else "SHOTS"
    shots = shots if shots is not None else variables.get("SHOTS") or str(SHOTS)
    if not shots.isdigit():
        raise ProtocolError(f"{name}={shots} is not a number of images per class")
    return int(shots)


# A dataset name is a file name in configs/datasets/ and a folder of the output layout.
_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def is_dataset_name(name):
    """True for a name that stays one file of configs/datasets/ and one folder of the output
    layout (not "../x")."""
    return bool(_DATASET_NAME.fullmatch(name or ""))


def check_dataset_name(dataset, what="DATASET"):
    """Refuse a dataset name that would not stay one folder of the output layout ("../x")."""
    if not is_dataset_name(dataset):
        raise ProtocolError(f"{what} {dataset!r}: use letters, digits and . _ + - (it names a "
                            "folder; the datasets are the files of configs/datasets/)")
    return dataset


def tag_from(variables):
    tag = variables.get("TAG", "")
    if tag and not _TAG.fullmatch(tag):
        raise ProtocolError(f"TAG={tag!r}: use letters, digits and . _ + - (it names a folder)")
    return tag


def load_epoch_from(variables):
    epoch = variables.get("LOAD_EPOCH", "")
    if epoch and not epoch.isdigit():
        raise ProtocolError(f"LOAD_EPOCH={epoch} is not an epoch number")
    return int(epoch) if epoch else None


def config_from(variables):
    """CFG, checked: the released-weights suffix would file trained runs as released ones."""
    config = variables.get("CFG", "")
    if config.endswith(RELEASED_SUFFIX):
        raise ProtocolError(f"CFG={config}: config names ending in {RELEASED_SUFFIX} are kept for "
                            "the folders of released weights (reproduce.sh); rename the config")
    return config


def released_weights_dir(weights, dataset, seed, split=""):
    """The seed folder of released weights in the MaPLe authors' layout.

    Base-to-new: <dataset>/base/seed<S>/ (their novel/ folders hold the same model's logs);
    cross-dataset: imagenet/seed<S>/. WEIGHTS may be the folder that holds <dataset>/ or
    <dataset>/ itself.
    """
    relative = Path(split, f"seed{seed}")
    candidates = [Path(weights) / relative, Path(weights) / dataset / relative]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise ProtocolError(f"released weights not found: none of {', '.join(map(str, candidates))} "
                        "exists (expected the MaPLe release layout, e.g. imagenet/base/seed1/"
                        "MultiModalPromptLearner/model.pth.tar-5)")


def main(argv=None, variables=None):
    argv = sys.argv[1:] if argv is None else argv
    variables = dict(os.environ) if variables is None else variables
    if len(argv) < 2:
        print("usage: python -m scripts.protocols TRAINER SCRIPT ARGS... [KEY VALUE ...]",
              file=sys.stderr)
        return 2
    try:
        if argv[0] in TRAINERS and argv[1] in USAGE and {"-h", "--help"} & set(argv[2:]):
            from scripts.script_help import script_help
            print(script_help(argv[0], argv[1], variables.get("CFG", "")))
            return 0
        jobs = jobs_from_arguments(argv[0], argv[1], argv[2:], variables)
        env = Environment.from_variables(variables)
        failure = run_jobs(jobs, env)
        if failure:
            _, returncode, reason = failure
            if reason.startswith("error: "):
                print(reason, file=sys.stderr)
            return returncode
    except ProtocolError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
