"""Crash campaign: kill training at random moments, resume it, and compare with an uninterrupted run.

A reference run of train.py (BMIP on a tiny generated EuroSAT and a tiny generated CLIP, CPU)
trains to the end. Then, campaign after campaign, the same command is started on a fresh folder
and killed with SIGKILL after a random delay (anywhere from start-up to the end of training,
so some kills land while a checkpoint, config.yaml or results.json is being written), then
started again, which resumes, until a start finishes by itself. Each finished campaign is
compared with the reference: the final checkpoint's weights (max |difference|), the accuracy,
and what the folder holds (no temporary files, no lock, no rolling checkpoint left behind).

    python benchmarks/crash_campaign.py --kills 20            # about 5 minutes on 2 CPU cores
    python benchmarks/crash_campaign.py --kills 100 --epochs 6 --keep /tmp/campaign

Prints one line per campaign and the totals: kills, resumes, max |Δ weights|, accuracy
mismatches and debris files. Exit status 1 when any campaign differs from the reference.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dassl.utils import epoch_checkpoints, load_checkpoint  # noqa: E402
from dassl.utils.run_files import LOCK_FILE, RESULTS_FILE, TEMPORARY_PREFIX  # noqa: E402
from tests.helpers.datasets import make_eurosat  # noqa: E402
from tests.helpers.trainers import train_py_args, write_tiny_clip  # noqa: E402

CONFIG_FILE = "BMIP/BMIP_ctx2_dp9_lr2.yaml"
MODEL_NAME = "MultiModalPromptLearner"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="kills to make in all (default 20)")
    parser.add_argument("--epochs", type=int, default=4, help="OPTIM.MAX_EPOCH of each run (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays (default 0)")
    parser.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary one)")
    return parser.parse_args()


def training_args(work, clip_file, output_dir, epochs):
    overrides = ["TRAINER.BMIP.PROMPT_DEPTH", "3", "OPTIM.MAX_EPOCH", str(epochs), "DATASET.NUM_SHOTS", "2",
                 "OPTIM.WARMUP_EPOCH", "1"]
    return train_py_args("BMIP", CONFIG_FILE, os.path.join(work, "data"), clip_file, output_dir,
                         overrides=overrides)


def start(args):
    return subprocess.Popen([sys.executable, "train.py", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="2"))


def final_weights(output_dir):
    epochs = epoch_checkpoints(os.path.join(output_dir, MODEL_NAME))
    return load_checkpoint(epochs[max(epochs)])["state_dict"]


def max_difference(weights, reference):
    assert weights.keys() == reference.keys(), "the checkpoints hold different tensors"
    return max(float((weights[key].float() - reference[key].float()).abs().max()) for key in reference)


def accuracy(output_dir):
    with open(os.path.join(output_dir, RESULTS_FILE)) as f:
        return json.load(f)["accuracy"]


def debris(output_dir, epochs):
    """Files a finished run should not hold: temporary files, its lock, old rolling checkpoints."""
    found = []
    for folder, _, names in os.walk(output_dir):
        found += [os.path.join(folder, name) for name in names
                  if name.startswith(TEMPORARY_PREFIX) or name == LOCK_FILE]
    kept = epoch_checkpoints(os.path.join(output_dir, MODEL_NAME))
    found += [path for epoch, path in kept.items() if epoch != epochs]
    return found


def campaign(args, duration, rng, kills_left):
    """Start, kill after a random delay, start again... until a start finishes; returns
    (kills, resumes). A start that exits with an error stops the campaign."""
    kills = starts = 0
    while True:
        process = start(args)
        starts += 1
        try:
            process.wait(timeout=rng.uniform(0, duration) if kills < kills_left else None)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            continue
        if process.returncode != 0:
            raise SystemExit(f"a resumed run failed (exit {process.returncode}):\n{process.stderr.read()[-3000:]}")
        return kills, starts - 1


def main():
    options = parse_args()
    rng = random.Random(options.seed)
    work = options.keep or tempfile.mkdtemp(prefix="crash-campaign-")
    os.makedirs(work, exist_ok=True)
    make_eurosat(os.path.join(work, "data"), n_classes=4, n_train=4, n_val=2, n_test=3)
    clip_file = write_tiny_clip(os.path.join(work, "tiny-vit.pt"))

    reference_dir = os.path.join(work, "reference")
    began = time.time()
    reference = start(training_args(work, clip_file, reference_dir, options.epochs))
    if reference.wait() != 0:
        raise SystemExit(f"the reference run failed:\n{reference.stderr.read()[-3000:]}")
    duration = time.time() - began
    reference_weights, reference_accuracy = final_weights(reference_dir), accuracy(reference_dir)
    print(f"reference: {options.epochs} epochs in {duration:.1f} s, accuracy {reference_accuracy:.2f}%; "
          f"kills after 0 to {duration:.1f} s")

    totals = {"kills": 0, "resumes": 0, "campaigns": 0, "accuracy mismatches": 0, "debris files": 0}
    worst = 0.0
    while totals["kills"] < options.kills:
        output_dir = os.path.join(work, f"campaign{totals['campaigns'] + 1}")
        kills, resumes = campaign(training_args(work, clip_file, output_dir, options.epochs), duration, rng,
                                  options.kills - totals["kills"])
        difference = max_difference(final_weights(output_dir), reference_weights)
        same_accuracy = accuracy(output_dir) == reference_accuracy
        left = debris(output_dir, options.epochs)
        worst = max(worst, difference)
        totals["kills"] += kills
        totals["resumes"] += resumes
        totals["campaigns"] += 1
        totals["accuracy mismatches"] += not same_accuracy
        totals["debris files"] += len(left)
        print(f"campaign {totals['campaigns']}: {kills} kills, {resumes} resumes, max |Δ weights| "
              f"{difference:.3g}, accuracy {'same' if same_accuracy else 'DIFFERENT'}"
              + (f", debris: {', '.join(left)}" if left else ""))
    print(", ".join(f"{value} {name}" for name, value in totals.items()) + f", max |Δ weights| {worst:.3g}")
    if not options.keep:
        shutil.rmtree(work)
    failed = worst > 0 or totals["accuracy mismatches"] or totals["debris files"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
