"""train.py end to end with the toy trainer: log, config.yaml, results.json, eval-only reload,
and the user errors it reports in one message instead of a traceback."""
import os
import subprocess
import sys

import pytest

import train
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase
from dassl.utils import close_logger, read_json
from tests.helpers.engine import TOY_CLASSES, write_toy_images

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


def test_list_trainers_with_their_configs(capsys):
    _run(["--list-trainers"])
    listed = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert {"CoOp", "CoCoOp", "MaPLe", "BMIP", "ZeroshotCLIP"} <= set(listed)
    assert "vit_b16_ep50" in listed["CoOp"].split(", ")
    assert "BMIP_ctx2_dp9_lr2" in listed["BMIP"].split(", ")


def test_list_configs(capsys):
    _run(["--list-configs", "MaPLe"])
    paths = capsys.readouterr().out.split()
    assert "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml" in paths
    assert all(os.path.isfile(os.path.join(train.ROOT, path)) for path in paths)
    with pytest.raises(SystemExit, match='unknown trainer "Nope" .*CoOp'):
        _run(["--list-configs", "Nope"])


def test_catalog_reads_registrations_and_reports_unreadable_files(tmp_path, capsys):
    (tmp_path / "mine.py").write_text(
        "from dassl.engine import TRAINER_REGISTRY, TrainerX\n\n\n"
        "class Helper:\n    pass\n\n\n"
        "@TRAINER_REGISTRY.register()\nclass MyTrainer(TrainerX):\n    pass\n")
    (tmp_path / "broken.py").write_text("@TRAINER_REGISTRY.register()\nclass Broken(:\n")
    configs = tmp_path / "configs"
    (configs / "MyTrainer").mkdir(parents=True)
    (configs / "MyTrainer" / "small.yaml").write_text("OPTIM:\n  LR: 0.1\n")
    assert train.trainer_catalog(str(tmp_path), str(configs)) == {"MyTrainer": ["small"]}
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"warning: trainer file {tmp_path / 'broken.py'}: SyntaxError")


@pytest.mark.parametrize("script, argv", [
    ("train", ["--help"]), ("train", ["--list-trainers"]), ("train", ["--list-configs", "CoOp"]),
    ("train", ["--seed", "one"]), ("predict", ["--help"]), ("predict", ["--format", "xml"])])
