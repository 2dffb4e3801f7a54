"""Crash campaign: kill training at random moments, start it again, and compare with an uninterrupted run.

Everything runs through the protocol scripts (`bash scripts/<method>/base2new_train.sh eurosat 1`,
whose `python -m scripts.protocols` process starts train.py) on a tiny generated EuroSAT and a tiny
generated CLIP, on CPU, with `DATALOADER.NUM_WORKERS 2`, for BMIP, PromptSRC and CoPrompt in turn.
A reference run of each method trains to the end. Then, campaign after campaign, the same command
is started on a fresh output folder (every other campaign with FORCE=1 on a copy of the reference,
so that it trains in seed1.staging and swaps it in) and, once training has started (the first
"epoch [" line of its log), killed with SIGKILL after a random delay up to the time the reference
took from that line to its results.json. Each kill hits one of:

  train.py          the training process alone (its DataLoader workers outlive it a moment): the
                    protocol script exits with an error; an immediate restart must not be refused
  protocol script   the parent alone: its train.py trains on, holding the folder's lock, so an
                    immediate second start must be refused (the campaign pauses that train.py
                    meanwhile, so that it cannot end first); once it has ended, the
                    next start must finish its run (and FORCE=1's swap) without training again
  both              the whole process group, as a crashed node would

then started again, until a start finishes by itself. Each finished campaign is compared with its
method's reference: the final checkpoint's weights (max |difference|), the accuracy, that a
FORCE=1 run did train again, and what the output folder holds (no temporary file, lock, rolling
checkpoint, seed1.staging or seed1.replaced left behind).

    python benchmarks/crash_campaign.py --kills 12       # 6 campaigns, all methods, about 7 minutes
    python benchmarks/crash_campaign.py --kills 60 --kills-per-run 5 --keep /tmp/campaign

Prints one line per campaign and the totals. Exit status 1 when any campaign differs from its
reference, a restart after a kill of train.py was refused, or a second start beside a live
train.py was not.
"""
import argparse
import glob
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

from datasets.eurosat import NEW_CNAMES  # noqa: E402
from dassl.utils import epoch_checkpoints, load_checkpoint  # noqa: E402
from dassl.utils.run_files import LOCK_FILE, LOG_FILE, RESULTS_FILE, TEMPORARY_PREFIX  # noqa: E402
from tests.helpers.datasets import make_eurosat  # noqa: E402
from tests.helpers.trainers import TINY_SIZES, write_tiny_clip  # noqa: E402

# method: (scripts/ folder, CFG)
METHODS = {"BMIP": ("bmip", "BMIP_ctx2_dp9_lr2"),
           "PromptSRC": ("promptsrc", "vit_b16_c2_ep20_batch4_4ctx_bmip"),
           "CoPrompt": ("coprompt", "coprompt_bmip")}
TARGETS = ("train.py", "protocol script", "both")
MODEL_NAME = "MultiModalPromptLearner"
TRAINING_STARTED = "epoch ["


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=12, help="kills to make in all (default 12)")
    parser.add_argument("--epochs", type=int, default=4, help="OPTIM.MAX_EPOCH of each run (default 4)")
    parser.add_argument("--kills-per-run", type=int, default=2,
                        help="kills at most in one campaign, so that all methods get theirs (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays and targets (default 0)")
    parser.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary one)")
    return parser.parse_args()


def overrides(clip_file, epochs):
    size = TINY_SIZES["image_resolution"]
    return ["MODEL.BACKBONE.NAME", clip_file, "INPUT.SIZE", f"({size}, {size})", "USE_CUDA", "False",
            "OPTIM.MAX_EPOCH", str(epochs), "OPTIM.WARMUP_EPOCH", "1", "DATALOADER.NUM_WORKERS", "2",
            "DATALOADER.TEST.BATCH_SIZE", "8", "TRAINER.BMIP.PROMPT_DEPTH", "2", "TRAINER.BMIP.N_CTX", "2",
            "TRAINER.PROMPTSRC.GPA_MEAN", "1"]


def start(work, method, output, epochs, force=False):
    """The protocol script of METHOD's base-to-new training, in a process group of its own; its
    output (and its train.py's, which may outlive it) goes to a file of its own, process.output."""
    folder, config = METHODS[method]
    env = dict(os.environ, DATA=os.path.join(work, "data"), OUTPUT=output, CFG=config, TAG="crash",
               PYTHON=sys.executable, OMP_NUM_THREADS="1", FORCE="1" if force else "0")
    command = ["bash", os.path.join(ROOT, "scripts", folder, "base2new_train.sh"), "eurosat", "1",
               *overrides(os.path.join(work, "tiny-clip.pt"), epochs)]
    os.makedirs(os.path.join(work, "starts"), exist_ok=True)
    path = os.path.join(work, "starts", f"{len(os.listdir(os.path.join(work, 'starts'))) + 1}.txt")
    with open(path, "w") as output_file:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    process.output = path
    return process


