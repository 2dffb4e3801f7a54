"""Output folders -> the paper's tables.

    python parse_test_res.py output/ [--format table|markdown|csv|json|latex] [--ci95] [--paper]
                             [--plot FILE.png] [--seeds 1 2 3] [--keyword METRIC]

finds every run under the folder (the layout of scripts/protocols.py, which is MaPLe's), groups
runs by protocol / dataset / trainer / config, averages seeds and prints base-to-new (base, new,
HM), open-world (Table 1: HM and Acc), cross-dataset (Table 2) and domain-generalisation (Table 3)
tables with the methods side by side. What a run is (dataset, trainer, config, seed, shots,
settings, data, CLIP, the model an evaluation loaded) comes from its results.json, not from its
folder: a folder that says otherwise is listed as a conflict, a copy of a run counts once, an
evaluation of a model trained again since is stale and left out, and a cell never averages two
settings (README, "Run identity"). Every cell carries its seed count, "(2/3)" when a seed is
missing; missing seeds and unfinished runs are listed under the tables. Released weights
evaluated by reproduce.sh (config folders <CFG>_released) are a method of their own, e.g.
"MaPLe (released)", never averaged with the runs trained here. Numbers come from
results.json, or from the "* accuracy:" lines of log.txt for older runs. The spread is the
population std over seeds (numpy's default, as in the upstream script), or with --ci95 the
half-width of the 95% confidence interval of the mean, t(0.975, n-1) * s / sqrt(n) (Student's t,
s the sample std). Averages cover the paper's datasets only; other datasets (user datasets) are
shown in rows of their own but left out of the averages.

The classic form of the CoOp / MaPLe script still works on one experiment folder (whose seed
folders hold the logs), or on a folder of experiments with --multi-exp:

    python parse_test_res.py output/base2new/train_base/eurosat/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx
    python parse_test_res.py output/base2new/test_new/eurosat/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx --test-log
"""
import argparse
import csv
import io
import json
import math
import os
import re
import statistics
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from scipy import stats
from tabulate import tabulate

from dassl.utils.run_files import LOG_FILE
from scripts.protocols import (BASE2NEW_DATASETS, CONSOLE_FILE, DG_TARGETS, RELEASED_SUFFIX,
                               SHOTS, STEPS, TRAINERS, USER_DATASET, XD_SOURCE, XD_TARGETS, Job,
                               RunKey, display_name, is_dataset_name, parse_run_dir,
                               read_result_file, read_run_metrics, registry_name, result_file,
                               script_invocation)

PAPER_RESULTS = Path(__file__).resolve().parent / "configs" / "paper_results.json"
AVERAGE = "Average"
OOD_AVERAGE = "OOD Average"
FORMATS = ("table", "markdown", "csv", "json", "latex")
DEFAULT_KEYWORD = "accuracy"  # --keyword: the metric the tables show
_CROSS_CONFIG_FOLDER = re.compile(r"(.+)_(\d+shots)")  # evaluation/<TRAINER>/<CFG>_16shots
TRAINER_ORDER = ("ZeroshotCLIP", "CoOp", "CoCoOp", "VPT", "IVLP", "MaPLe", "BMIP", "PromptSRC",
                 "CoPrompt")
# Beyond this many methods, dataset-major tables print one row per dataset and method.
MAX_METHODS_SIDE_BY_SIDE = 3

# Where the paper prints the number of a cell: (our table, metric, average row?) -> its tables.
PAPER_TABLES = {
    ("base2new", "HM", False): ("Table 1",),
    ("base2new", "base", True): ("README",),
    ("base2new", "new", True): ("README",),
    ("base2new", "HM", True): ("README",),
    ("openworld", "HM", False): ("Table 1",),
    ("openworld", "HM", True): ("Table 1", "Table 4", "Table 5"),
    ("openworld", "Acc", False): ("Table 1",),
    ("openworld", "Acc", True): ("Table 1", "Table 4", "Table 5"),
    ("xd", "accuracy", False): ("Table 2",),
    ("xd", "accuracy", True): ("Table 2",),
    ("dg", "accuracy", False): ("Table 3",),
    ("dg", "accuracy", True): ("Table 3",),
}


# ----------------------------------------------------------------------------- runs

@dataclass
class Run:
    """A run folder. Its ``key`` (dataset, trainer, config, seed, shots, step, source) is what
    its results.json records where it records an identity, else what its folder's path says
    (``folder_key``): a path is where a run lies, not what it was."""
    key: object                # scripts.protocols.RunKey
    path: Path
    metrics: dict = None       # None while unfinished
    error: str = None          # a failed run: the last error line of its log
    setting: tuple = None      # (field, value) pairs of its identity beyond the key
    folder_key: object = None  # what the folder's path says
    dataset: str = None        # its row / column (assign_datasets)

    def __post_init__(self):
        if self.folder_key is None:
            self.folder_key = self.key
        if self.dataset is None:
            self.dataset = self.key.dataset

    @property
    def identity(self):
        """The identity results.json records (a dict), or None (other codebases, older runs)."""
        identity = (self.metrics or {}).get("identity")
        return identity if isinstance(identity, dict) else None

    @property
    def run_id(self):
        return (self.metrics or {}).get("run_id")

    @property
    def lineage(self):
        lineage = (self.metrics or {}).get("lineage")
        return lineage if isinstance(lineage, dict) else {}

    @property
    def method(self):
        """What a table row stands for: trainer, config and the rest of the identity."""
        return (self.key.trainer, self.key.config, self.setting)

    @property
    def failed(self):
        return self.error is not None


def find_runs(root):
    """Every run folder under ROOT, i.e. every folder whose path parse_run_dir understands,
    keyed by what it records (record_key); then the rows of the datasets and the settings."""
    runs = []
    for folder, subfolders, _ in os.walk(Path(root).resolve()):
        folder_key = parse_run_dir(folder)
        if folder_key is not None:
            metrics = read_run_metrics(folder)
            error = failure_line(folder) if metrics is None else None
            runs.append(Run(record_key(metrics, folder_key), Path(folder), metrics, error,
                            folder_key=folder_key))
            subfolders.clear()
        subfolders.sort()
    assign_datasets(runs)
    return assign_settings(runs)


def record_key(metrics, folder_key):
    """The RunKey a results.json records; FOLDER_KEY where it records no identity. The config
    is the config file's name (a tag, an epoch, an override are parts of the setting), with the
    released-weights suffix for runs of released weights."""
    identity = (metrics or {}).get("identity")
    if not isinstance(identity, dict):
        return folder_key
    step = identity.get("step") if identity.get("step") in STEPS else folder_key.step
    dataset = metrics.get("dataset_config") or folder_key.dataset
    source = identity.get("source") or ""
    if step == "xd_train":
        source = ""
    elif step == "xd_test" and not source:
        source = folder_key.source or XD_SOURCE
    config = identity.get("config") or folder_key.config
    if "released" in str(identity.get("tag") or "").split("+"):
        config = config.removesuffix(RELEASED_SUFFIX) + RELEASED_SUFFIX
    shots = identity.get("shots")
    seed = identity.get("seed")
    return RunKey(step, str(dataset), str(identity.get("trainer") or folder_key.trainer),
                  str(config), seed if isinstance(seed, int) else folder_key.seed,
                  shots if isinstance(shots, int) else folder_key.shots, str(source))


# ----------------------------------------------------------------------------- run identity

# The last line a failed train.py leaves in its log: our one-line errors, or a traceback's end.
_ERROR_LINE = re.compile(r"^(error: .*|(\w+\.)*\w*(Error|Exception|Interrupt)\b.*|Killed.*)$")


def failure_line(folder):
    """The error line a failed run's log ends with (log.txt, else the sweep's console.txt), or
    None: an unfinished run that may still be running or was stopped."""
    for name in (LOG_FILE, CONSOLE_FILE):
        path = Path(folder) / name
        if path.is_file():
            lines = [line.strip() for line in path.read_text(errors="replace").splitlines()
                     if line.strip()]
            if lines and _ERROR_LINE.match(lines[-1]):
                return lines[-1]
    return None


def dataset_label(dataset):
    """A dataset's name in the tables: the paper's column name; a user's dataset by its config
    (a name that is no config's, e.g. a row of other data, as it is)."""
    if not is_dataset_name(dataset):
        return dataset
    return dataset if registry_name(dataset) == USER_DATASET else display_name(dataset)


def assign_datasets(runs):
    """Each run's row: its dataset's. Runs of one dataset name whose data differ (the hash of
    the whole test split, results.json's dataset_hash) are rows of their own, named apart by
    the data's own name (a user's folder) where that tells them apart, else by the hash."""
    hashes = {}
    for run in runs:
        digest = (run.metrics or {}).get("dataset_hash")
        if digest:
            hashes.setdefault(run.key.dataset, {}).setdefault(digest, set()).add(
                (run.metrics or {}).get("dataset_name"))
    for run in runs:
        run.dataset = run.key.dataset
        versions = hashes.get(run.key.dataset, {})
        digest = (run.metrics or {}).get("dataset_hash")
        if len(versions) > 1 and digest:
            names = {digest: next(iter(own)) for digest, own in versions.items() if len(own) == 1}
            distinct = len(set(names.values())) == len(versions)
            suffix = names[digest] if distinct else f"data {digest[:8]}"
            run.dataset = f"{run.key.dataset} ({suffix})"
    return runs


