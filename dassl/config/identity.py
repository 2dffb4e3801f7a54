"""A run's identity: everything that changes its numbers, recorded whole in results.json.

``run_identity`` builds it from the resolved config (values, not the command line): protocol and
step, dataset (a user dataset by the name of its config), transfer source, trainer, config, tag,
shots, seed, the backbone and the SHA-256 of its CLIP file, and ``settings``: the value of every
key of the resolved config that changes training or scoring, by the one rule ``changes_training``
(the rule train.py's resume check applies, dassl.engine.resume), whatever set it (defaults, the
YAML files, the command line), with its ``fingerprint``. The command-line overrides are kept too,
for labels. The engine adds the model it evaluated ("epoch N" or "best_val"). Nothing here
imports torch: the scripts' --help uses it. The protocol scripts build the identity a request
would have the same way and compare it with a finished run's (``identity_differences``); the
parser never puts two fingerprints in one cell.
"""
import hashlib
import json

# Exact keys, or sections ending in "." (every key below them).
RESUME_SAFE_KEYS = (
    "OUTPUT_DIR",
    "RESUME",
    "DATASET.ROOT",  # the same data moved to another disk
    "DATALOADER.NUM_WORKERS",
    "DATALOADER.TEST.",
    "TRAIN.PRINT_FREQ",
    "TEST.EVALUATOR",
    "TEST.PER_CLASS_RESULT",
    "TEST.COMPUTE_CMAT",
    "TEST.SPLIT",
    "VERBOSE",
    "USE_CUDA",
    "RUN.CONFIG_NAME",  # names of the config files; their contents are compared key by key
    "RUN.DATASET_CONFIG_NAME",
    "RUN.EVAL_ONLY",
)


def changes_training(key):
    """False for the keys of ``RESUME_SAFE_KEYS`` (where files are, speed, printing), True for
    every other key: it changes what a run trains or how it is scored. The run identity, the
    protocol scripts' folder tags and train.py's resume check use the same rule."""
    return not any(key == safe or (safe.endswith(".") and key.startswith(safe))
                   for safe in RESUME_SAFE_KEYS)


# Config keys recorded in fields of their own, so not listed again among the overrides.
OWN_FIELD_KEYS = frozenset({
    "SEED", "DATASET.NAME", "DATASET.NUM_SHOTS", "DATASET.SUBSAMPLE_CLASSES", "TRAINER.NAME",
    "MODEL.BACKBONE.NAME", "RUN.PROTOCOL", "RUN.STEP", "RUN.SOURCE", "RUN.TAG",
    "RUN.CONFIG_NAME", "RUN.DATASET_CONFIG_NAME",
})
# Recorded for the reader but not compared: the CLIP file's fingerprint says what it holds,
# wherever it lies; the settings' fingerprint is compared through the settings themselves, and
# the command-line overrides are part of them.
INFORMATIVE_FIELDS = ("backbone",)
DERIVED_FIELDS = ("fingerprint", "overrides", "config_file", "backbone_label")
# Keys that are not part of the settings: those with fields of their own, and the dataset's keys,
# whose data the data hashes of results.json identify (the training sample and the test set).
SETTINGS_EXCLUDED_SECTIONS = ("DATASET.",)
# What a training run's identity is known only once it ran (early stopping decides the epoch).
OUTCOME_FIELDS = ("model",)


def config_value(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return _plain(node)


def _plain(value):
    """The value as results.json stores it (tuples become lists), so that both compare equal."""
    return json.loads(json.dumps(value))


def flatten(node, prefix=""):
    """{"A.B.C": value} of a (yacs) config node, keys in sorted order."""
    flat = {}
    for name in sorted(node):
        value = node[name]
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = _plain(value)
    return flat


def in_settings(key):
    return (changes_training(key) and key not in OWN_FIELD_KEYS
            and not key.startswith(SETTINGS_EXCLUDED_SECTIONS))


def config_settings(cfg):
    """The values of every key of the resolved config that changes training or scoring (less the
    keys recorded in fields of their own and the dataset's keys)."""
    return {key: value for key, value in flatten(cfg).items() if in_settings(key)}


def settings_fingerprint(settings):
    """A short SHA-256 of the settings: equal settings, equal fingerprints."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def settings_differences(old, new):
    """(key, old value, new value) of the keys two settings give different values; a key only
    one side has (a key added by a later version, with its default) is not a difference."""
    return [(key, old[key], new[key]) for key in sorted(set(old) & set(new))
            if old[key] != new[key]]


def override_keys(opts):
    """The keys of KEY VALUE pairs that change training or evaluation (in their first order)."""
    keys = list(dict.fromkeys(opts[::2]))
    return [key for key in keys if changes_training(key) and key not in OWN_FIELD_KEYS]


def run_identity(cfg, opts, dataset_name, clip_sha256, config_file=None):
    """The identity of a run of ``cfg`` whose command line gave the overrides ``opts``;
    CONFIG_FILE: what ``config_file_record`` says of the trainer's config file."""
    settings = config_settings(cfg)
    return {
        "protocol": cfg.RUN.PROTOCOL,
        "step": cfg.RUN.STEP,
        "dataset": dataset_name,
        "source": cfg.RUN.SOURCE,
        "trainer": cfg.TRAINER.NAME,
        "config": cfg.RUN.CONFIG_NAME,
        "tag": cfg.RUN.TAG,
        "overrides": {key: config_value(cfg, key) for key in override_keys(list(opts or ()))},
        "shots": cfg.DATASET.NUM_SHOTS,
        "subsample_classes": cfg.DATASET.SUBSAMPLE_CLASSES,
        "seed": cfg.SEED,
        "backbone": cfg.MODEL.BACKBONE.NAME,
        "clip_sha256": clip_sha256,
        "settings": settings,
        "fingerprint": settings_fingerprint(settings),
        "config_file": config_file,
    }


def evaluated_model(epoch, best):
    """The identity's "model": "best_val" (model-best.pth.tar), "epoch N", or None (nothing
    loaded: zero-shot)."""
    if best:
        return "best_val"
    return None if epoch is None else f"epoch {epoch}"


def identity_differences(old, new, ignore=()):
    """``(field, old value, new value)`` for each field the two identities set differently;
    settings are compared key by key ("settings.OPTIM.LR"; identities of older versions, which
    record none, by their overrides: "overrides.OPTIM.LR"). The backbone's name is compared
    only where a CLIP fingerprint is missing."""
    skipped = set(ignore)
    if old.get("clip_sha256") and new.get("clip_sha256"):
        skipped.update(INFORMATIVE_FIELDS)
    both_settled = old.get("settings") is not None and new.get("settings") is not None
    skipped.update(DERIVED_FIELDS if both_settled
                   else ("settings", "fingerprint", "config_file", "backbone_label"))
    differences = []
    for field in dict.fromkeys([*old, *new]):
        if field in skipped:
            continue
        if field == "settings":
            differences += [(f"settings.{key}", before, after) for key, before, after
                            in settings_differences(old[field], new[field])]
        elif field == "overrides":
            before, after = old.get(field) or {}, new.get(field) or {}
            differences += [(f"overrides.{key}", before.get(key), after.get(key))
                            for key in dict.fromkeys([*before, *after])
                            if before.get(key) != after.get(key)]
        elif old.get(field) != new.get(field):
            differences.append((field, old.get(field), new.get(field)))
    return differences


def format_differences(differences):
    return "\n".join(f"  {field}: {old!r} -> {new!r}" for field, old, new in differences)
