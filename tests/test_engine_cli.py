"""train.py end to end with the toy trainer: log, config.yaml, results.json, eval-only reload."""
import pytest

import train
from dassl.utils import close_logger, read_json
from tests.helpers.engine import IMAGE_SIZE  # noqa: F401  (registers the toy trainer and dataset)

TOY_CONFIG = """
INPUT:
  SIZE: (8, 8)
  TRANSFORMS: ["random_flip", "normalize"]
DATALOADER:
  NUM_WORKERS: 0
  TRAIN_X:
    BATCH_SIZE: 4
OPTIM:
  NAME: "sgd"
  LR: 0.01
  MAX_EPOCH: 2
  LR_SCHEDULER: "cosine"
USE_CUDA: False
"""


def _run(argv):
    try:
        train.main(argv)
    finally:
        close_logger()


def test_list_trainers(capsys):
    _run(["--list-trainers"])
    assert "EngineToyTrainer" in capsys.readouterr().out.split("\n")


def test_unknown_trainer_lists_registered_names(tmp_path):
    with pytest.raises(SystemExit, match="EngineToyTrainer"):
        _run(["--trainer", "NoSuchTrainer", "--output-dir", str(tmp_path), "DATASET.NAME", "EngineToyColors"])


def test_train_then_eval_only(tmp_path):
    config = tmp_path / "toy_ep2.yaml"
    config.write_text(TOY_CONFIG)
    data = tmp_path / "data"
    data.mkdir()
    common = ["--root", str(data), "--seed", "1", "--trainer", "EngineToyTrainer", "--config-file", str(config)]
    _run(common + ["--output-dir", str(tmp_path / "train"), "DATASET.NAME", "EngineToyColors", "TRAIN.PRINT_FREQ", "1"])

    log = (tmp_path / "train" / "log.txt").read_text()
    assert "epoch [2/2] batch [3/3]" in log and "* accuracy: " in log
    saved_config = (tmp_path / "train" / "config.yaml").read_text()
    assert "CONFIG_NAME: toy_ep2" in saved_config and "PRINT_FREQ: 1" in saved_config
    trained = read_json(str(tmp_path / "train" / "results.json"))
    assert (trained["config"], trained["seed"], trained["load_epoch"]) == ("toy_ep2", 1, 2)

    _run(common + ["--output-dir", str(tmp_path / "eval"), "--eval-only", "--model-dir", str(tmp_path / "train"),
                   "--load-epoch", "2", "DATASET.NAME", "EngineToyColors"])
    evaluated = read_json(str(tmp_path / "eval" / "results.json"))
    assert evaluated["accuracy"] == trained["accuracy"]
    assert evaluated["model_dir"] == str(tmp_path / "train")


def test_missing_dataset_folder_is_a_one_line_error(tmp_path, capsys):
    """A user error (here: no EuroSAT folder under --root) ends the run with the dataset's own
    message, naming the expected path and DATASETS.md, and no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        _run(["--root", str(tmp_path / "data"), "--trainer", "EngineToyTrainer",
              "--dataset-config-file", "configs/datasets/eurosat.yaml",
              "--output-dir", str(tmp_path / "out"), "USE_CUDA", "False"])
    message = str(exit_info.value.code)
    assert message.startswith("error: ")
    assert str(tmp_path / "data" / "eurosat") in message and "DATASETS.md" in message