# The fields of a run's identity that tell runs of one trainer and config apart, in the order
# their columns appear. The rest is the key (trainer, config, dataset, step, seed).
SETTING_FIELDS = ("shots", "source", "CLIP", "model", "tag", "settings", "record")
UNRECORDED = "?"
NO_RECORD = "none (log only)"


def recorded_setting(run):
    """The setting a finished run records: its results.json identity, the settings by their
    fingerprint; runs without one (other codebases, older versions) by what they record
    (shots) and their folder, marked as such."""
    metrics = run.metrics or {}
    identity = run.identity
    source = run.key.dataset if run.key.step == "xd_train" else run.key.source
    if identity is None:
        setting = {"shots": _requested_shots(metrics, run.key.shots), "source": source,
                   "record": NO_RECORD}
    else:
        clip = _clip_label(identity)
        trained = metrics.get("model_clip_sha256")
        if trained and identity.get("clip_sha256") and trained != identity["clip_sha256"]:
            clip = f"{clip} (model trained on sha256:{trained[:12]})"
        settings = identity.get("fingerprint")
        if settings is not None and isinstance(identity.get("settings"), dict):
            SETTINGS.setdefault(settings, (identity["settings"], identity.get("config_file")))
        if settings is None:  # an older record: its overrides stand for its settings
            settings = ", ".join(f"{key}={value}" for key, value in
                                 sorted((identity.get("overrides") or {}).items()))
        setting = {"shots": identity.get("shots"), "source": source, "CLIP": clip,
                   "model": identity.get("model"), "tag": identity.get("tag") or "",
                   "settings": settings, "record": "results.json"}
    return tuple((field, setting[field]) for field in SETTING_FIELDS
                 if field in setting and (field != "source" or run.key.step.startswith("xd")))


# fingerprint -> (the settings it stands for, the record of the config file): what labels and
# legends say of a setting (filled as records are read).
SETTINGS = {}


def setting_changes(setting):
    """How a setting differs from its config file as published: [(key, published value, run
    value)] (published None: not known), and whether the config file itself was edited.
    Older records say it by their overrides."""
    fields = dict(setting or ())
    fingerprint = fields.get("settings")
    if fingerprint in SETTINGS:
        _, config_file = SETTINGS[fingerprint]
        config_file = config_file if isinstance(config_file, dict) else {}
        changes = config_file.get("changes") or {}
        return ([(key, *values) for key, values in sorted(changes.items())],
                config_file.get("published") is False)
    if isinstance(fingerprint, str) and "=" in fingerprint:  # an older record's overrides
        return [(key, None, value) for key, _, value in
                (part.partition("=") for part in fingerprint.split(", "))], False
    return [], False


def _short_key(key):
    names = key.split(".")
    return (names[-2] if names[-1] in ("NAME", "DIR") and len(names) > 1 else names[-1]).lower()


def changes_text(setting, short=True):
    """The difference of a setting from the published config: "lr 0.05, max_epoch 1" (short),
    or "OPTIM.LR = 0.05 (published: 0.002)" in full; "" for the published setting."""
    changes, edited = setting_changes(setting)
    if short:
        parts = [f"{_short_key(key)} {_setting_text(value)}" for key, _, value in changes]
    else:
        parts = [f"{key} = {_setting_text(value)}"
                 + (f" (published: {_setting_text(published)})" if published is not None else "")
                 for key, published, value in changes]
    if edited:
        parts.insert(0, "edited config file" if short else
                     "the config file differs from the published one (configs/published.json)")
    return ", ".join(parts)


def _requested_shots(metrics, default):
    """The shots a run asked for (results.json's num_shots is the shots used, fewer when the
    classes have fewer images; older files hold the requested number there)."""
    return metrics.get("num_shots_requested", metrics.get("num_shots", default))


def _clip_label(identity):
    """The CLIP weights of a run: the backbone's short name (an open_clip model as
    `ViT-B-16/laion2b_s34b_b88k`) and the file's SHA-256."""
    name = identity.get("backbone_label") or identity.get("backbone")
    digest = identity.get("clip_sha256")
    return f"{name} sha256:{digest[:12]}" if digest else name


def assign_settings(runs):
    """Give each run its setting. A finished run has its own; a run without a result (still
    running, stopped) joins the settings of the finished runs of its folder group that it may
    be part of, else stands alone with what its folder says."""
    for run in runs:
        if run.metrics is not None:
            run.setting = recorded_setting(run)
    finished = {}
    for run in runs:
        if run.metrics is not None:
            finished.setdefault(_folder_group(run), set()).add(run.setting)
    for run in runs:
        if run.metrics is None:
            own = recorded_setting(run)
            candidates = [setting for setting in finished.get(_folder_group(run), ())
                          if dict(setting).get("shots") == run.key.shots]
            run.setting = candidates[0] if len(candidates) == 1 else own
    return runs


def _folder_group(run):
    key = run.folder_key
    return (key.trainer, key.config, key.source if key.step == "xd_test"
            else key.dataset if key.step == "xd_train" else "")


def folder_conflicts(run):
    """What RUN's folder says otherwise than its record: [(field, in the folder, recorded)]."""
    if run.identity is None:
        return []
    folder, recorded = run.folder_key, run.key
    conflicts = [(field, getattr(folder, field), getattr(recorded, field))
                 for field in ("step", "dataset", "trainer", "seed", "shots")
                 if getattr(folder, field) != getattr(recorded, field)]
    if recorded.step == "xd_test" and folder.source != recorded.source:
        conflicts.append(("source", folder.source, recorded.source))
    if not _config_folder_fits(folder.config, recorded, run.identity):
        conflicts.append(("config", folder.config, recorded.config))
    return conflicts


def _config_folder_fits(folder, key, identity):
    """True when a config folder's name can be the one the protocol scripts give a run of the
    recorded config: <CFG>, then _<TAG or the overrides' short form>, _epoch<N>, _released; and
    is not the name of another config of the trainer (a folder renamed to an ablation's)."""
    config = key.config.removesuffix(RELEASED_SUFFIX)
    plain = folder.removesuffix(RELEASED_SUFFIX)
    if folder.endswith(RELEASED_SUFFIX) != key.config.endswith(RELEASED_SUFFIX):
        return False
    if plain == config:
        return not identity.get("tag", "").replace("released", "").strip("+")
    if not plain.startswith(config + "_"):
        return False
    spec = next((spec for spec in TRAINERS.values() if spec.name == key.trainer), None)
    return spec is None or not (spec.config_dir / f"{plain}.yaml").is_file()


def deduplicate(runs):
    """RUNS with each run id once (a copy of a run folder, or a link to one, adds no seed):
    the copy whose folder agrees with its record counts; (kept, [(copy, kept)])."""
    return _first_per_slot(runs, lambda run: run.run_id)


def one_per_seed(runs):
    """RUNS with one finished run per cell and seed (step, dataset, method, seed): two runs of
    one identity and seed (different run ids, e.g. an evaluation of the last epoch and a
    LOAD_EPOCH evaluation of the same epoch) would overwrite each other in a cell. The one
    whose folder agrees with its record, else the first by path, counts; (kept, [(other,
    kept)])."""
    return _first_per_slot(runs, lambda run: None if run.metrics is None or run.identity is None
                           else (run.key.step, run.dataset, run.method, run.key.seed))


def _first_per_slot(runs, slot_of):
    """(RUNS with one run per slot, in their order, [(left out, kept)]): of the runs of one
    slot (slot_of(run); None: a run always kept), the one whose folder agrees with its record,
    else the first by path."""
    kept, left_out, first = [], [], {}
    for run in sorted(runs, key=lambda run: (bool(folder_conflicts(run)), str(run.path))):
        slot = slot_of(run)
        if slot is None:
            kept.append(run)
        elif slot in first:
            left_out.append((run, first[slot]))
        else:
            first[slot] = run
            kept.append(run)
    order = {id(run): index for index, run in enumerate(runs)}
    return sorted(kept, key=lambda run: order[id(run)]), left_out


EVALUATION_STEPS = ("base2new_test", "openworld_test", "base2new_test_base", "xd_test")


def stale_evaluations(runs):
    """Finished evaluations of a model that is no longer the one in its training run's folder
    (trained again since, e.g. with FORCE=1): [(evaluation, why)]. The training run is the one
    the evaluation loaded (its recorded folder, while that exists) and the training runs under
    ROOT of the same trainer, config, setting, dataset and seed."""
    training = [run for run in runs if run.metrics is not None
                and run.key.step in ("base2new_train", "xd_train")]
    by_id = {run.run_id: run for run in training if run.run_id}
    stale = []
    for run in runs:
        model_run = run.lineage.get("model_run_id")
        if run.metrics is None or run.key.step not in EVALUATION_STEPS or not model_run:
            continue
        why = _staleness(run, model_run, by_id, training)
        if why:
            stale.append((run, why))
    return stale