def test_help_listings_and_argument_errors_do_not_import_torch(script, argv):
    """They answer at once: torch (seconds to import) is imported only once a run is set up."""
    code = (f"import sys, {script}\n"
            f"try:\n    {script}.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(name for name in sys.modules if name.split('.')[0] in "
            "('torch', 'torchvision', 'open_clip', 'dassl', 'trainers', 'datasets')))")
    result = subprocess.run([sys.executable, "-c", code, *argv], cwd=train.ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr


def test_a_config_key_mistake_is_found_before_torchvision_and_open_clip_are_imported():
    """The keys live with the trainers (torch), but torchvision and open_clip (seconds more)
    are imported only when transforms and tokenizers are built."""
    code = ("import sys, train\n"
            "try:\n    train.main(['--trainer', 'CoOp', 'OPTIM.MAX_EPOHC', '1'])\n"
            "except SystemExit as exit:\n    print(exit.code)\n"
            "print(sorted({name.split('.')[0] for name in sys.modules} & {'torchvision', 'open_clip'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=train.ROOT, capture_output=True,
                            text=True, timeout=300)
    lines = result.stdout.strip().splitlines()
    assert lines[-2] == ("error: unknown config key OPTIM.MAX_EPOHC on the command line; "
                         "did you mean OPTIM.MAX_EPOCH?"), result.stdout + result.stderr
    assert lines[-1] == "[]"


@pytest.mark.parametrize("args, known, expected", [
    (["--trainer", "NoSuchTrainer", "DATASET.NAME", "EngineToyColors"], "EngineToyTrainer",
     'error: Unknown trainer "NoSuchTrainer" (TRAINER.NAME / --trainer). Registered trainers: '),
    (["--trainer", "EngineToyTrainer", "DATASET.NAME", "NoSuchSet"], "EngineToyColors",
     'error: Unknown dataset "NoSuchSet" (DATASET.NAME, set by --dataset-config-file). '
     "Registered datasets: "),
])
def test_unknown_trainer_or_dataset_lists_registered_names(tmp_path, args, known, expected):
    with pytest.raises(SystemExit) as exit_info:
        _run(["--output-dir", str(tmp_path), *args])
    message = str(exit_info.value.code)
    assert message.startswith(expected)
    assert known in message[len(expected):].split(", ")
    assert not os.listdir(tmp_path)  # refused before the run started


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
    assert "EVAL_ONLY: false" in saved_config
    assert "EVAL_ONLY: true" in (tmp_path / "eval" / "config.yaml").read_text()
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


# ---------------------------------------------------------------------------------------------
# User errors: "error: <what to do>" and no traceback


@pytest.fixture
def toy(tmp_path):
    """train.py arguments for the toy trainer and dataset (before the trailing config overrides);
    call toy(*more_args)."""
    config = tmp_path / "toy_ep2.yaml"
    config.write_text(TOY_CONFIG)
    data = tmp_path / "data"
    data.mkdir()

    def args(*more, trainer="EngineToyTrainer"):
        return ["--root", str(data), "--seed", "1", "--trainer", trainer, "--config-file", str(config),
                "--output-dir", str(tmp_path / "out"), *more]

    return args


def _user_error(argv, capsys):
    """The message train.py exits with; checks it is a user error printed without a traceback."""
    with pytest.raises(SystemExit) as exit_info:
        _run(argv)
    message = str(exit_info.value.code)
    assert message.startswith("error: ")
    assert "Traceback" not in message + capsys.readouterr().err
    return message


def test_eval_only_with_a_wrong_model_dir_says_what_the_folder_holds(toy, tmp_path, capsys):
    missing = tmp_path / "no_such_run"
    message = _user_error(toy("--eval-only", "--model-dir", str(missing), "DATASET.NAME", "EngineToyColors"), capsys)
    assert f'--model-dir "{missing}" does not exist' in message

    parent = tmp_path / "runs"  # the folder above the run: holds seed1/, not model/
    (parent / "seed1" / "model").mkdir(parents=True)
    (parent / "seed1" / "model" / "model.pth.tar-2").write_bytes(b"")
    message = _user_error(toy("--eval-only", "--model-dir", str(parent), "DATASET.NAME", "EngineToyColors"), capsys)
    assert f'--model-dir "{parent}" holds seed1' in message and f'"{parent / "model"}" does not exist' in message

    run = parent / "seed1"
    message = _user_error(toy("--eval-only", "--model-dir", str(run), "--load-epoch", "5",
                              "DATASET.NAME", "EngineToyColors"), capsys)
    assert f'model not found at "{run / "model" / "model.pth.tar-5"}"' in message
    assert f'"{run / "model"}" holds model.pth.tar-2' in message and "--load-epoch" in message


def test_a_corrupt_checkpoint_is_a_one_line_error(toy, tmp_path, capsys):
    checkpoint = tmp_path / "run" / "model" / "model.pth.tar-2"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"copy interrupted")
    message = _user_error(toy("--eval-only", "--model-dir", str(tmp_path / "run"), "--load-epoch", "2",
                              "DATASET.NAME", "EngineToyColors"), capsys)
    assert message.startswith(f'error: cannot read checkpoint "{checkpoint}": ')


def test_eval_only_without_model_dir_is_refused_for_a_trainer_with_weights(toy, capsys):
    message = _user_error(toy("--eval-only", "DATASET.NAME", "EngineToyColors"), capsys)
    assert message == ("error: --eval-only needs --model-dir (the training run's folder) for "
                       "EngineToyTrainer; only zero-shot trainers evaluate without one")