def finish(process):
    """Wait for a start to end; its exit status and output."""
    process.wait()
    with open(process.output, errors="replace") as f:
        return process.returncode, f.read()


def run_folder(output):
    found = glob.glob(os.path.join(output, "base2new", "train_base", "eurosat", "*", "*", "*", "seed1"))
    return found[0] if found else None


def logs(output):
    """The log files a train.py of this output folder writes (in seed1, or seed1.staging)."""
    folder = run_folder(output)
    return [os.path.join(folder, LOG_FILE), os.path.join(folder + ".staging", LOG_FILE)] if folder else []


def log_positions(output):
    """{log: (its inode, its length)} as they are now."""
    positions = {}
    for log in logs(output):
        try:
            status = os.stat(log)
        except OSError:
            continue
        positions[log] = (status.st_ino, status.st_size)
    return positions


def wait_for_training(process, output):
    """Wait until training has started (True: a progress line written after this call, in a new
    log or past the old end of an existing one) or the process ended first (False)."""
    before = log_positions(output)
    while process.poll() is None:
        for log, (inode, size) in log_positions(output).items():
            old_inode, old_size = before.get(log, (None, 0))
            try:
                with open(log, errors="replace") as f:
                    f.seek(old_size if inode == old_inode else 0)
                    if TRAINING_STARTED in f.read():
                        return True
            except OSError:
                pass
        time.sleep(0.05)
    return False


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def train_py(parent):
    """The train.py process the protocol script PARENT started (None if there is none)."""
    for child in children(parent):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"train.py" in f.read():
                    return child
        except OSError:
            pass
    return None


def kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def final_weights(folder):
    epochs = epoch_checkpoints(os.path.join(folder, MODEL_NAME))
    return load_checkpoint(epochs[max(epochs)])["state_dict"]


def max_difference(weights, reference):
    assert weights.keys() == reference.keys(), "the checkpoints hold different tensors"
    return max(float((weights[key].float() - reference[key].float()).abs().max()) for key in reference)


def results(folder):
    with open(os.path.join(folder, RESULTS_FILE)) as f:
        return json.load(f)


def debris(folder, epochs):
    """What a finished run should not leave: temporary files, its lock, old rolling checkpoints,
    a staging or replaced folder beside it."""
    found = []
    for parent, _, names in os.walk(folder):
        found += [os.path.join(parent, name) for name in names
                  if name.startswith(TEMPORARY_PREFIX) or name == LOCK_FILE]
    found += [path for epoch, path in epoch_checkpoints(os.path.join(folder, MODEL_NAME)).items() if epoch != epochs]
    found += [folder + suffix for suffix in (".staging", ".replaced") if os.path.lexists(folder + suffix)]
    return found


def campaign(work, method, output, options, rng, kills_left, duration, force, totals):
    """Start, kill after training started, start again... until a start finishes; returns the
    kills made. Raises SystemExit when a start fails other than refused beside a live train.py."""
    kills = 0
    while True:
        process = start(work, method, output, options.epochs, force)
        if kills < kills_left and wait_for_training(process, output):
            try:
                process.wait(timeout=rng.uniform(0, duration))
            except subprocess.TimeoutExpired:
                target = rng.choice(TARGETS)
                trainer = train_py(process.pid)
                if trainer is None:  # train.py has just ended: the protocol script finishes
                    target = "both"
                if target == "train.py" and trainer:
                    kill(trainer)
                elif target == "protocol script":
                    kill(process.pid)
                else:
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                kills += 1
                totals[f"kills of {target}"] += 1
                if target == "protocol script" and trainer and alive(trainer):
                    # Paused (alive, holding what it holds) while a second start tries the folder.
                    os.kill(trainer, signal.SIGSTOP)
                    second = start(work, method, output, options.epochs, force)
                    returncode, printed = finish(second)
                    os.kill(trainer, signal.SIGCONT)
                    if returncode != 0 and "is in use by another run" in printed:
                        totals["second starts refused"] += 1
                    elif returncode == 0 and "\nskip: " in "\n" + printed:
                        totals["second starts after the run had finished"] += 1  # killed at its end
                    else:
                        totals["SECOND TRAINERS"] += 1
                        print(f"a second start beside the live train.py {trainer} was not refused "
                              f"(exit {returncode}):\n{printed[-2000:]}")
                    while alive(trainer):  # it trains on to the end, as it would after a real kill
                        time.sleep(0.1)
                continue
        returncode, printed = finish(process)
        if returncode != 0:
            if "is in use by another run" in printed:
                totals["RESTARTS REFUSED"] += 1
                print(f"a restart was refused:\n{printed[-2000:]}")
                continue
            raise SystemExit(f"a start of {method} failed (exit {returncode}):\n{printed[-3000:]}")
        return kills