def _staleness(run, model_run, by_id, training):
    if model_run in by_id:
        trained = by_id[model_run]
        loaded, final = run.lineage.get("checkpoints") or {}, trained.lineage.get("checkpoints") or {}
        same_model = (run.identity or {}).get("model") == (trained.identity or {}).get("model")
        if same_model and loaded and final and loaded != final:
            return f"its checkpoint differs from the one now in {trained.path}"
        return None
    folder = run.lineage.get("model_dir")
    if folder and Path(folder).is_dir():
        now = read_run_metrics(folder)
        if now is None:
            return f"the model it evaluated is no longer in {folder} (no finished run there)"
        if now.get("run_id") and now.get("run_id") != model_run:
            return f"{folder} was trained again after this evaluation"
    source = run.key.source if run.key.step == "xd_test" else run.key.dataset
    steps = ("xd_train",) if run.key.step == "xd_test" else ("base2new_train",)
    same_slot = [trained for trained in training if trained.key.step in steps
                 and trained.key.dataset == source and trained.key.seed == run.key.seed
                 and trained.key.trainer == run.key.trainer
                 and trained.key.config == run.key.config
                 and _model_setting(trained) == _model_setting(run)]
    if same_slot:
        return f"{same_slot[0].path} holds another training run (trained again)"
    return None


def _model_setting(run):
    """The fields of a setting that a training run and its evaluations share."""
    setting = dict(run.setting or recorded_setting(run))
    return tuple(setting.get(field) for field in ("shots", "CLIP", "tag", "settings"))


def identity_conflicts(runs):
    """Lines for the runs whose folder contradicts their record (copied, moved or renamed
    folders): each is counted once, under its record."""
    lines = []
    for run in runs:
        for name, in_path, value in folder_conflicts(run):
            lines.append(f"{run.path}: its folder says {name} {in_path}, its results.json "
                         f"{value}; counted as {name} {value}")
        metrics = run.metrics or {}
        if run.identity is None and metrics:
            shots = _requested_shots(metrics, None)
            if shots is not None and shots != run.key.shots and "num_shots" in metrics:
                lines.append(f"{run.path}: its folder says shots {run.key.shots}, its results "
                             f"{shots}; counted as shots {shots}")
    return lines


def _group(runs, key):
    grouped = {}
    for run in runs:
        grouped.setdefault(key(run), []).append(run)
    return grouped


def _of_steps(runs, *steps):
    return [run for run in runs if run.key.step in steps]



def counted_runs(runs):
    """The runs the tables count: each run id once (copies listed), and no stale evaluation
    (listed with the command that re-tests it). Returns (runs, {"copies": lines, "stale":
    lines})."""
    kept, copies = deduplicate(runs)
    copy_lines = [f"{copy.path} is a copy of {original.path} (the same run id "
                  f"{copy.run_id}): counted once" for copy, original in copies]
    kept, twins = one_per_seed(kept)
    copy_lines += [f"{twin.path} is another run of the same identity and seed as {run.path} "
                   "(e.g. LOAD_EPOCH of the epoch the default test loads): counted once"
                   for twin, run in twins]
    stale = stale_evaluations(kept)
    stale_ids = {id(run) for run, _ in stale}
    stale_lines = [f"{run.path}: {why}; re-test: {retest_command(run)}" for run, why in stale]
    return [run for run in kept if id(run) not in stale_ids], {"copies": copy_lines,
                                                                "stale": stale_lines}


def retest_command(run):
    """The protocol script command that evaluates RUN's model again (from its record)."""
    identity = run.identity or {}
    trainer = next((name for name, spec in TRAINERS.items() if spec.name == run.key.trainer), None)
    if trainer is None:
        return "(a trainer the protocol scripts do not know: run its test again by hand)"
    config = run.key.config.removesuffix(RELEASED_SUFFIX)
    overrides = tuple(str(part) for key, value in (identity.get("overrides") or {}).items()
                      for part in (key, value if not isinstance(value, (list, dict))
                                   else json.dumps(value)))
    spec = TRAINERS[trainer]
    default = spec.xd_config if run.key.step.startswith("xd") else spec.config
    tag = "+".join(part for part in str(identity.get("tag") or "").split("+")
                   if part and part != "released")
    job = Job(trainer, run.key.step, run.key.dataset, run.key.seed,
              config="" if config == default else config, shots=run.key.shots,
              source=run.key.source or XD_SOURCE, overrides=overrides, tag=tag)
    return script_invocation(job)


# ----------------------------------------------------------------------------- statistics

def population_std(values):
    return statistics.pstdev(values)


def ci95(values):
    """Half-width of the 95% confidence interval of the mean: t(0.975, n-1) * s / sqrt(n), s the
    sample std; None for a single value (no interval)."""
    if len(values) < 2:
        return None
    t_quantile = float(stats.t.ppf(0.975, len(values) - 1))
    return t_quantile * statistics.stdev(values) / math.sqrt(len(values))


def harmonic_mean(base, new):
    return 2 * base * new / (base + new) if base + new else 0.0


@dataclass
class Cell:
    """One number of a table: a mean over seeds, or over datasets in an average row.

    mean is None when the runs exist but none has finished.
    """
    mean: float = None
    values: dict = field(default_factory=dict)        # seed -> value
    expected: tuple = ()                              # the seeds this method should have
    unfinished: dict = field(default_factory=dict)    # seed -> run folder without a result
    std: float = None
    ci95: float = None
    datasets: tuple = ()                              # average rows: the datasets averaged
    datasets_expected: int = 0

    @property
    def is_average(self):
        return self.datasets_expected > 0

    @property
    def missing(self):
        return sorted(set(self.expected) - set(self.values) - set(self.unfinished))

    @property
    def incomplete_average(self):
        return self.is_average and len(self.datasets) < self.datasets_expected


def seed_cell(values, expected, unfinished):
    numbers = [values[seed] for seed in sorted(values)]
    if not numbers:
        return Cell(None, {}, tuple(expected), dict(unfinished))
    return Cell(statistics.fmean(numbers), dict(values), tuple(expected), dict(unfinished),
                population_std(numbers), ci95(numbers))


def metric_cell(runs, metric, expected):
    """The cell of METRIC over the seeds of RUNS; None when there are no runs."""
    if not runs:
        return None
    values = {run.key.seed: float(run.metrics[metric]) for run in runs
              if run.metrics is not None and metric in run.metrics}
    unfinished = {run.key.seed: str(run.path) for run in runs
                  if run.metrics is None and run.key.seed not in values}
    return seed_cell(values, expected, unfinished)


def hm_cell(base, new):
    """HM of the mean base and mean new accuracy over the seeds that have both (so one seed's
    base is never paired with other seeds' new); its spread from those seeds' HMs. None when no
    seed has both."""
    if base is None or new is None:
        return None
    shared = sorted(set(base.values) & set(new.values))
    if not shared:
        return None
    per_seed = {seed: harmonic_mean(base.values[seed], new.values[seed]) for seed in shared}
    numbers = list(per_seed.values())
    mean_base = statistics.fmean(base.values[seed] for seed in shared)
    mean_new = statistics.fmean(new.values[seed] for seed in shared)
    expected = tuple(sorted(set(base.expected) | set(new.expected)))
    return Cell(harmonic_mean(mean_base, mean_new), per_seed, expected, {},
                population_std(numbers), ci95(numbers))


def average_hm_cell(dataset_cells, expected_count):
    """The average row's HM: the HM of the dataset-mean base and the dataset-mean new accuracy,
    each dataset's means taken over the seeds that have both (the seeds of its HM cell), so
    that base and new are averaged over the same seeds, as in the dataset rows."""
    paired = {}
    for name, cells in dataset_cells.items():
        base, new, hm = cells.get("base"), cells.get("new"), cells.get("HM")
        if hm is None or hm.mean is None:
            continue
        seeds = sorted(hm.values)
        paired[name] = (statistics.fmean(base.values[seed] for seed in seeds),
                        statistics.fmean(new.values[seed] for seed in seeds))
    if not paired:
        return None
    mean_base = statistics.fmean(base for base, _ in paired.values())
    mean_new = statistics.fmean(new for _, new in paired.values())
    return Cell(harmonic_mean(mean_base, mean_new), datasets=tuple(paired),
                datasets_expected=expected_count)


def average_cell(cells, expected_count):
    """Mean over the datasets (keys of CELLS) that have a number; None when none has."""
    present = {name: cell for name, cell in cells.items()
               if cell is not None and cell.mean is not None}
    if not present:
        return None
    return Cell(statistics.fmean(cell.mean for cell in present.values()),
                datasets=tuple(present), datasets_expected=expected_count)


# ----------------------------------------------------------------------------- tables

@dataclass
class Table:
    """Cells keyed by (method label, dataset label, metric).

    Dataset-major tables (base2new, openworld) print datasets as rows; the transfer tables
    (xd, dg) print methods as rows and datasets as columns, like the paper.
    """
    name: str
    title: str
    methods: list
    datasets: list
    metrics: list
    method_info: dict          # method label -> (trainer, config folder, setting)
    paper_datasets: dict       # dataset label -> the paper's column / row name
    average_labels: tuple
    cells: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    @property
    def datasets_as_rows(self):
        return self.name in ("base2new", "openworld")

    @property
    def setting_columns(self):
        """The setting fields that differ among the table's rows: a column each (the settings'
        fingerprint only in csv / json: the row names say which keys differ)."""
        return [name for name in varying_fields(self.method_info.values()) if name != "settings"]

    def setting_of(self, label):
        return dict(self.method_info[label][2] or ())