def test_zero_shot_evaluates_without_model_dir(toy, tmp_path):
    from tests.helpers.trainers import write_tiny_clip

    clip_file = write_tiny_clip(tmp_path / "tiny.pt")
    _run(toy("--eval-only", "--backbone", str(clip_file), "DATASET.NAME", "EngineToyColors",
             "INPUT.SIZE", "(32, 32)", trainer="ZeroshotCLIP"))
    assert read_json(str(tmp_path / "out" / "results.json"))["trainer"] == "ZeroshotCLIP"


@pytest.mark.parametrize("where", ["command line", "file"])
def test_unknown_config_key_suggests_the_closest_one(toy, tmp_path, capsys, where):
    if where == "file":
        typo = tmp_path / "typo.yaml"
        typo.write_text("OPTIM:\n  MAXEPOCH: 3\n")
        argv = toy("--dataset-config-file", str(typo), "DATASET.NAME", "EngineToyColors")
        place = f'in "{typo}"'
    else:
        argv = toy("DATASET.NAME", "EngineToyColors", "OPTIM.MAXEPOCH", "3")
        place = "on the command line"
    assert _user_error(argv, capsys) == (
        f"error: unknown config key OPTIM.MAXEPOCH {place}; did you mean OPTIM.MAX_EPOCH?")


@pytest.mark.parametrize("overrides, expected", [
    (["OPTIM.MAX_EPOCH", "abc"], "error: OPTIM.MAX_EPOCH expects int, got 'abc' (str) on the command line"),
    (["OPTIM.LR", "1"], "error: OPTIM.LR expects float, got 1 (int) on the command line; write it as 1.0"),
    (["OPTIM.LR"], "error: config overrides come in KEY VALUE pairs, got an odd number of words (3): "
                   "DATASET.NAME EngineToyColors OPTIM.LR"),
    (["OPTIM.NAME", "adamm"], "error: OPTIM.NAME \"adamm\" is not supported; choose one of"),
])
def test_config_values_of_the_wrong_type_or_choice(toy, capsys, overrides, expected):
    assert _user_error(toy("DATASET.NAME", "EngineToyColors", *overrides), capsys).startswith(expected)


@pytest.mark.parametrize("option", ["--config-file", "--dataset-config-file"])
def test_missing_config_file(tmp_path, capsys, option):
    missing = tmp_path / "configs" / "nope.yaml"
    message = _user_error(["--trainer", "EngineToyTrainer", "--output-dir", str(tmp_path / "out"),
                           option, str(missing)], capsys)
    assert message.startswith(f'error: config file "{missing}" does not exist: check the path')


@pytest.mark.parametrize("backbone", ["ViT-Z/99", "missing.pt"])
def test_unknown_clip_name_or_missing_clip_file_lists_openai_names(toy, tmp_path, capsys, backbone):
    if backbone.endswith(".pt"):
        backbone = str(tmp_path / backbone)
    message = _user_error(toy("--backbone", backbone, "DATASET.NAME", "EngineToyColors", trainer="CoOp"), capsys)
    assert message.startswith(f"error: CLIP model {backbone!r} (MODEL.BACKBONE.NAME / --backbone) is neither")
    assert "RN50, RN101" in message and "ViT-B/16" in message


def test_bmip_option_outside_its_choices(toy, capsys):
    message = _user_error(toy("DATASET.NAME", "EngineToyColors", "TRAINER.BMIP.AGGREGATION", "sum",
                              trainer="BMIP"), capsys)
    assert message == "error: TRAINER.BMIP.AGGREGATION is 'sum': choose one of ['weighted', 'add', 'attention', 'joint']"


@DATASET_REGISTRY.register()
class EngineToyCorruptImage(DatasetBase):
    """The toy images with one training image overwritten by bytes that are not an image."""

    def __init__(self, cfg):
        splits = write_toy_images(cfg.DATASET.ROOT)
        with open(splits["train"][0].impath, "wb") as f:
            f.write(b"truncated download")
        super().__init__(train_x=splits["train"], val=splits["val"], test=splits["test"])


