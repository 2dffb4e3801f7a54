r"""Train or evaluate a prompt-learning trainer (the CoOp / MaPLe command line).

    python train.py --root DATA --seed 1 --trainer CoOp \
        --dataset-config-file configs/datasets/eurosat.yaml \
        --config-file configs/trainers/CoOp/vit_b16_ep50.yaml \
        --output-dir output/... [--eval-only --model-dir DIR --load-epoch N] [KEY VALUE ...]
"""
import argparse
import ast
import contextlib
import os
import os.path as osp
import sys

# Nothing heavy is imported at module level: --help, the listings and argument errors answer
# without importing torch; the engine and the trainers are imported once a run is set up.

ROOT = osp.dirname(osp.abspath(__file__))
TRAINERS_DIR = osp.join(ROOT, "trainers")
TRAINER_CONFIGS_DIR = osp.join(ROOT, "configs", "trainers")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=str, default="", help="path to the datasets")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="", help="checkpoint directory to resume training from")
    parser.add_argument("--seed", type=int, default=None, help="random seed (>= 0; it also picks the few-shot images)")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="path to the method config file")
    parser.add_argument("--dataset-config-file", type=str, default="", help="path to the dataset config file")
    parser.add_argument("--trainer", type=str, default="", help="name of the trainer")
    parser.add_argument("--backbone", type=str, default="",
                        help="CLIP model: an OpenAI name (e.g. ViT-B/16), an open_clip name "
                        "<model>/<pretrained tag> (e.g. ViT-B-16/laion2b_s34b_b88k) or a CLIP file")
    parser.add_argument("--head", type=str, default="", help="name of the head")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="", help="load the model from this directory for evaluation")
    parser.add_argument("--load-epoch", type=int, help="load the model weights of this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="build the trainer but do not train")
    parser.add_argument("--subset-output", nargs=2, action="append", default=[],
                        metavar=("SUBSET", "DIR"),
                        help="with --eval-only over all classes: also file the test of the base "
                        "or new classes alone (what DATASET.SUBSAMPLE_CLASSES base|new tests) in "
                        "DIR, scored from the same logits (one pass over the test images)")
    parser.add_argument("--list-trainers", action="store_true",
                        help="print the trainers (and their configs in configs/trainers/) and exit")
    parser.add_argument("--list-configs", metavar="TRAINER",
                        help="print the configs of TRAINER in configs/trainers/TRAINER/ and exit")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return parser


def reset_cfg(cfg, args):
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed is not None:
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head


def _file_stem(path):
    return osp.splitext(osp.basename(path))[0]


def setup_cfg(args):
    from trainers import apply_backbone_input, default_cfg  # importing registers every trainer and dataset

    cfg = default_cfg()
    if args.dataset_config_file:
        cfg.merge_from_file(args.dataset_config_file)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    reset_cfg(cfg, args)
    cfg.merge_from_list(args.opts)
    apply_backbone_input(cfg, args.opts)
    cfg.RUN.EVAL_ONLY = bool(args.eval_only)
    if not cfg.RUN.CONFIG_NAME and args.config_file:
        cfg.RUN.CONFIG_NAME = _file_stem(args.config_file)
    if not cfg.RUN.DATASET_CONFIG_NAME and args.dataset_config_file:
        cfg.RUN.DATASET_CONFIG_NAME = _file_stem(args.dataset_config_file)
    cfg.freeze()
    return cfg


def check_registered(cfg):
    """Fail before anything is built, naming the choices, when the trainer or dataset is unknown."""
    from dassl.config import ConfigError
    from dassl.data.datasets import DATASET_REGISTRY
    from dassl.engine import TRAINER_REGISTRY
    from trainers import FAILED

    try:
        TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    except ConfigError as error:
        if not FAILED:
            raise
        raise ConfigError(f"{error}. Trainer files that failed to import: "
                          f"{'; '.join(FAILED.values())}") from None
    DATASET_REGISTRY.get(cfg.DATASET.NAME)


def print_args(args, cfg):
    print("***************")
    print("** Arguments **")
    print("***************")
    for key in sorted(args.__dict__):
        print(f"{key}: {args.__dict__[key]}")
    print("************")
    print("** Config **")
    print("************")
    print(cfg)


def save_config(cfg):
    """The resolved config next to the log, so the run can be reproduced from it. The config of
    an earlier run in the same folder is kept, renamed with a timestamp like its log."""
    from dassl.utils import atomic_write, keep_old_file
    from dassl.utils.run_files import CONFIG_FILE

    path = osp.join(cfg.OUTPUT_DIR, CONFIG_FILE)
    keep_old_file(path)
    with atomic_write(path) as f:
        f.write(cfg.dump())


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.list_trainers:
        print_trainers(trainer_catalog())
        return
    if args.list_configs:
        print_configs(args.list_configs, trainer_catalog())
        return
    from dassl.utils import UserError, run_folder_lock

    created = cfg = None
    try:
        cfg = setup_cfg(args)
        check_registered(cfg)
        created = cfg.OUTPUT_DIR if cfg.OUTPUT_DIR and not osp.exists(cfg.OUTPUT_DIR) else None
        # One run per output folder: a second one would mix its files with this one's. The
        # folders --subset-output files results into are this run's output folders too.
        with contextlib.ExitStack() as locks:
            for folder in [cfg.OUTPUT_DIR] + [run["output_dir"] for run in subset_runs(args)]:
                locks.enter_context(run_folder_lock(folder))
            start_run(cfg, args)
            run(cfg, args)
    except UserError as err:
        if created:  # refused before it trained or evaluated anything: leave no folder
            from dassl.utils.run_files import remove_refused_run

            remove_refused_run(created)
        # The message says what to do: print it alone instead of a traceback.
        sys.exit(f"error: {err}")
    except (MemoryError, RuntimeError) as err:  # after UserError, some of which are RuntimeErrors
        if cfg is None or not is_out_of_memory(err):
            raise
        sys.exit(f"error: {out_of_memory_message(cfg, err)}")


# ---------------------------------------------------------------------------------------------
# Listings, read from the files (no import): trainers are the classes a file in trainers/
# registers with @TRAINER_REGISTRY.register(); configs, the YAML files of
# configs/trainers/<TRAINER>/.


def registered_trainer_names(path):
    """Names of the classes that the Python file `path` registers as trainers."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    return [node.name for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef) and any(map(_registers_trainer, node.decorator_list))]


def _registers_trainer(decorator):
    call = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(call, ast.Attribute) and call.attr == "register"
            and isinstance(call.value, ast.Name) and call.value.id == "TRAINER_REGISTRY")


def trainer_catalog(folder=TRAINERS_DIR, configs_dir=TRAINER_CONFIGS_DIR):
    """{trainer name: its config names} for the trainer files in `folder`; a file that cannot
    be read is reported in one line on stderr and skipped."""
    catalog = {}
    for name in sorted(os.listdir(folder)):
        path = osp.join(folder, name)
        if not name.endswith(".py") or name.startswith("__"):
            continue
        try:
            trainers = registered_trainer_names(path)
        except (SyntaxError, ValueError, UnicodeDecodeError, OSError) as error:
            first_line = (str(error).splitlines() or [""])[0]
            print(f"warning: trainer file {path}: {type(error).__name__}: {first_line} (skipped)",
                  file=sys.stderr)
            continue
        for trainer in trainers:
            catalog[trainer] = config_names(osp.join(configs_dir, trainer))
    return catalog


def config_names(folder):
    if not osp.isdir(folder):
        return []
    return sorted(osp.splitext(name)[0] for name in os.listdir(folder) if name.endswith(".yaml"))


def print_trainers(catalog):
    width = max(map(len, catalog), default=0)
    for trainer, configs in sorted(catalog.items()):
        print(f"{trainer:<{width}}  {', '.join(configs) if configs else '(no configs of its own)'}")


def print_configs(trainer, catalog):
    if trainer not in catalog:
        sys.exit(f'error: unknown trainer "{trainer}" (--list-configs). Trainers: '
                 f"{', '.join(sorted(catalog))}")
    configs = catalog[trainer]
    if not configs:
        print(f"{trainer} has no configs of its own in {osp.relpath(TRAINER_CONFIGS_DIR)}/{trainer}/",
              file=sys.stderr)
    for name in configs:
        print(osp.join(osp.relpath(TRAINER_CONFIGS_DIR), trainer, name + ".yaml"))


def start_run(cfg, args):
    """Log to OUTPUT_DIR/log.txt, seed, and record the arguments, config and environment."""
    import torch

    from dassl.config import check_values
    from dassl.engine.resume import check_resume_config
    from dassl.utils import collect_env_info, remove_temporary_files, set_random_seed, setup_logger

    if trains(args):
        # Before anything in OUTPUT_DIR changes, so a refused resume leaves the run as it was.
        check_resume_config(cfg)
    setup_logger(cfg.OUTPUT_DIR)
    for path in remove_temporary_files(cfg.OUTPUT_DIR):
        print(f"Removed {path}, left by a write that was interrupted")
    check_values(cfg)  # after the log starts, so that a refused run's log says why
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
    print_args(args, cfg)
    save_config(cfg)
    print("Collecting env info ...")
    print(f"** System info **\n{collect_env_info()}\n")


def trains(args):
    return not args.eval_only and not args.no_train


def identity_of(cfg, args):
    """The run's identity (dassl.config.identity) as results.json records it, less the model
    the run evaluates. A user's dataset is named by its config (two folders of data named alike
    are two datasets); the others by their registry name."""
    from clip.pretrained import clip_sha256
    from dassl.config.identity import run_identity
    from dassl.data.datasets import DATASET_REGISTRY

    dataset = DATASET_REGISTRY.get(cfg.DATASET.NAME)
    name = dataset.own_name(cfg)
    if name != cfg.DATASET.NAME and cfg.RUN.DATASET_CONFIG_NAME:
        name = cfg.RUN.DATASET_CONFIG_NAME
    identity = run_identity(cfg, args.opts, name, clip_sha256(cfg.MODEL.BACKBONE.NAME),
                            config_file_record(cfg, args))
    from clip.openclip import backbone_label

    identity["backbone_label"] = backbone_label(cfg.MODEL.BACKBONE.NAME)  # the tables' name
    return identity


PUBLISHED_CONFIGS = osp.join(ROOT, "configs", "published.json")


def published_configs():
    """{config file path relative to the repository: SHA-256 of its contents as published}
    (configs/published.json, written by `python -m scripts.publish_configs`)."""
    import json

    with open(PUBLISHED_CONFIGS, encoding="utf-8") as f:
        return json.load(f)


def config_file_record(cfg, args):
    """What the run's trainer config file is: its path, the SHA-256 of its contents, whether
    they are the published ones, and, when they are, every setting of the run that differs
    from what the published file gives ({key: [published, run]}: the command line's doing)."""
    from dassl.config.identity import config_settings, settings_differences
    from dassl.utils.download import file_digest

    if not args.config_file or not osp.isfile(args.config_file):
        return None
    digest = file_digest(args.config_file, "sha256")
    relative = osp.relpath(osp.abspath(args.config_file), ROOT).replace(os.sep, "/")
    published = published_configs().get(relative) == digest
    record = {"path": relative if not relative.startswith("..") else osp.abspath(args.config_file),
              "sha256": digest, "published": published, "changes": None}
    if published:
        plain = setup_cfg(build_parser().parse_args(
            [argument for argument in ("--trainer", args.trainer, "--config-file",
                                       args.config_file, "--dataset-config-file",
                                       args.dataset_config_file) if argument is not None]))
        record["changes"] = {key: [before, after] for key, before, after in
                             settings_differences(config_settings(plain), config_settings(cfg))}
    return record


# The base-to-new tests a --subset-output files (scripts/protocols.py's steps), as their own
# runs record them.
SUBSET_STEPS = {"base": "base2new_test_base", "new": "base2new_test"}


def subset_runs(args):
    """The class-subset tests to file from an all-class evaluation (--subset-output)."""
    from dassl.utils import UserError

    runs = []
    for subset, directory in args.subset_output:
        if subset not in SUBSET_STEPS or not args.eval_only:
            raise UserError(f"--subset-output {subset} {directory}: give base or new, with "
                            "--eval-only")
        fields = {"protocol": "base2new", "subsample_classes": subset}
        runs.append({"subset": subset, "output_dir": directory, "fields": fields,
                     "identity": {**fields, "step": SUBSET_STEPS[subset]}})
    return runs


def scores_classes_independently(cfg):
    """True when the trainer's logit of a class does not depend on which other classes are
    candidates, so one all-class test gives the base / new tests' numbers (--subset-output)."""
    from dassl.engine import TRAINER_REGISTRY

    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME).scores_classes_independently(cfg)