def method_labels(methods):
    """Labels of the rows, methods being (trainer, config folder, setting).

    By the trainer ("MaPLe", "MaPLe (released)" for released weights); the paper's ablation
    configs by their Table 5 name ("BMIP (Addition)"). Where a trainer has several other configs
    of the kind, its default config keeps the trainer's name and the others are
    "trainer/config". Runs of one config in several settings (other shots, CLIP weights,
    evaluated model, overrides) are told apart by what differs: "BMIP [shots 4]"."""
    methods = set(methods)
    folders = folder_labels({(trainer, config) for trainer, config, _ in methods})
    by_label = {}
    for method in methods:
        by_label.setdefault(folders[method[:2]], []).append(method)
    labels = {}
    for label, group in by_label.items():
        varying = varying_fields(group)
        keys = varying_settings_keys(group) if "settings" in varying else []
        for method in group:
            setting = dict(method[2] or ())
            parts = [f"{field} {_setting_text(setting.get(field))}" for field in varying
                     if field != "settings"]
            if "settings" in varying:
                values = SETTINGS.get(setting.get("settings"), ({},))[0]
                parts += ([f"{_short_key(key)} {_setting_text(values.get(key))}" for key in keys]
                          if keys and values else [f"settings {_setting_text(setting.get('settings'))}"])
            labels[method] = label if len(group) == 1 else label + " [" + ", ".join(parts) + "]"
    order = {name: index for index, name in enumerate(TRAINER_ORDER)}
    return dict(sorted(labels.items(), key=lambda item: (
        order.get(item[0][0], len(order)), item[0][:2], item[1])))


def varying_settings_keys(methods):
    """The config keys whose values differ among the recorded settings of METHODS; a key that
    only some record (added by a later version) counts as differing, shown "?" where missing."""
    recorded = [SETTINGS[dict(m[2] or ()).get("settings")][0] for m in methods
                if dict(m[2] or ()).get("settings") in SETTINGS]
    if len(recorded) < 2:
        return []
    every = set.union(*(set(values) for values in recorded))
    return sorted(key for key in every
                  if len({json.dumps(values.get(key), sort_keys=True) for values in recorded}) > 1)


def varying_fields(methods):
    """The setting fields whose values differ among METHODS, in SETTING_FIELDS order."""
    values = {}
    for _, _, setting in methods:
        setting = dict(setting or ())
        for field in SETTING_FIELDS:
            values.setdefault(field, set()).add(repr(setting.get(field)))
    return [field for field in SETTING_FIELDS if len(values.get(field, ())) > 1]


def _setting_text(value):
    if value is None:
        return UNRECORDED
    return str(value) if value != "" else "none"


def folder_labels(methods):
    """Label (trainer, config folder) pairs (see method_labels)."""
    order = {name: index for index, name in enumerate(TRAINER_ORDER)}
    methods = sorted(set(methods), key=lambda m: (order.get(m[0], len(order)), m))
    kinds = [(trainer, config.endswith(RELEASED_SUFFIX)) for trainer, config in methods]
    results = load_paper_results()
    ablations = dict(results.method_of_config)
    for config, entry in results.authors_configs.items():
        same = entry["method"] == results.method_of_trainer.get(config_trainer(config))
        ablations[config] = ("authors' code" if same else f"{entry['method']}, authors' code")
    defaults = {(spec.name, config) for spec in TRAINERS.values()
                for config in (spec.config, spec.xd_config)}

    def label(method, kind):
        trainer, config = method
        plain = config.removesuffix(RELEASED_SUFFIX)
        suffix = " (released)" if kind[1] else ""
        if plain in ablations:
            return f"{trainer} ({ablations[plain]}){suffix}"
        if kinds.count(kind) == 1 or (trainer, plain) in defaults:
            return trainer + suffix
        return f"{trainer}/{config}"

    labels = {method: label(method, kind) for method, kind in zip(methods, kinds, strict=True)}
    if len(set(labels.values())) < len(labels):  # e.g. a default and a cross-dataset config
        return {method: f"{method[0]}/{method[1]}" for method in methods}
    return labels


def config_trainer(config):
    """The trainer whose configs folder holds CONFIG (None if none)."""
    for spec in TRAINERS.values():
        if (spec.config_dir / f"{config}.yaml").is_file():
            return spec.name
    return None


def ordered_datasets(names, preferred):
    return [name for name in preferred if name in names] + sorted(set(names) - set(preferred))


def paper_cells(table, label, metric, columns, protocol_datasets):
    """LABEL's METRIC cells (keyed by column; COLUMNS maps dataset -> column) of the paper's
    datasets: what an average covers. User datasets are shown but not averaged."""
    return {columns[d]: table.cells.get((label, columns[d], metric))
            for d in protocol_datasets if d in columns}


def user_datasets_note(datasets, protocol_datasets):
    others = [dataset_label(d) for d in datasets if d not in protocol_datasets]
    if not others:
        return []
    return [f"Not in the paper's datasets, so left out of the averages: {', '.join(others)}."]


def expected_seeds(runs, requested):
    """The seeds a method should have: --seeds, else every seed it has anywhere in the table."""
    return tuple(requested) if requested else tuple(sorted({run.key.seed for run in runs}))


def _new_table(name, title, labels, dataset_labels, metrics, paper_datasets, averages):
    return Table(name, title, list(labels.values()), dataset_labels, metrics,
                 {label: method for method, label in labels.items()}, paper_datasets,
                 tuple(averages))


def base_new_cells(runs, requested_seeds):
    """{(method, dataset): {"base", "new", "HM"}} of the base-to-new runs.

    Base accuracy comes from an evaluation on the base classes (test_base: released weights)
    where one exists for the seed, else from the training run. Our reproduce.sh files released
    weights under a config of their own, so both meet only in trees written otherwise
    (base_result_conflicts finds them).
    """
    b2n_runs = _of_steps(runs, "base2new_train", "base2new_test_base", "base2new_test")
    cells = {}
    for method, method_runs in _group(b2n_runs, lambda run: run.method).items():
        expected = expected_seeds(method_runs, requested_seeds)
        for dataset, dataset_runs in _group(method_runs, lambda run: run.dataset).items():
            evaluated = {run.key.seed for run in _of_steps(dataset_runs, "base2new_test_base")
                         if run.metrics is not None}
            base_runs = _of_steps(dataset_runs, "base2new_test_base") + [
                run for run in _of_steps(dataset_runs, "base2new_train")
                if run.key.seed not in evaluated]
            base = metric_cell(base_runs, "accuracy", expected)
            new = metric_cell(_of_steps(dataset_runs, "base2new_test"), "accuracy", expected)
            cells[(method, dataset)] = {"base": base, "new": new, "HM": hm_cell(base, new)}
    return cells


def base_result_conflicts(runs):
    """(train_base folder, test_base folder) of each trainer / config / dataset / seed that has
    both results: the base accuracy of a training run and of an evaluation, maybe of other
    weights (e.g. released ones evaluated into the same config folder)."""
    finished = {}
    for run in _of_steps(runs, "base2new_train", "base2new_test_base"):
        if run.metrics is not None:
            where = (run.key.trainer, run.key.config, run.key.dataset, run.key.seed, run.key.shots)
            finished.setdefault(where, {})[run.key.step] = run.path
    return [(steps["base2new_train"], steps["base2new_test_base"])
            for _, steps in sorted(finished.items()) if len(steps) == 2]


def conflicts_warning(conflicts):
    lines = ["warning: these runs have both a training run's base accuracy (train_base) and an "
             "evaluation on the base classes (test_base), perhaps of other weights; the tables "
             "use test_base. Move one of each pair away (released weights: rerun them with "
             f"reproduce.sh, which writes <CFG>{RELEASED_SUFFIX} folders):"]
    for train, test in conflicts:
        lines += [f"  {train}", f"  {test}"]
    return "\n".join(lines)


def base2new_table(runs, requested_seeds):
    cells = base_new_cells(runs, requested_seeds)
    if not cells:
        return None
    labels = method_labels(method for method, _ in cells)
    datasets = ordered_datasets({dataset for _, dataset in cells}, BASE2NEW_DATASETS)
    names = [dataset_label(d) for d in datasets]
    table = _new_table("base2new", "Base-to-new generalisation: accuracy on the base and on the "
                       "new classes, HM their harmonic mean", labels, names + [AVERAGE],
                       ["base", "new", "HM"], {n: n for n in names + [AVERAGE]}, [AVERAGE])
    columns = dict(zip(datasets, names, strict=True))
    for method, label in labels.items():
        for dataset, name in columns.items():
            for metric, cell in cells.get((method, dataset), {}).items():
                table.cells[(label, name, metric)] = cell
        size = len(BASE2NEW_DATASETS)
        base, new = (average_cell(paper_cells(table, label, metric, columns, BASE2NEW_DATASETS),
                                  size) for metric in ("base", "new"))
        table.cells[(label, AVERAGE, "base")] = base
        table.cells[(label, AVERAGE, "new")] = new
        table.cells[(label, AVERAGE, "HM")] = average_hm_cell(
            {name: cells.get((method, dataset), {}) for dataset, name in columns.items()
             if dataset in BASE2NEW_DATASETS}, size)
    table.notes.append(HM_NOTE)
    table.notes.append("Average row: mean base and mean new accuracy over the datasets; its HM is "
                       "the HM of those two means (as the BMIP authors' README computes it), "
                       "each dataset's base and new taken over the seeds that have both.")
    table.notes += user_datasets_note(datasets, BASE2NEW_DATASETS)
    return table


