"""The names of the files a run writes, and the log line that marks the end of training.

The engine and train.py write them; the protocol scripts, parse_test_res.py and the predictor
read them. Names and the log line are upstream Dassl's, so runs of the CoOp / MaPLe codebases
read the same way.
"""
import os
import shutil
from pathlib import Path

LOG_FILE = "log.txt"
CONFIG_FILE = "config.yaml"  # the resolved config train.py writes next to the log
RESULTS_FILE = "results.json"  # the final test's numbers, written by the engine
CHECKPOINT_POINTER = "checkpoint"  # in a model's folder: the name of its latest checkpoint
BEST_MODEL_NAME = "model-best.pth.tar"
EPOCH_CHECKPOINT_PREFIX = "model.pth.tar-"

# Printed once training ends, before the final test; parsers read the test lines after it.
TRAIN_END_MESSAGE = "Finish training"


def epoch_checkpoint_name(epoch):
    """The file name of the checkpoint saved after ``epoch`` epochs: ``model.pth.tar-<epoch>``."""
    return f"{EPOCH_CHECKPOINT_PREFIX}{epoch}"

# In a run folder while a run uses it: who holds it (see dassl.utils.run_lock).
LOCK_FILE = ".lock"
# Prefix of the temporary files atomic writes rename into place; one left behind is debris.
TEMPORARY_PREFIX = ".tmp-"
# Made by the engine once training starts (tensorboard scalars): a run folder with it, a
# checkpoint or a result holds something to keep.
TRAINING_STARTED = "tensorboard"


def remove_refused_run(folder, root=None):
    """Remove a run folder that a refused run created (refused before it trained or evaluated
    anything: no checkpoint, no result, training never started); the error was printed, and
    the folder would only clutter the tree and the tables' list of failed runs. The empty
    folders above it, below ROOT, go with it. Returns True when removed."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink() or (folder / TRAINING_STARTED).exists():
        return False
    keeps = (RESULTS_FILE, BEST_MODEL_NAME, CHECKPOINT_POINTER)
    for _, _, files in os.walk(folder):
        if any(name in keeps or name.startswith(EPOCH_CHECKPOINT_PREFIX) for name in files):
            return False
    shutil.rmtree(folder, ignore_errors=True)
    if root is not None:
        root = Path(root).resolve()
        for parent in folder.resolve().parents:
            if parent == root or root not in parent.parents or any(parent.iterdir()):
                break
            parent.rmdir()
    return True
