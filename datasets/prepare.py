"""Download, arrange and verify a dataset in its CoOp layout (DATASETS.md §Preparation tool).

    python -m datasets.prepare eurosat --root $DATA           # download, extract, arrange, verify
    python -m datasets.prepare eurosat --root $DATA --verify  # check a folder laid out by hand
    python -m datasets.prepare configs/datasets/my_flowers.yaml --root $DATA --verify  # your own data
    python -m datasets.prepare --list

The dataset is assembled in ``<root>/.prepare/staging/<folder>`` and moved to ``<root>/<folder>``
only after its class and image counts match the published ones, with a completion marker
(``.prepared.json``) written last; so a folder under its final name is complete. Downloads are
kept in ``<root>/.prepare/downloads`` until then, and an interrupted one resumes.
"""
import argparse
import datetime
import os
import shutil
import sys

import yaml

from dassl.data.datasets import DATASET_REGISTRY, DatasetError
from dassl.utils import UserError, write_json

import datasets
from dassl.utils.download import DownloadFailed
from datasets.download import fetch, place

MARKER = ".prepared.json"
WORK_FOLDER = ".prepare"
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "datasets")


def preparable_datasets():
    """Registry name -> class, for the datasets the tool knows how to fetch."""
    return {
        name: DATASET_REGISTRY.get(name)
        for name in DATASET_REGISTRY.registered_names()
        if getattr(DATASET_REGISTRY.get(name), "sources", ())
    }


def config_registry_name(config_file):
    """The DATASET.NAME a dataset config YAML sets (None when it sets none)."""
    with open(config_file) as f:
        return ((yaml.safe_load(f) or {}).get("DATASET") or {}).get("NAME")


def config_names():
    """Registry name -> config name (the stem of configs/datasets/<name>.yaml, DATASETS.md)."""
    names = {}
    for filename in sorted(os.listdir(CONFIG_DIR)):
        if filename.endswith(".yaml"):
            names.setdefault(config_registry_name(os.path.join(CONFIG_DIR, filename)), filename[: -len(".yaml")])
    return names


def resolve(name):
    """A dataset class from its config name, registry name or folder, any case."""
    configs = config_names()
    wanted = name.lower()
    for registry_name, cls in preparable_datasets().items():
        if wanted in (configs.get(registry_name, "").lower(), registry_name.lower(), cls.folder.lower()):
            return cls
    choices = ", ".join(sorted(configs.get(registry_name, registry_name) for registry_name in preparable_datasets()))
    raise DatasetError(f'unknown dataset "{name}"; choose one of: {choices} (or see --list).')


def dataset_config(cls, root, config_file=None):
    from dassl.config import get_cfg_default

    cfg = get_cfg_default()
    datasets.extend_cfg(cfg)
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.DATASET.ROOT = root
    cfg.DATASET.NAME = cls.__name__
    cfg.DATASET.NUM_SHOTS = -1
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    return cfg


def count_images(cls, root, config_file=None):
    """Build the dataset from ``<root>/<folder>`` (or the folder ``config_file`` names) and count
    its classes and images."""
    dataset = cls(dataset_config(cls, root, config_file))
    counts = {"classes": dataset.num_classes}
    if cls.test_only:
        counts["test"] = len(dataset.test)
        return counts
    counts["train"] = len(dataset.train_x)
    if not cls.val_is_test:
        counts["val"] = len(dataset.val)
    counts["test"] = len(dataset.test)
    return counts


def verify(cls, root):
    """Counts of ``<root>/<folder>``; raises if they differ from the published ones."""
    counts = count_images(cls, root)
    expected = cls.published_counts or {}
    wrong = [f"{key} {counts.get(key)} (expected {value})" for key, value in expected.items() if counts.get(key) != value]
    if wrong:
        raise DatasetError(
            f"{cls.__name__} in {os.path.join(root, cls.folder)} does not match the published "
            f"counts: {'; '.join(wrong)}. Some files are missing or extra (see DATASETS.md "
            f"§{cls.docs_section})."
        )
    print(f"{cls.__name__}: " + ", ".join(f"{value} {key}" for key, value in counts.items()) + " - as published")
    return counts