SETTING_NOTE = ("Rows are runs of one setting (results.json's run identity); columns show what "
                "differs between them, never averaged together (? = not recorded).")
HM_NOTE = ("HM cells: the HM of the mean base and the mean new accuracy over the seeds that have "
           "both (their count in brackets); ± over those seeds' HMs.")


OPENWORLD_METRICS = {"Acc": "accuracy", "Acc base": "base_accuracy", "Acc new": "new_accuracy"}


def openworld_table(runs, requested_seeds):
    openworld_runs = _of_steps(runs, "openworld_test")
    if not openworld_runs:
        return None
    b2n = base_new_cells(runs, requested_seeds)
    by_method = _group(openworld_runs, lambda run: run.method)
    labels = method_labels(by_method)
    datasets = ordered_datasets({run.dataset for run in openworld_runs}, BASE2NEW_DATASETS)
    names = [dataset_label(d) for d in datasets]
    metrics = ["HM", *OPENWORLD_METRICS]
    table = _new_table("openworld", "Open-world generalisation (Table 1): the base-to-new HM "
                       "beside the accuracy with all classes as candidates, over all test images "
                       "(Acc) and over base-class / new-class images", labels, names + [AVERAGE],
                       metrics, {n: n for n in names + [AVERAGE]}, [AVERAGE])
    columns = dict(zip(datasets, names, strict=True))
    for method, label in labels.items():
        expected = expected_seeds(by_method[method], requested_seeds)
        by_dataset = _group(by_method[method], lambda run: run.dataset)
        for dataset, name in columns.items():
            table.cells[(label, name, "HM")] = b2n.get((method, dataset), {}).get("HM")
            for metric, key in OPENWORLD_METRICS.items():
                table.cells[(label, name, metric)] = metric_cell(by_dataset.get(dataset, []),
                                                                 key, expected)
        for metric in metrics:
            table.cells[(label, AVERAGE, metric)] = average_cell(
                paper_cells(table, label, metric, columns, BASE2NEW_DATASETS),
                len(BASE2NEW_DATASETS))
    table.notes.append(HM_NOTE)
    table.notes.append("Average row: mean of the dataset rows (the HM column too, as in Table 1).")
    table.notes += user_datasets_note(datasets, BASE2NEW_DATASETS)
    return table


def transfer_table(runs, protocol, requested_seeds):
    """Cross-dataset (Table 2) or domain generalisation (Table 3), methods as rows."""
    targets_runs = [run for run in _of_steps(runs, "xd_test") if run.key.protocol == protocol]
    if not targets_runs:
        return None
    methods = {run.method for run in targets_runs}
    source_runs = [run for run in _of_steps(runs, "xd_train") if run.method in methods]
    labels = method_labels(methods)
    # A row's source column stays when its runs are missing: shown as missing, counted in
    # averages. Rows of models trained on another source than ImageNet have their own column.
    source_of = {method: dict(method[2] or ()).get("source") or XD_SOURCE for method in methods}
    sources = ordered_datasets(set(source_of.values()), [XD_SOURCE])
    protocol_targets = XD_TARGETS if protocol == "xd" else DG_TARGETS
    targets = ordered_datasets({run.dataset for run in targets_runs}, protocol_targets)
    targets_expected = len(protocol_targets)
    source_labels = [f"{dataset_label(s)} (source)" for s in sources]
    target_labels = [dataset_label(t) for t in targets]
    averages = [AVERAGE, OOD_AVERAGE] if protocol == "dg" else [AVERAGE]
    if protocol == "xd":
        title = "Cross-dataset transfer (Table 2); Average over the targets"
    else:
        title = ("Domain generalisation (Table 3); Average over source and targets, "
                 "OOD Average over the targets")
    paper_names = dict(zip(source_labels, map(dataset_label, sources), strict=True))
    paper_names.update(zip(target_labels, target_labels, strict=True))
    paper_names.update({name: name for name in averages})
    table = _new_table(protocol, title, labels, source_labels + target_labels + averages,
                       ["accuracy"], paper_names, averages)
    target_columns = dict(zip(targets, target_labels, strict=True))
    for method, label in labels.items():
        method_runs = [run for run in source_runs + targets_runs if run.method == method]
        expected = expected_seeds(method_runs, requested_seeds)
        by_source = _group(_of_steps(method_runs, "xd_train"), lambda run: run.key.dataset)
        by_target = _group(_of_steps(method_runs, "xd_test"), lambda run: run.dataset)
        own_source = f"{dataset_label(source_of[method])} (source)"
        table.cells[(label, own_source, "accuracy")] = (metric_cell(
            by_source.get(source_of[method], []), "accuracy", expected) or missing_cell(expected))
        for dataset, column in target_columns.items():
            table.cells[(label, column, "accuracy")] = metric_cell(
                by_target.get(dataset, []), "accuracy", expected)
        target_cells = paper_cells(table, label, "accuracy", target_columns, protocol_targets)
        if protocol == "xd":
            table.cells[(label, AVERAGE, "accuracy")] = average_cell(target_cells,
                                                                     targets_expected)
        else:
            every = {own_source: table.cells[(label, own_source, "accuracy")]}
            table.cells[(label, AVERAGE, "accuracy")] = average_cell(
                {**every, **target_cells}, 1 + targets_expected)
            table.cells[(label, OOD_AVERAGE, "accuracy")] = average_cell(target_cells,
                                                                         targets_expected)
    table.notes += user_datasets_note(targets, protocol_targets)
    return table


def missing_cell(expected):
    """A cell with no runs at all, which the table shows as missing (not as an empty column)."""
    return Cell(None, {}, tuple(expected), {})


def build_tables(runs, requested_seeds=()):
    """The tables of the runs that did not fail (a failed run never counts as a seed)."""
    runs = [run for run in runs if not run.failed]
    if any(run.setting is None for run in runs):
        assign_settings(runs)
    tables = [base2new_table(runs, requested_seeds), openworld_table(runs, requested_seeds),
              transfer_table(runs, "xd", requested_seeds), transfer_table(runs, "dg", requested_seeds)]
    return [table for table in tables if table is not None]


# ----------------------------------------------------------------------------- paper numbers

@dataclass(frozen=True)
class PaperResults:
    """configs/paper_results.json, indexed by (table, method, dataset, metric)."""
    method_of_trainer: dict    # TRAINER.NAME -> the paper's method name
    method_of_config: dict     # ablation configs -> their Table 5 row
    entries: dict
    # Configs that reproduce the authors' code, which produced the paper's numbers -> {"method":
    # the paper's method, "twin": our paper-reading config that the paper's numbers are not
    # compared with (null: both are, BMIP's own default agreeing with the authors' code)}.
    authors_configs: dict = field(default_factory=dict)

    def method(self, trainer, config):
        """The paper's method of our runs, or of released weights evaluated with that config."""
        config = config.removesuffix(RELEASED_SUFFIX)
        if config in self.authors_configs:
            return self.authors_configs[config]["method"]
        return self.method_of_config.get(config) or self.method_of_trainer.get(trainer)

    @property
    def paper_reading_configs(self):
        """Our configs that read the paper where the authors' code differs: their rows are
        compared with the paper only through their _authors twins."""
        return {entry["twin"] for entry in self.authors_configs.values() if entry.get("twin")}


def load_paper_results(path=PAPER_RESULTS):
    document = json.loads(Path(path).read_text())
    entries = {(entry["table"], entry["method"], entry["dataset"], entry["metric"]): entry
               for entry in document["results"]}
    return PaperResults(document["method_of_trainer"], document["method_of_config"], entries,
                        document.get("authors_configs", {}))


PAPER_CLIP = "ViT-B/16"  # the paper's backbone: OpenAI's ViT-B/16 weights
NOT_PAPER_MARK = "†"
NOT_PAPER_NOTE = (f"{NOT_PAPER_MARK} not the paper's setting (16 shots, the published config, "
                  "OpenAI's ViT-B/16 weights; where a config has an _authors twin, which "
                  "reproduces the authors' code that produced the paper's numbers, the twin): "
                  "the paper's number is shown without a difference.")


def paper_setting(table, label):
    """True when a row's runs are in the paper's setting: 16 shots, a published config (a
    trainer's default or a Table 5 ablation; trained here or released weights; where a config
    reads the paper otherwise than the authors' code, which produced the paper's numbers, its
    _authors twin and not it) whose file is
    the published one and whose run changed none of its settings (no override; a tag alone
    changes nothing), and OpenAI's ViT-B/16 weights. Runs that record no identity (other
    codebases' logs) are taken at their folder's word."""
    from clip.pretrained import clip_sha256

    trainer, config, setting = table.method_info[label]
    fields = dict(setting or ())
    results = load_paper_results()
    published = {config for spec in TRAINERS.values() for config in (spec.config, spec.xd_config)}
    published |= set(results.method_of_config) | set(results.authors_configs)
    published -= results.paper_reading_configs
    changes, edited = setting_changes(setting)
    clip = fields.get("CLIP")
    return (fields.get("shots") == SHOTS and config.removesuffix(RELEASED_SUFFIX) in published
            and not changes and not edited
            and (clip is None or clip.endswith(f"sha256:{clip_sha256(PAPER_CLIP)[:12]}")))