@pytest.mark.parametrize("num_workers", ["0", "1"])
def test_corrupt_image_is_named_in_one_message(toy, tmp_path, capsys, num_workers):
    """Also from a DataLoader worker, which re-raises the error with the worker's traceback as
    its message: the user sees the original message only."""
    message = _user_error(toy("DATASET.NAME", "EngineToyCorruptImage", "DATALOADER.NUM_WORKERS", num_workers,
                              "DATALOADER.TRAIN_X.BATCH_SIZE", "36"), capsys)
    path = tmp_path / "data" / f"train_{TOY_CLASSES[0]}_0.png"
    assert message.startswith(f'error: cannot read image "{path}" (')
    assert message.endswith("replace it with a good copy (re-download the dataset, see DATASETS.md)")
    assert "\n" not in message


def test_checkpoint_of_another_method_says_so_first(toy, tmp_path, capsys):
    """A MaPLe checkpoint evaluated with --trainer BMIP (both save MultiModalPromptLearner/)."""
    import torch

    from tests.helpers.trainers import tiny_clip, trainer_cfg, write_tiny_clip
    from trainers.maple import MultiModalPromptLearner
    from trainers.prompting import PromptedCLIP, learner_state_dict

    clip_model = tiny_clip()
    maple_cfg = trainer_cfg("MaPLe", **{"TRAINER.MAPLE.PROMPT_DEPTH": 3})
    maple = PromptedCLIP(clip_model, MultiModalPromptLearner(maple_cfg, list(TOY_CLASSES), clip_model))
    checkpoint = tmp_path / "maple_run" / "MultiModalPromptLearner" / "model.pth.tar-2"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"state_dict": learner_state_dict(maple), "epoch": 2}, checkpoint)

    message = _user_error(toy(
        "--eval-only", "--model-dir", str(tmp_path / "maple_run"), "--load-epoch", "2",
        "--backbone", str(write_tiny_clip(tmp_path / "tiny.pt")), "DATASET.NAME", "EngineToyColors",
        "INPUT.SIZE", "(32, 32)", "TRAINER.BMIP.PROMPT_DEPTH", "3", trainer="BMIP"), capsys)
    first_line, *details = message.split("\n")
    assert first_line == ("error: this checkpoint's prompt keys do not look like BMIP's: was it "
                          "trained with another method (check --trainer)?")
    lacks = next(line for line in details if "checkpoint lacks" in line)
    # 14 BMIP entries are missing (MaPLe's compound_prompts_text are named as in the BMIP
    # authors' checkpoints, so they map onto deep_text): 10 named, the rest counted
    assert lacks.count("prompt_learner.") == 10 and lacks.endswith(" and 4 more")


def test_checkpoint_of_the_same_method_with_other_depth_gets_no_method_hint():
    from tests.helpers.trainers import CLASSNAMES, tiny_clip, trainer_cfg
    from trainers.maple import MultiModalPromptLearner
    from trainers.prompting import CheckpointMismatchError, PromptedCLIP, learner_state_dict, load_learner_state

    def maple(depth):
        clip_model = tiny_clip()
        cfg = trainer_cfg("MaPLe", **{"TRAINER.MAPLE.PROMPT_DEPTH": depth})
        return PromptedCLIP(clip_model, MultiModalPromptLearner(cfg, CLASSNAMES, clip_model))

    with pytest.raises(CheckpointMismatchError) as error:
        load_learner_state(maple(2), learner_state_dict(maple(3)), method="MaPLe")
    assert str(error.value).startswith("checkpoint does not fit the model built from the config")


# ---------------------------------------------------------------------------------------------
# Resuming, and the record of the run