def main():
    options = parse_args()
    rng = random.Random(options.seed)
    work = options.keep or tempfile.mkdtemp(prefix="crash-campaign-")
    os.makedirs(work, exist_ok=True)
    make_eurosat(os.path.join(work, "data"), n_classes=4, n_train=4, n_val=2, n_test=3)
    descriptions = {name: [f"a satellite photo of {name}.", f"{name} seen from above."] for name in NEW_CNAMES.values()}
    os.makedirs(os.path.join(work, "data", "coprompt_descriptions"), exist_ok=True)
    with open(os.path.join(work, "data", "coprompt_descriptions", "eurosat_prompt.json"), "w") as f:
        json.dump(descriptions, f)
    write_tiny_clip(os.path.join(work, "tiny-clip.pt"))

    references = {}
    for method in METHODS:
        output = os.path.join(work, f"reference-{method}")
        process = start(work, method, output, options.epochs)
        wait_for_training(process, output)
        began = time.time()
        while process.poll() is None and not os.path.exists(os.path.join(run_folder(output), RESULTS_FILE)):
            time.sleep(0.02)
        duration = time.time() - began  # from the first progress line to results.json
        returncode, printed = finish(process)
        if returncode != 0:
            raise SystemExit(f"the reference run of {method} failed:\n{printed[-3000:]}")
        folder = run_folder(output)
        references[method] = (output, final_weights(folder), results(folder), duration)
        print(f"reference {method}: {options.epochs} epochs, {duration:.1f} s from the first progress line "
              f"to results.json, accuracy {references[method][2]['accuracy']:.2f}%")

    totals = {"campaigns": 0, "kills": 0, **{f"kills of {target}": 0 for target in TARGETS},
              "second starts refused": 0, "second starts after the run had finished": 0,
              "SECOND TRAINERS": 0, "RESTARTS REFUSED": 0,
              "accuracy mismatches": 0, "FORCE runs not retrained": 0, "debris files": 0}
    worst = 0.0
    methods = list(METHODS)
    while totals["kills"] < options.kills:
        number = totals["campaigns"] + 1
        method, force = methods[(number - 1) % len(methods)], number % 2 == 0
        reference_output, reference_weights, reference_results, duration = references[method]
        output = os.path.join(work, f"campaign{number}")
        if force:  # a finished run to replace
            shutil.copytree(reference_output, output)
        budget = min(options.kills - totals["kills"], options.kills_per_run)
        kills = campaign(work, method, output, options, rng, budget, duration, force, totals)
        folder = run_folder(output)
        difference = max_difference(final_weights(folder), reference_weights)
        finished = results(folder)
        same_accuracy = finished["accuracy"] == reference_results["accuracy"]
        retrained = not force or finished["timestamp"] != reference_results["timestamp"]
        left = debris(folder, options.epochs)
        for path in left:
            if os.path.basename(path) == LOCK_FILE:
                with open(path, errors="replace") as f:
                    print(f"left: {path}: {f.read()[:300]}")
        worst = max(worst, difference)
        totals["campaigns"] += 1
        totals["kills"] += kills
        totals["accuracy mismatches"] += not same_accuracy
        totals["FORCE runs not retrained"] += not retrained
        totals["debris files"] += len(left)
        print(f"campaign {number} ({method}{', FORCE=1' if force else ''}): {kills} kills, max |Δ weights| "
              f"{difference:.3g}, accuracy {'same' if same_accuracy else 'DIFFERENT'}"
              + ("" if retrained else ", NOT RETRAINED") + (f", debris: {', '.join(left)}" if left else ""))
    print(", ".join(f"{value} {name}" for name, value in totals.items()) + f", max |Δ weights| {worst:.3g}")
    if not options.keep:
        shutil.rmtree(work)
    failed = (worst > 0 or totals["accuracy mismatches"] or totals["debris files"] or totals["SECOND TRAINERS"]
              or totals["RESTARTS REFUSED"] or totals["FORCE runs not retrained"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