# What a run was doing, for the out-of-memory message.
PHASE = {"now": "building the model"}

_OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "not enough memory",
                  "failed to allocate memory")


def is_out_of_memory(error):
    """True for Python's MemoryError and torch's allocation failures (CUDA and CPU)."""
    return isinstance(error, MemoryError) or any(
        text in str(error).lower() for text in _OUT_OF_MEMORY)


def out_of_memory_message(cfg, error):
    """One line: where memory ran out and the settings that lower what a run needs."""
    device = "GPU" if "cuda" in str(error).lower() else "memory"
    batch = f"DATALOADER.TEST.BATCH_SIZE (now {cfg.DATALOADER.TEST.BATCH_SIZE}, its evaluation)"
    if PHASE["now"] != "evaluating":
        batch = (f"DATALOADER.TRAIN_X.BATCH_SIZE (now {cfg.DATALOADER.TRAIN_X.BATCH_SIZE}) or "
                 + batch)
    more = ("; on a GPU, a half precision (TRAINER.<NAME>.PREC fp16 or bf16) and "
            "MODEL.GRAD_CHECKPOINTING True need less" if PHASE["now"] != "evaluating" else "")
    return (f"out of {device} while {PHASE['now']} ({type(error).__name__}): lower {batch}"
            f"{more}, or free the {device} that other processes hold")