def write_marker(dataset_dir, cls, counts):
    marker = {
        "dataset": cls.__name__,
        "counts": counts,
        "prepared_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(marker, os.path.join(dataset_dir, MARKER))


def prepare(cls, root, mirror=None, archives_dir=None, keep_archives=False):
    """Fetch, extract, arrange and verify ``cls`` under ``root``; returns its counts."""
    root = os.path.abspath(os.path.expanduser(root))
    final_dir = os.path.join(root, cls.folder)
    if os.path.isfile(os.path.join(final_dir, MARKER)):
        print(f"{cls.__name__} is already prepared in {final_dir}")
        return None
    if os.path.exists(final_dir):
        if getattr(cls, "prepare_in_place", False):
            return _complete_in_place(cls, root, mirror, archives_dir)
        raise DatasetError(
            f'"{final_dir}" exists but was not completed by this tool. If you laid it out '
            "yourself, check it with --verify; otherwise delete it and run again."
        )
    downloads_dir = os.path.join(root, WORK_FOLDER, "downloads")
    staging_root = os.path.join(root, WORK_FOLDER, "staging")
    stage = os.path.join(staging_root, cls.folder)
    # What an interrupted run extracted is redone from the (kept) downloads.
    shutil.rmtree(stage, ignore_errors=True)

    paths = [_fetch(cls, source, downloads_dir, mirror, archives_dir, root) for source in cls.sources]
    os.makedirs(stage)
    for source, path in zip(cls.sources, paths, strict=True):
        place(source, path, stage)
    if hasattr(cls, "arrange"):
        cls.arrange(stage)
    counts = verify(cls, staging_root)
    write_marker(stage, cls, counts)
    os.rename(stage, final_dir)
    print(f"{cls.__name__} is ready in {final_dir}")
    if not keep_archives:
        _remove_downloads(cls, downloads_dir)
    return counts


def _fetch(cls, source, downloads_dir, mirror, archives_dir, root):
    try:
        return fetch(source, downloads_dir, mirror=mirror, archives_dir=archives_dir, root=root)
    except DatasetError as error:
        if cls.manual_steps and not source.public_address:
            raise DatasetError(f"{error}\n{cls.manual_steps}") from error
        if _unreachable(error):
            raise DatasetError(
                f"{error}\nOr lay the dataset out by hand in {os.path.join(root, cls.folder)} as "
                f"DATASETS.md §{cls.docs_section} describes, then check it with --verify.") from error
        raise


def _unreachable(error):
    cause = error.__cause__
    return isinstance(cause, DownloadFailed) and cause.kind == "unreachable"


def _complete_in_place(cls, root, mirror, archives_dir):
    """ImageNet laid out by hand (too big to copy): add the missing small files, then verify."""
    final_dir = os.path.join(root, cls.folder)
    downloads_dir = os.path.join(root, WORK_FOLDER, "downloads")
    for source in cls.sources:
        if not source.unpack and not os.path.exists(os.path.join(final_dir, source.dest, source.filename)):
            place(source, _fetch(cls, source, downloads_dir, mirror, archives_dir, root), final_dir)
    counts = verify(cls, root)
    write_marker(final_dir, cls, counts)
    return counts


def _remove_downloads(cls, downloads_dir):
    for source in cls.sources:
        path = os.path.join(downloads_dir, source.filename)
        if os.path.isfile(path):
            os.remove(path)


def verify_only(cls, root):
    """Check a folder laid out by hand; mark it complete when it matches."""
    root = os.path.abspath(os.path.expanduser(root))
    counts = verify(cls, root)
    write_marker(os.path.join(root, cls.folder), cls, counts)
    return counts


def dataset_config_file(name):
    """The dataset config YAML ``name`` stands for: a path to one, or configs/datasets/<name>.yaml
    (e.g. a copy of my_dataset_example.yaml for your own data); None when there is none."""
    path = name if name.endswith((".yaml", ".yml")) else os.path.join(CONFIG_DIR, f"{name}.yaml")
    return path if os.path.isfile(path) else None


def config_dataset_class(config_file):
    """The dataset class that ``config_file``'s DATASET.NAME registers."""
    registry_name = config_registry_name(config_file)
    if not registry_name:
        raise DatasetError(f"{config_file} sets no DATASET.NAME, so it is not a dataset config.")
    return DATASET_REGISTRY.get(registry_name)


def verify_config_file(config_file, root):
    """Check the dataset a config YAML describes. One the tool downloads is checked against its
    published counts; your own data (nothing to download) is built as train.py builds it, which
    checks its layout, and its classes and images are counted."""
    cls = config_dataset_class(config_file)
    if cls in preparable_datasets().values():
        return verify_only(cls, root)
    root = os.path.abspath(os.path.expanduser(root))
    counts = count_images(cls, root, config_file)
    print(f"{config_file} ({cls.__name__}): " + ", ".join(f"{value} {key}" for key, value in counts.items())
          + " - layout OK")
    return counts


def list_datasets():
    """One line per dataset: config name (what the tool and the scripts take), DATASET.NAME,
    folder, and whether it needs manual steps."""
    configs = config_names()
    rows = sorted(
        (configs.get(name, name), name, cls.folder, "manual steps + tool" if cls.manual_steps else "automatic")
        for name, cls in preparable_datasets().items()
    )
    line = "{:18s} {:22s} {:22s} {}"
    print(line.format("config name", "DATASET.NAME", "folder", "download"))
    for row in rows:
        print(line.format(*row))


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m datasets.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", help="dataset: config name (eurosat), registry name or folder; "
                        "with --verify also a dataset config YAML (your own data)")
    parser.add_argument("--root", help="the data folder (DATASET.ROOT / --root of train.py)")
    parser.add_argument("--verify", action="store_true", help="only check an existing folder and mark it complete")
    parser.add_argument("--mirror", help="base URL serving every file by its name, instead of the original addresses")
    parser.add_argument("--archives", help="folder holding files already downloaded (by their original names)")
    parser.add_argument("--keep-archives", action="store_true", help="keep the downloads after success")
    parser.add_argument("--list", action="store_true", help="list the datasets the tool knows")
    parser.add_argument("--coprompt-descriptions", action="store_true",
                        help="fetch only CoPrompt's class descriptions of the dataset (MD5-checked) "
                        "into <root>/coprompt_descriptions/")
    args = parser.parse_args(argv)
    if not args.list and not (args.name and args.root):
        parser.error("give a dataset name and --root (or --list)")
    return args


def check_folders(args):
    """--root must be a folder (or not exist yet), --archives an existing folder."""
    root = os.path.expanduser(args.root)
    if os.path.exists(root) and not os.path.isdir(root):
        raise DatasetError(f'--root "{args.root}" is a file, not a folder: pass the data folder')
    if args.archives and not os.path.isdir(os.path.expanduser(args.archives)):
        what = "is not a folder" if os.path.exists(os.path.expanduser(args.archives)) else "does not exist"
        raise DatasetError(f'--archives "{args.archives}" {what}: pass the folder that holds the '
                           "downloaded files")


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        list_datasets()
        return 0
    try:
        check_folders(args)
        config_file = dataset_config_file(args.name)
        if args.verify and config_file:
            verify_config_file(config_file, args.root)
            return 0
        cls = resolve(args.name)
        if args.coprompt_descriptions:
            from datasets.descriptions import fetch_descriptions

            fetch_descriptions(cls.__name__, args.root, mirror=args.mirror, archives_dir=args.archives)
        elif args.verify:
            verify_only(cls, args.root)
        else:
            prepare(cls, args.root, mirror=args.mirror, archives_dir=args.archives, keep_archives=args.keep_archives)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