def test_resuming_with_other_training_settings_is_refused_and_changes_nothing(toy, tmp_path, capsys):
    """A finished (or killed) run re-run with another schedule would resume and finish a run that
    never happened; it is refused, naming the keys, before anything in the folder changes."""
    out = tmp_path / "out"
    _run(toy("DATASET.NAME", "EngineToyColors"))
    saved_config = (out / "config.yaml").read_text()
    files_before = sorted(os.listdir(out))

    message = _user_error(toy("DATASET.NAME", "EngineToyColors", "OPTIM.MAX_EPOCH", "3", "OPTIM.LR", "0.5",
                              "DATALOADER.NUM_WORKERS", "1"), capsys)
    assert f'"{out}" holds checkpoints of a run trained with other settings' in message
    assert "  OPTIM.LR: 0.01 -> 0.5\n  OPTIM.MAX_EPOCH: 2 -> 3\n" in message
    assert "NUM_WORKERS" not in message  # how data is loaded does not change what is trained
    assert "Use a new --output-dir, or remove the checkpoints to start over" in message
    assert "FORCE=1" in message
    assert (out / "config.yaml").read_text() == saved_config
    assert sorted(os.listdir(out)) == files_before


def test_resuming_with_the_same_settings_keeps_the_first_config(toy, tmp_path, capsys):
    out = tmp_path / "out"
    _run(toy("DATASET.NAME", "EngineToyColors"))
    first_config = (out / "config.yaml").read_text()
    _run(toy("DATASET.NAME", "EngineToyColors", "TRAIN.PRINT_FREQ", "1"))
    assert "Resumed model at epoch 2" in capsys.readouterr().out
    kept = [name for name in os.listdir(out) if name.startswith("config.yaml-")]
    assert len(kept) == 1 and (out / kept[0]).read_text() == first_config
    assert "PRINT_FREQ: 1\n" in (out / "config.yaml").read_text()


def test_results_json_names_a_user_dataset_and_its_config(tmp_path):
    from tests.helpers.datasets import write_image

    for label, classname in enumerate(("rose", "tulip")):
        for index in range(10):
            write_image(str(tmp_path / "data" / "my_flowers" / "images" / classname / f"{index}.png"), label, index)
    dataset_config = tmp_path / "flowers_cfg.yaml"
    dataset_config.write_text('DATASET:\n  NAME: "UserDataset"\n  USER:\n    DIR: "my_flowers"\n')
    method_config = tmp_path / "toy_ep2.yaml"
    method_config.write_text(TOY_CONFIG)
    _run(["--root", str(tmp_path / "data"), "--seed", "1", "--trainer", "EngineToyTrainer",
          "--dataset-config-file", str(dataset_config), "--config-file", str(method_config),
          "--output-dir", str(tmp_path / "out")])
    results = read_json(str(tmp_path / "out" / "results.json"))
    assert (results["dataset"], results["dataset_name"], results["dataset_config"]) == (
        "UserDataset", "my_flowers", "flowers_cfg")


@pytest.mark.parametrize("error, phase, expected", [
    (MemoryError(), "build_trainer", "out of memory while building the model (MemoryError): "
     "lower DATALOADER.TRAIN_X.BATCH_SIZE (now 4) or DATALOADER.TEST.BATCH_SIZE"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "train",
     "out of GPU while training (RuntimeError): lower DATALOADER.TRAIN_X.BATCH_SIZE (now 4)"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                  "memory: you tried to allocate 9000000000 bytes"), "train",
     "out of memory while training (RuntimeError): lower DATALOADER.TRAIN_X.BATCH_SIZE"),
])
def test_out_of_memory_is_one_line_naming_the_batch_size(toy, monkeypatch, capsys, error, phase,
                                                         expected):
    from dassl.engine import trainer as engine

    def fail(*args, **kwargs):
        raise error

    if phase == "build_trainer":
        monkeypatch.setattr("dassl.engine.build_trainer", fail)
    else:
        monkeypatch.setattr(engine.SimpleTrainer, "train", fail)
    message = _user_error(toy("DATASET.NAME", "EngineToyColors"), capsys)
    assert message.startswith(f"error: {expected}"), message


def test_another_runtime_error_is_not_taken_for_out_of_memory(toy, monkeypatch):
    from dassl.engine import trainer as engine

    def fail(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(engine.SimpleTrainer, "train", fail)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        _run(toy("DATASET.NAME", "EngineToyColors"))