def run(cfg, args):
    from dassl.engine import build_trainer

    PHASE["now"] = "building the model"
    trainer = build_trainer(cfg)
    trainer.run_identity = identity_of(cfg, args)
    trainer.subset_runs = subset_runs(args)
    if args.eval_only:
        check_model_dir_given(trainer, args)
        check_model_settings(cfg, args.model_dir)
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        PHASE["now"] = "evaluating"
        trainer.test()
        return
    if trains(args):
        PHASE["now"] = "training"
        trainer.train()


# What an evaluation may set otherwise than the training run of the model it loads: how it is
# scored (TEST.*); the data are the evaluation's own (DATASET.*, left out of the settings).
EVALUATION_SECTIONS = ("TEST.",)


def check_model_settings(cfg, model_dir):
    """Refuse to evaluate a model of ours (its folder holds the training run's config.yaml)
    with other settings than it was trained with: the evaluation would build another model, or
    file its numbers under another setting. Lists every key (training -> this command)."""
    import yaml

    from dassl.config.identity import config_settings, flatten, in_settings, settings_differences
    from dassl.utils import UserError
    from dassl.utils.run_files import CONFIG_FILE

    path = osp.join(model_dir or "", CONFIG_FILE)
    if not model_dir or not osp.isfile(path):
        return  # weights of another codebase, or released ones: nothing recorded to compare
    try:
        with open(path, encoding="utf-8") as f:
            trained = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UserError(f"cannot read the training run's config {path}: {error}") from None
    if not isinstance(trained, dict):
        raise UserError(f"{path} is not a config (a mapping of keys)")
    trained = {key: value for key, value in flatten(trained).items() if in_settings(key)}
    differences = [(key, old, new) for key, old, new
                   in settings_differences(trained, config_settings(cfg))
                   if not key.startswith(EVALUATION_SECTIONS)]
    if differences:
        listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in differences)
        raise UserError(
            f"the model in {model_dir} was trained with other settings than this evaluation "
            f"gives (training -> this command): {listed}. Evaluate it with the training's "
            f"settings (its overrides are in {path}), or train a model with these.")


def check_model_dir_given(trainer, args):
    """Evaluating a trainer with learned parameters needs the weights of a training run; without
    them it would score its random initialisation."""
    if not args.model_dir and trainer.get_model_names():
        from dassl.utils import UserError

        raise UserError(
            f"--eval-only needs --model-dir (the training run's folder) for {trainer.cfg.TRAINER.NAME}; "
            "only zero-shot trainers evaluate without one"
        )


if __name__ == "__main__":
    main()