def paper_entry(paper, table, method_label, dataset_label, metric):
    """The paper's entry (mean, std, table) for a cell, or None."""
    method = paper.method(*table.method_info[method_label][:2])
    dataset = table.paper_datasets.get(dataset_label, dataset_label)
    for source in PAPER_TABLES.get((table.name, metric, dataset_label in table.average_labels), ()):
        entry = paper.entries.get((source, method, dataset, metric))
        if entry is not None:
            return entry
    return None


# ----------------------------------------------------------------------------- records

def records(tables, paper=None):
    """One flat record per cell: what --format csv / json print."""
    rows = []
    for table in tables:
        for method in table.methods:
            for dataset in table.datasets:
                for metric in table.metrics:
                    cell = table.cells.get((method, dataset, metric))
                    trainer, config, _ = table.method_info[method]
                    row = {"table": table.name, "method": method, "trainer": trainer,
                           "config": config, "dataset": dataset, "metric": metric,
                           **{field.lower(): table.setting_of(method).get(field)
                              for field in SETTING_FIELDS},
                           "changes": changes_text(table.method_info[method][2], short=False),
                           **_cell_fields(cell)}
                    if paper is not None:
                        comparable = paper_setting(table, method)
                        row.update(_paper_fields(paper_entry(paper, table, method, dataset,
                                                             metric), cell, comparable))
                        row["paper_setting"] = comparable
                    rows.append(row)
    return rows


def _cell_fields(cell):
    cell = cell or Cell()
    return {"mean": cell.mean, "std": cell.std, "ci95": cell.ci95,
            "n": len(cell.datasets) if cell.is_average else len(cell.values),
            "seeds": sorted(cell.values), "missing_seeds": cell.missing,
            "unfinished_seeds": sorted(cell.unfinished), "datasets": list(cell.datasets)}


def _paper_fields(entry, cell, setting_comparable=True):
    if entry is None:
        return {"paper_mean": None, "paper_std": None, "paper_source": None, "diff": None}
    comparable = (setting_comparable and cell is not None and cell.mean is not None
                  and not cell.incomplete_average)
    return {"paper_mean": entry["mean"], "paper_std": entry.get("std"),
            "paper_source": entry["table"],
            "diff": cell.mean - entry["mean"] if comparable else None}


LIST_FIELDS = ("seeds", "missing_seeds", "unfinished_seeds", "datasets")


def to_csv(rows):
    """CSV of records: floats written exactly (repr), lists space-separated, None empty."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(key, value) for key, value in row.items()})
    return buffer.getvalue()


def _csv_value(key, value):
    if key in LIST_FIELDS:
        return ";".join(map(str, value))
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else value


def failed_lines(runs):
    """A line per failed run: its folder and the last error line of its log."""
    return [f"{run.path}: {run.error}" for run in runs if run.failed]


def problems(tables):
    """Lines naming every missing seed and unfinished run, per cell."""
    lines = []
    for table in tables:
        for (method, dataset, metric), cell in table.cells.items():
            if cell is None or cell.is_average or metric == "HM":
                continue
            where = f"{table.name} · {method} · {dataset} · {metric}"
            if cell.missing:
                lines.append(f"{where}: missing seed(s) {', '.join(map(str, cell.missing))}")
            for seed, folder in sorted(cell.unfinished.items()):
                lines.append(f"{where}: seed {seed} unfinished (no result in {folder})")
    return lines


# ----------------------------------------------------------------------------- text output

def format_cell(cell, paper_value=None, use_ci95=False, latex=False, comparable=True):
    empty = "--" if latex else "—"
    if cell is None:
        return empty
    if cell.mean is None:
        return "unfinished" if cell.unfinished else "missing" if cell.expected else empty
    if cell.is_average:
        text = f"{cell.mean:.2f}"
        if cell.incomplete_average:
            text += f" ({len(cell.datasets)}/{cell.datasets_expected} datasets)"
    else:
        spread = cell.ci95 if use_ci95 else cell.std
        count, expected = len(cell.values), len(set(cell.expected) | set(cell.values))
        plus_minus = r" $\pm$ " if latex else " ± "
        seeds = f"{count}/{expected}" if count < expected else f"{count}"
        spread_text = "" if spread is None else f"{plus_minus}{spread:.2f}"
        text = f"{cell.mean:.2f}{spread_text} ({seeds})"
    if paper_value is not None and not comparable:
        text += f" [paper {paper_value:.2f}]"
    elif paper_value is not None:
        delta = r"$\Delta$" if latex else "Δ"
        # An average over fewer datasets than the paper's is not comparable with it.
        difference = empty if cell.incomplete_average else f"{cell.mean - paper_value:+.2f}"
        text += f" [paper {paper_value:.2f}, {delta} {difference}]"
    return text


def table_rows(table, paper=None, use_ci95=False, latex=False):
    """(headers, rows) of a table as the paper lays it out; a column for each setting field
    that differs among the rows (then one row per dataset and method)."""
    comparable = {method: paper is None or paper_setting(table, method) for method in table.methods}

    def cell_text(method, dataset, metric):
        entry = paper_entry(paper, table, method, dataset, metric) if paper else None
        return format_cell(table.cells.get((method, dataset, metric)),
                           entry["mean"] if entry else None, use_ci95, latex, comparable[method])

    def name(method):
        changes = changes_text(table.method_info[method][2])
        named = f"{method} {{{changes}}}" if changes else method
        return named if comparable[method] else f"{named} {NOT_PAPER_MARK}"

    columns = table.setting_columns
    settings = {method: [_setting_text(table.setting_of(method).get(field))
                         for field in columns] for method in table.methods}
    settings_vary = bool(varying_fields(table.method_info.values()))
    if table.datasets_as_rows and (len(table.methods) > MAX_METHODS_SIDE_BY_SIDE or settings_vary):
        headers = ["Dataset", "Method", *columns, *table.metrics]
        rows = [[dataset, name(method), *settings[method]]
                + [cell_text(method, dataset, metric) for metric in table.metrics]
                for dataset in table.datasets for method in table.methods]
    elif table.datasets_as_rows:
        headers = ["Dataset"] + [f"{name(method)} {metric}" for method in table.methods
                                 for metric in table.metrics]
        rows = [[dataset] + [cell_text(method, dataset, metric) for method in table.methods
                             for metric in table.metrics] for dataset in table.datasets]
    else:
        headers = ["Method", *columns] + table.datasets
        rows = [[name(method), *settings[method]]
                + [cell_text(method, dataset, "accuracy") for dataset in table.datasets]
                for method in table.methods]
    return headers, rows


def render_text(tables, style, paper=None, use_ci95=False):
    latex = style == "latex"
    tablefmt = {"table": "simple", "markdown": "github", "latex": "latex_raw"}[style]
    spread = "95% interval" if use_ci95 else "std"
    blocks = []
    for table in tables:
        headers, rows = table_rows(table, paper, use_ci95, latex)
        if latex:
            headers, rows = _latex_escape(headers), [_latex_escape(row) for row in rows]
        title = f"### {table.title}" if style == "markdown" else f"== {table.title}"
        if latex:
            title = f"% {table.title}"
        notes = [f"Cells: mean ± {spread} over seeds (number of seeds)."] + table.notes
        if paper is not None and not all(paper_setting(table, m) for m in table.methods):
            notes.append(NOT_PAPER_NOTE)
        if table.setting_columns:
            notes.append(SETTING_NOTE)
        notes += changes_legend(table)
        comment = "% " if latex else ""
        blocks.append("\n".join([title, "", tabulate(rows, headers=headers, tablefmt=tablefmt,
                                                     disable_numparse=True),
                                 "", *(comment + note for note in notes)]))
    return "\n\n".join(blocks)


def changes_legend(table):
    """Below a table: what each row in {braces} changed from its published config, in full."""
    lines = []
    for method in table.methods:
        short = changes_text(table.method_info[method][2])
        if short:
            lines.append(f"{method} {{{short}}}: "
                         f"{changes_text(table.method_info[method][2], short=False)}.")
    if lines:
        lines.insert(0, "Not the published setting of their config ({short form}: in full):")
    return lines


def _latex_escape(cells):
    return [str(text).replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")
            .replace("{", r"\{").replace("}", r"\}") for text in cells]


# ----------------------------------------------------------------------------- plot

# The number each table's chart shows (the paper's headline column of that table).
PLOT_METRICS = {"base2new": "HM", "openworld": "Acc", "xd": "accuracy", "dg": "accuracy"}


def plot_series(table, paper=None, use_ci95=False):
    """What the chart of TABLE shows, per method: bar heights (None: no number), error bars
    (the spread over seeds; None for averages and single seeds), the paper's values, the
    averages over fewer datasets than expected ("k/N", else None) and the legend's label (the
    method, with its changes from the published config in braces)."""
    metric = PLOT_METRICS[table.name]
    series = {}
    for method in table.methods:
        cells = [table.cells.get((method, dataset, metric)) for dataset in table.datasets]
        spread = [(cell.ci95 if use_ci95 else cell.std) if cell is not None and len(cell.values) > 1
                  else None for cell in cells]
        papers = [(paper_entry(paper, table, method, dataset, metric) or {}).get("mean")
                  if paper is not None else None for dataset in table.datasets]
        incomplete = [f"{len(cell.datasets)}/{cell.datasets_expected}"
                      if cell is not None and cell.incomplete_average else None for cell in cells]
        changes = changes_text(table.method_info[method][2])
        series[method] = {"heights": [cell.mean if cell is not None else None for cell in cells],
                          "errors": spread, "paper": papers, "incomplete": incomplete,
                          "label": f"{method} {{{changes}}}" if changes else method}
    return metric, series


def plot_tables(tables, path, paper=None, use_ci95=False):
    """One chart per table (grouped bars: datasets x methods) in one image at PATH. A value
    of 0 (e.g. an HM with a new accuracy of 0) gets a thin hatched bar and its number, so it is
    not mistaken for a missing one. Returns {table name: (metric, series)} as plotted."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plotted = {table.name: plot_series(table, paper, use_ci95) for table in tables}
    width_in = max(6.0, 1.1 * max(len(table.datasets) for table in tables))
    figure, axes_list = plt.subplots(len(tables), 1, figsize=(width_in, 3.6 * len(tables)),
                                     squeeze=False)
    for table, axes in zip(tables, axes_list[:, 0], strict=True):
        metric, series = plotted[table.name]
        width = 0.8 / len(series)
        top = max([h + (e or 0) for s in series.values() for h, e in zip(s["heights"], s["errors"])
                   if h is not None] + [p for s in series.values() for p in s["paper"] if p] + [1])
        visible = top * 0.01  # the height of a bar whose value is 0
        for index, (method, values) in enumerate(series.items()):
            offset = (index - (len(series) - 1) / 2) * width
            positions = [i + offset for i in range(len(table.datasets))]
            present = [(x, h, e) for x, h, e in zip(positions, values["heights"], values["errors"])
                       if h is not None]
            for x, h, part in zip(positions, values["heights"], values["incomplete"]):
                if h is not None and part:  # an average over fewer datasets: say how many
                    axes.annotate(part, (x, max(h, visible)), ha="center", va="bottom",
                                  fontsize=6, rotation=90)
            if present:
                xs, heights, errors = zip(*present)
                bars = axes.bar(xs, [max(h, visible) for h in heights], width,
                                label=values["label"],
                                yerr=[e or 0 for e in errors], capsize=2, edgecolor="black",
                                linewidth=0.4)
                for bar, height in zip(bars, heights):
                    if height < visible:
                        bar.set_hatch("///")
                        axes.annotate(f"{height:.1f}", (bar.get_x() + width / 2, visible),
                                      ha="center", va="bottom", fontsize=7)
            marks = [(x, p) for x, p in zip(positions, values["paper"]) if p is not None]
            if marks:
                axes.scatter(*zip(*marks), marker="D", s=14, color="black", zorder=3,
                             label="paper" if index == 0 else None)
        axes.set_xticks(range(len(table.datasets)))
        axes.set_xticklabels(table.datasets, rotation=30, ha="right")
        axes.set_ylabel(f"{metric} (%)")
        spread = "95% CI" if use_ci95 else "std"
        axes.set_title(f"{re.split('[:;]', table.title)[0]}: {metric} (bars: mean over seeds, "
                       f"error bars: {spread})", fontsize=9)
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return plotted


