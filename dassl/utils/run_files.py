"""The names of the files a run writes, and the log line that marks the end of training.

The engine and train.py write them; the protocol scripts, parse_test_res.py and the predictor
read them. Names and the log line are upstream Dassl's, so runs of the CoOp / MaPLe codebases
read the same way.
"""

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
