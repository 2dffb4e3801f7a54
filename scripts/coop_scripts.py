"""The CoOp codebase's own scripts, with its arguments and output folders: scripts/coop/main.sh,
scripts/coop/eval.sh and scripts/zsclip/zeroshot.sh run `python -m scripts.coop_scripts
{main,eval,zeroshot} ARGS...`; what each does is in DESCRIPTIONS (their --help).
"""
import os
import sys
from pathlib import Path

from scripts.protocols import (REPO_ROOT, SEEDS, Environment, ProtocolError, can_resume,
                               choose_load_epoch, dataset_config_file, is_finished, is_forced,
                               model_folders)

COOP_CONFIGS = REPO_ROOT / "configs" / "trainers" / "CoOp"
USAGE = {
    "main": "DATASET CFG CTP NCTX SHOTS CSC",
    "eval": "DATASET CFG",
    "zeroshot": "DATASET CFG",
}
SCRIPT_PATHS = {"main": "scripts/coop/main.sh", "eval": "scripts/coop/eval.sh",
                "zeroshot": "scripts/zsclip/zeroshot.sh"}
# eval.sh's model: main.sh's 16-shot ImageNet run with CoOp's default context.
EVAL_SOURCE, EVAL_CONTEXT = "imagenet", dict(nctx="16", csc="False", ctp="end")
DESCRIPTIONS = {
    "main": """CoOp's few-shot learning (CoOp paper, Fig. 3): train on all classes of DATASET with SHOTS
images per class (CTP: class token position, end or middle; NCTX: context tokens; CSC:
class-specific context, True or False), seeds 1 2 3, each tested on DATASET's test set.
output: $OUTPUT/<DATASET>/CoOp/<CFG>_<SHOTS>shots/nctx<NCTX>_csc<CSC>_ctp<CTP>/seed<S>/""",
    "eval": """The 16-shot ImageNet models of main.sh (NCTX 16, CSC False, CTP end) tested on DATASET (CoOp
paper, Table 1: imagenetv2, imagenet_sketch, imagenet_a, imagenet_r), seeds 1 2 3. It loads
the model's last epoch (OPTIM.MAX_EPOCH; LOAD_EPOCH=N for another), where CoOp's script
loads epoch 50 whatever the config.
output: $OUTPUT/evaluation/CoOp/<CFG>_16shots/nctx16_cscFalse_ctpend/<DATASET>/seed<S>/""",
    "zeroshot": """Zero-shot CLIP on DATASET's test set with all its classes; CFG picks the backbone (rn50,
rn101, vit_b32, vit_b16).
output: $OUTPUT/ZeroshotCLIP/<CFG>/<DATASET>/""",
}
COMMON_HELP = """CFG names configs/trainers/CoOp/<CFG>.yaml; KEY VALUE pairs are config overrides.
environment: DATA (required), OUTPUT (default ./output), FORCE=1 (run finished runs again),
PYTHON; a finished run (results.json) is skipped, an interrupted training run resumes."""
EXAMPLES = {"main": "caltech101 rn50_ep50 end 16 1 False", "eval": "imagenetv2 rn50_ep50",
            "zeroshot": "eurosat vit_b16"}


def coop_config_file(config):
    path = COOP_CONFIGS / f"{config}.yaml"
    if not path.is_file():
        known = " ".join(sorted(p.stem for p in COOP_CONFIGS.glob("*.yaml")))
        raise ProtocolError(f"no config {path} (CFG is one of: {known})")
    return path


def context_folder(nctx, csc, ctp):
    return f"nctx{nctx}_csc{csc}_ctp{ctp}"


def train_py(env, trainer, dataset, config_file, out, seed=None, extra=()):
    command = [sys.executable, str(REPO_ROOT / "train.py"), "--root", str(env.data),
               "--trainer", trainer, "--dataset-config-file", str(dataset_config_file(dataset)),
               "--config-file", str(config_file), "--output-dir", str(out)]
    return command + (["--seed", str(seed)] if seed is not None else []) + list(extra)


def check_arguments(script, args):
    count = len(USAGE[script].split())
    if len(args) < count or (len(args) - count) % 2:
        raise ProtocolError(f"{usage(script)}\n(got {' '.join(args) or 'no arguments'}; see --help)")
    return args[:count], args[count:]