# ----------------------------------------------------------------------------- classic form

def is_experiment_folder(folder):
    """True for a folder of seed runs (the classic single-experiment form)."""
    return any(result_file(sub) is not None for sub in Path(folder).iterdir() if sub.is_dir())


def classic_metrics(run_folder, test_log):
    """(the file read, its metrics) of a seed folder; (None, {}) when it has no result file."""
    path = result_file(run_folder)
    if path is None:
        return None, {}
    return path, read_result_file(path, test_log=True if test_log else None)


def classic_summary(directory, test_log=False, use_ci95=False, keyword=DEFAULT_KEYWORD):
    """Upstream's output for one experiment: per-seed lines, then mean +- spread per metric
    (accuracy and error, or only KEYWORD when another metric is asked for). Seed folders of
    different identities (settings, data, CLIP, ...) are summarised apart, each saying what
    sets it apart, and logs without our record (other codebases) apart from ours; a copy of a
    run (the same run id) counts once. Returns the summary of the one identity ({} for several:
    nothing to average them into), None when nothing was found."""
    folders = sorted(p for p in Path(directory).iterdir()
                     if p.is_dir() and not p.name.startswith("."))
    groups = classic_groups(folders, test_log)
    if len(groups) <= 1:
        print(f"Parsing files in {directory}")
        return _classic_group_summary(directory, groups[0][1] if groups else [], keyword,
                                      use_ci95, "")
    print(f"Parsing files in {directory}: its seed folders hold runs of {len(groups)} "
          "different identities, summarised apart (never averaged together)")
    for description, members in groups:
        print(f"--- {description}")
        _classic_group_summary(directory, members, keyword, use_ci95, f" ({description})")
    return {}


def classic_groups(folders, test_log):
    """[(what sets the group apart, [(folder, file read, metrics)])] of seed folders grouped by
    identity: results.json's (the setting's fingerprint, data, CLIP, evaluated model, trainer,
    config, dataset, step, tag), and one group of the runs without a results.json."""
    groups, seen, unfinished = {}, set(), []
    for folder in folders:
        path, metrics = classic_metrics(folder, test_log)
        run_id = metrics.get("run_id")
        if run_id and run_id in seen:
            print(f"copy: {folder} holds the run {run_id} again; counted once")
            continue
        seen.add(run_id)
        if "accuracy" not in metrics:
            unfinished.append((folder, path, metrics))
            continue
        groups.setdefault(_classic_identity(metrics), []).append((folder, path, metrics))
    if unfinished:  # listed with the first group, as missing seeds
        groups.setdefault(next(iter(groups), None), []).extend(unfinished)
    keys = list(groups)
    varying = [field for field in dict.fromkeys(f for key in keys if key for f, _ in key)
               if len({dict(key or ()).get(field) for key in keys if key}) > 1]
    described = []
    for key in keys:
        if key is None:
            text = "runs with no results.json (logs of other codebases or older versions)"
        else:
            fields = dict(key)
            text = ", ".join(f"{field} {fields.get(field)}" for field in varying) or "our runs"
        described.append((text, groups[key]))
    return described


def _classic_identity(metrics):
    identity = metrics.get("identity") if isinstance(metrics.get("identity"), dict) else None
    if identity is None:
        return None
    fingerprint = identity.get("fingerprint")
    settings = SETTINGS.setdefault(fingerprint, (identity.get("settings") or {},
                                                 identity.get("config_file")))[0] \
        if fingerprint else {}
    fields = {"trainer": identity.get("trainer"), "config": identity.get("config"),
              "dataset": metrics.get("dataset_config") or identity.get("dataset"),
              "step": identity.get("step"), "shots": identity.get("shots"),
              "CLIP": _clip_label(identity), "model": identity.get("model"),
              "tag": identity.get("tag"), "data": metrics.get("dataset_hash"),
              "overrides": None if fingerprint else json.dumps(identity.get("overrides"))}
    fields.update((key, json.dumps(value)) for key, value in settings.items())
    return tuple(sorted((field, value if isinstance(value, (str, int, float, type(None)))
                         else json.dumps(value)) for field, value in fields.items()))


def _classic_group_summary(directory, members, keyword, use_ci95, description):
    collected = {"accuracy": [], "error": []} if keyword == DEFAULT_KEYWORD else {keyword: []}
    for folder, path, metrics in members:
        if "accuracy" not in metrics:
            print(f"missing: {folder} has no result (unfinished or failed run)")
            continue
        if keyword not in metrics:
            print(f"missing: {path} records no {keyword} (it has: {', '.join(numeric_keys(metrics))})")
            continue
        found = {key: float(metrics[key]) for key in collected if key in metrics}
        print(f"file: {path}. "
              + " ".join(f"{key}: {value:.2f}%." for key, value in found.items()))
        for key, value in found.items():
            collected[key].append(value)
    if not collected[keyword]:
        print(f"Nothing found in {directory}{description}")
        return None
    print("===")
    print(f"Summary of directory: {directory}{description}")
    summary = {}
    for key, values in collected.items():
        if values:
            spread = ci95(values) if use_ci95 else population_std(values)
            summary[key] = statistics.fmean(values)
            spread_text = "n/a (one seed)" if spread is None else f"{spread:.2f}%"
            print(f"* {key}: {summary[key]:.2f}% +- {spread_text}")
    print("===")
    return summary


