"""`--help` of the protocol scripts (`bash scripts/<trainer>/<script>.sh --help`).

Everything shown is read from where it is defined: the description from the wrapper's header
comment, arguments from scripts/protocols.py's USAGE, the config and output folder from its
TRAINERS and run_dir, the environment variables from its docstring. Nothing here imports torch,
so the help answers at once.
"""
import re
from pathlib import Path

from scripts import protocols
from scripts.protocols import (BASE2NEW_DATASETS, DG_TARGETS, REPRODUCE_STEPS, TRAINERS, USAGE,
                               XD_SOURCE, Job, run_dir)

ARGUMENTS = {
    "DATASET": "a dataset name, configs/datasets/<DATASET>.yaml: " + " ".join(BASE2NEW_DATASETS),
    "[SOURCE]": f"the training set (default {XD_SOURCE}; its 16-shot split of all classes)",
    "SEED": "the run's seed; it also picks the few-shot images (the paper uses 1 2 3)",
    "WEIGHTS_DIR": "the released weights, the MaPLe authors' layout (<dataset>/base/seed<S>/, "
                   "imagenet/seed<S>/ for reproduce_xd); see `python -m scripts.released_weights`",
}
XD_TEST_DATASETS = ("a cross-dataset target (any base-to-new dataset but imagenet) or an "
                    "ImageNet variant for domain generalisation: " + " ".join(DG_TARGETS))
EXAMPLE_ARGUMENTS = {"DATASET": "eurosat", "[SOURCE]": "", "SEED": "1",
                     "WEIGHTS_DIR": "weights/maple/eurosat"}


def wrapper_path(trainer, script):
    return protocols.REPO_ROOT / "scripts" / trainer / f"{script}.sh"


def description(trainer, script):
    """The wrapper's header comment without its Usage / Defaults lines."""
    path = wrapper_path(trainer, script)
    lines = []
    for line in path.read_text().splitlines()[1:] if path.is_file() else []:
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        if text.startswith(("Usage:", "Defaults and conventions")):
            continue
        lines.append(text)
    return "\n".join(lines)


def environment_lines():
    """The `The environment it reads:` block of scripts/protocols.py's docstring."""
    block = protocols.__doc__.split("The environment it reads:", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line and not line.startswith("    "):
            break
        if line.strip():
            lines.append("  " + line.strip() if re.match(r"\s{4}[A-Z_=0-9]+\s", line)
                         else " " * 14 + line.strip())
    return lines


def output_folders(trainer, script, config=""):
    """The run folders the script writes, with placeholders."""
    common = dict(trainer=trainer, seed="<SEED>", config=config)
    if script in REPRODUCE_STEPS:
        jobs = [Job(step=step, dataset="<DATASET>", model_dir="WEIGHTS_DIR", **common)
                for step in REPRODUCE_STEPS[script]]
    else:
        dataset = "<SOURCE>" if script == "xd_train" else "<DATASET>"
        jobs = [Job(step=script, dataset=dataset, **common)]
    return [f"{run_dir('$OUTPUT', job)}/" for job in jobs]


def script_help(trainer, script, config=""):
    """The help of scripts/<trainer>/<script>.sh; CONFIG is CFG from the environment."""
    spec = TRAINERS[trainer]
    path = f"scripts/{trainer}/{script}.sh"
    arguments = USAGE[script].split()
    step = REPRODUCE_STEPS.get(script, [script])[0]
    default = spec.xd_config if protocols.STEPS[step].cross_dataset else spec.config
    configs = sorted(p.stem for p in spec.config_dir.glob("*.yaml"))
    text = [description(trainer, script), "",
            f"usage: DATA=/path/to/datasets bash {path} {USAGE[script]} [KEY VALUE ...]", "",
            "arguments:"]
    for name in arguments:
        explanation = XD_TEST_DATASETS if (script == "xd_test" and name == "DATASET") \
            else ARGUMENTS[name]
        text.append(f"  {name:<12}{explanation}")
    text += [f"  {'KEY VALUE':<12}config overrides for train.py, e.g. OPTIM.MAX_EPOCH 2",
             "", f"config: configs/trainers/{spec.config_folder or spec.name}/{config or default}.yaml"
             + (f" (CFG=<name> picks another of: {' '.join(configs)})" if trainer != "zsclip"
                else ""),
             "output (OUTPUT defaults to ./output):",
             *(f"  {folder}" for folder in output_folders(trainer, script, config)),
             "", "environment:", *environment_lines(), "", "examples:"]
    example = " ".join(EXAMPLE_ARGUMENTS[name] for name in arguments if EXAMPLE_ARGUMENTS[name])
    text += [f"  DATA=~/datasets bash {path} {example}",
             f"  DATA=~/datasets bash {path} {example} OPTIM.MAX_EPOCH 2   # with an override",
             f"  CUDA_VISIBLE_DEVICES=1 DATA=~/datasets bash {path} {example}   # on GPU 1"]
    return "\n".join(text).lstrip("\n")