def usage(script):
    return f"usage: DATA=/path/to/datasets bash {SCRIPT_PATHS[script]} {USAGE[script]} [KEY VALUE ...]"


def runs(script, args, env):
    """(output folder, train.py command, is training) of each run of SCRIPT."""
    positional, overrides = check_arguments(script, args)
    dataset, config = positional[:2]
    config_file = coop_config_file(config)
    if script == "zeroshot":
        out = env.output / "ZeroshotCLIP" / config / dataset
        return [(out, train_py(env, "ZeroshotCLIP", dataset, config_file, out,
                               extra=["--eval-only", *overrides]), False)]
    if script == "main":
        ctp, nctx, shots, csc = positional[2:]
        if not (nctx.isdigit() and shots.isdigit()):
            raise ProtocolError(f"{usage(script)}\n(NCTX and SHOTS must be numbers)")
        context = dict(nctx=nctx, csc=csc, ctp=ctp)
        experiment = env.output / dataset / "CoOp" / f"{config}_{shots}shots" / context_folder(**context)
        options = ["TRAINER.COOP.N_CTX", nctx, "TRAINER.COOP.CSC", csc,
                   "TRAINER.COOP.CLASS_TOKEN_POSITION", ctp, "DATASET.NUM_SHOTS", shots]
        return [(experiment / f"seed{seed}",
                 train_py(env, "CoOp", dataset, config_file, experiment / f"seed{seed}", seed,
                          [*options, *overrides]), True) for seed in SEEDS]
    context = context_folder(**EVAL_CONTEXT)
    result = []
    for seed in SEEDS:
        model = env.output / EVAL_SOURCE / "CoOp" / f"{config}_16shots" / context / f"seed{seed}"
        out = env.output / "evaluation" / "CoOp" / f"{config}_16shots" / context / dataset / f"seed{seed}"
        if not model_folders(model):  # a checkpoint: trained here, or CoOp's released weights
            raise ProtocolError(f"no checkpoint in {model}: run `bash scripts/coop/main.sh "
                                f"{EVAL_SOURCE} {config} end 16 16 False` first (or put CoOp's "
                                "released weights there: python -m scripts.released_weights coop)")
        epoch = choose_load_epoch(model, config_file, overrides, env.variables)
        load = ["--load-epoch", str(epoch)] if epoch is not None else []
        options = ["TRAINER.COOP.N_CTX", EVAL_CONTEXT["nctx"], "TRAINER.COOP.CSC",
                   EVAL_CONTEXT["csc"], "TRAINER.COOP.CLASS_TOKEN_POSITION", EVAL_CONTEXT["ctp"]]
        result.append((out, train_py(env, "CoOp", dataset, config_file, out, seed,
                                     ["--model-dir", str(model), *load, "--eval-only", *options,
                                      *overrides]), False))
    return result


def run(script, args, variables, runner=None):
    """Run SCRIPT's runs: skip the finished ones (unless FORCE=1), resume interrupted training."""
    import subprocess
    runner = runner or (lambda command: subprocess.run(command, env={**os.environ, **variables}).returncode)
    check_arguments(script, args)
    env = Environment.from_variables(variables)
    for out, command, trains in runs(script, list(args), env):
        if is_finished(out) and not is_forced(env):
            print(f"Results are available in {out}. Skip this job (FORCE=1 runs it again)")
            continue
        if trains and can_resume(out) and not is_forced(env):
            print(f"Resuming {out} from its checkpoint")
            command = command + ["--resume", str(out)]
        else:
            print(f"Run this job and save the output to {out}")
        returncode = runner(command)
        if returncode:
            return returncode
    return 0


def main(argv=None, variables=None):
    argv = sys.argv[1:] if argv is None else argv
    variables = dict(os.environ) if variables is None else variables
    if not argv or argv[0] not in USAGE:
        print(f"usage: python -m scripts.coop_scripts {{{','.join(USAGE)}}} ARGS...", file=sys.stderr)
        return 2
    script, args = argv[0], argv[1:]
    if {"-h", "--help"} & set(args):
        path = SCRIPT_PATHS[script]
        print(f"{usage(script)}\n\n"
              f"{DESCRIPTIONS[script]}\n\n{COMMON_HELP}\n\n"
              f"example:\n  DATA=~/datasets bash {path} {EXAMPLES[script]}")
        return 0
    try:
        return run(script, args, variables)
    except ProtocolError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