def classic_main(args):
    if not args.multi_exp:
        summary = classic_summary(args.directory, args.test_log, args.ci95, args.keyword)
        return 0 if summary is not None else 1
    if is_experiment_folder(args.directory):
        print(f"error: {args.directory} looks like a single experiment (its seed folders hold the "
              "results); drop --multi-exp, or give the folder that holds several experiments",
              file=sys.stderr)
        return 2
    averages = {}
    for experiment in sorted(p for p in Path(args.directory).iterdir()
                             if p.is_dir() and not p.name.startswith(".")):
        for key, value in (classic_summary(experiment, args.test_log, args.ci95,
                                           args.keyword) or {}).items():
            averages.setdefault(key, []).append(value)
    if not averages:
        return 1
    print("Average performance")
    for key, values in averages.items():
        print(f"* {key}: {statistics.fmean(values):.2f}%")
    return 0


# ----------------------------------------------------------------------------- --keyword


def numeric_keys(metrics):
    return sorted(key for key, value in metrics.items()
                  if isinstance(value, (int, float)) and not isinstance(value, bool))


def select_keyword(runs, keyword):
    """RUNS with KEYWORD's value in place of "accuracy" (the metric every table reads), and the
    finished runs that do not record it. The open-world per-half columns read
    base_<KEYWORD> / new_<KEYWORD> where recorded and stay empty otherwise."""
    if keyword == DEFAULT_KEYWORD:
        return runs, []
    selected, lacking = [], []
    for run in runs:
        if run.metrics is None:
            selected.append(run)
        elif keyword in run.metrics:
            metrics = {key: value for key, value in run.metrics.items()
                       if key not in ("base_accuracy", "new_accuracy")}
            metrics["accuracy"] = run.metrics[keyword]
            for half in ("base", "new"):
                if f"{half}_{keyword}" in run.metrics:
                    metrics[f"{half}_accuracy"] = run.metrics[f"{half}_{keyword}"]
            selected.append(replace(run, metrics=metrics))
        else:
            lacking.append(run)
    return selected, lacking


def keyword_warning(keyword, lacking):
    example = lacking[0]
    recorded = ", ".join(numeric_keys(example.metrics))
    return (f"warning: {len(lacking)} finished run(s) record no {keyword}, so they are left out "
            f"(e.g. {example.path}, which records: {recorded})")


# ----------------------------------------------------------------------------- released weights

def released_folders(directory):
    """Where reproduce.sh put the results that the MaPLe docs parse at DIRECTORY.

    The MaPLe docs parse released weights' results at the config folder of trained runs
    (base2new/train_base/<dataset>/shots_16/MaPLe/<CFG>, evaluation/MaPLe/<CFG>_16shots/<target>);
    our reproduce.sh writes them beside those, under <CFG>_released (<CFG>_released_16shots) and,
    for the base classes, base2new/test_base/. Returns the existing folders that DIRECTORY names
    that way (usually one)."""
    parts = list(Path(directory).parts)
    splits = [parts] + ([[("test_base" if p == "train_base" else p) for p in parts]]
                        if "train_base" in parts else [])
    found = []
    for variant in splits:
        for index in range(max(0, len(variant) - 3), len(variant)):
            cross = _CROSS_CONFIG_FOLDER.fullmatch(variant[index])
            name = (f"{cross.group(1)}{RELEASED_SUFFIX}_{cross.group(2)}" if cross
                    else variant[index] + RELEASED_SUFFIX)
            candidate = Path(*variant[:index], name, *variant[index + 1:])
            if candidate.is_dir() and candidate not in found:
                found.append(candidate)
    return found


def suffixed_siblings_hint(directory):
    """"; did you mean ..." naming the folders beside a missing DIRECTORY whose names are its name
    and a suffix (a tag, an override's short form, _epoch<N>, _<K>shots), else ""."""
    path = Path(directory)
    if not path.parent.is_dir():
        return ""
    siblings = sorted(sibling for sibling in path.parent.iterdir() if sibling.is_dir()
                      and sibling.name.startswith(path.name + "_"))
    return f"; folders with that name and a suffix: {', '.join(map(str, siblings))}" \
        if siblings else ""


# ----------------------------------------------------------------------------- main

def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", help="an output folder (or, classic form, one experiment)")
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument("--ci95", action="store_true",
                        help="the 95%% confidence interval's half-width instead of the std: "
                        "t(0.975, n-1) * s / sqrt(n) (Student's t, s the sample std, n seeds)")
    parser.add_argument("--paper", action="store_true",
                        help="the paper's numbers (configs/paper_results.json) beside ours")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="bar charts, one per table (base-to-new HM, open-world Acc, "
                        "cross-dataset and DG accuracy), error bars over seeds, the paper's "
                        "values as markers with --paper")
    parser.add_argument("--keyword", default=DEFAULT_KEYWORD, metavar="METRIC",
                        help="the metric to tabulate (CoOp's flag): any number a run records in "
                        "results.json, e.g. accuracy (default), error, macro_f1 (runs with only "
                        "a log.txt: accuracy, error, macro_f1)")
    parser.add_argument("--seeds", nargs="+", type=int, default=(),
                        help="seeds every cell should have (default: those found per method)")
    parser.add_argument("--test-log", action="store_true",
                        help="classic form: the logs are evaluation-only (detected if omitted)")
    parser.add_argument("--multi-exp", action="store_true",
                        help="classic form: DIRECTORY holds several experiment folders")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    if args.plot and not Path(args.plot).resolve().parent.is_dir():
        print(f"error: --plot {args.plot}: the folder {Path(args.plot).resolve().parent} does "
              "not exist", file=sys.stderr)
        return 2
    if not Path(args.directory).is_dir():
        released = released_folders(args.directory)
        if len(released) != 1:
            hint = (f"; the released weights' results are in: {', '.join(map(str, released))}"
                    if released else suffixed_siblings_hint(args.directory))
            print(f"error: {args.directory} is not a folder{hint}", file=sys.stderr)
            return 2
        print(f"note: {args.directory} does not exist; reading {released[0]}, where "
              "reproduce.sh put the released weights' results (folders of their own, "
              f"<CFG>{RELEASED_SUFFIX})\n")
        args.directory = str(released[0])
    if args.multi_exp or is_experiment_folder(args.directory):
        return classic_main(args)
    if args.keyword != DEFAULT_KEYWORD and args.paper:
        print(f"error: --paper compares with the paper's accuracies; it cannot be used with "
              f"--keyword {args.keyword}", file=sys.stderr)
        return 2
    found = find_runs(args.directory)
    runs, excluded = counted_runs(found)
    runs, lacking = select_keyword(runs, args.keyword)
    if lacking and not any(run.metrics is not None for run in runs):
        print(f"error: no run under {args.directory} records {args.keyword}; they record: "
              f"{', '.join(numeric_keys(lacking[0].metrics))}", file=sys.stderr)
        return 2
    if lacking:
        print(keyword_warning(args.keyword, lacking), file=sys.stderr)
    conflicts = base_result_conflicts(runs)
    if conflicts:
        print(conflicts_warning(conflicts), file=sys.stderr)
    tables = build_tables(runs, args.seeds)
    if not tables:
        print(f"Nothing found in {args.directory}: no run folders in the layout of "
              "scripts/protocols.py (e.g. base2new/train_base/<dataset>/shots_16/<TRAINER>/<CFG>/seed1)")
        return 1
    paper = load_paper_results() if args.paper else None
    failed = failed_lines(runs)
    contradictions = identity_conflicts(found) + excluded["copies"]
    stale = excluded["stale"]
    rows = records(tables, paper)
    if args.keyword != DEFAULT_KEYWORD:  # the metric names say accuracy; say what they hold
        rows = [{**row, "keyword": args.keyword} for row in rows]
    if args.format == "json":
        print(json.dumps({"records": rows, "problems": problems(tables), "failed": failed,
                          "conflicts": contradictions, "stale": stale}, indent=1))
    elif args.format == "csv":
        print(to_csv(rows), end="")
    else:
        if args.keyword != DEFAULT_KEYWORD:
            print(f"Metric: {args.keyword} (--keyword); the accuracy columns (Acc, base, new, "
                  f"HM of base and new) below hold {args.keyword}. Open-world Acc base / Acc new "
                  f"need base_{args.keyword} / new_{args.keyword} in results.json.\n")
        print(render_text(tables, args.format, paper, args.ci95))
        issues = problems(tables)
        if issues:
            print("\nMissing or unfinished:\n" + "\n".join(f"  {line}" for line in issues))
        if failed:
            print("\nFailed (not counted):\n" + "\n".join(f"  {line}" for line in failed))
        if contradictions:
            print("\nConflicts:\n" + "\n".join(f"  {line}" for line in contradictions))
        if stale:
            print("\nStale (not counted: the model they evaluated was replaced; re-test with the "
                  "command given):\n" + "\n".join(f"  {line}" for line in stale))
    if args.plot:
        plot_tables(tables, args.plot, paper, args.ci95)
        charts = ", ".join(f"{table.name} ({PLOT_METRICS[table.name]})" for table in tables)
        print(f"\nwrote {Path(args.plot).resolve()}: one chart per table, {charts}",
              file=sys.stderr if args.format in ("json", "csv") else sys.stdout)
    return 0


def run_from_command_line():
    """main(), quiet when the reader of the output stops early (`| head`)."""
    try:
        returncode = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at devnull so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        returncode = 1
    return returncode


if __name__ == "__main__":
    sys.exit(run_from_command_line())
