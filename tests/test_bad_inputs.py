"""Bad inputs to every entry point end in one line (issue 20): a table of cases per command, each
expected to exit with a status other than 0, print one line on stderr and no traceback, and write
nothing outside its own folder.

Commands run in-process (``main(argv)``) where they can; a traceback there is an exception that
escapes ``main`` and fails the test with it.
"""
import hashlib
import io
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch

import train
from dassl.utils import close_logger
from tests.test_engine_cli import TOY_CONFIG


def refused(main, argv, capsys, **kwargs):
    """The one-line message ``main(argv)`` exits with or prints (status other than 0, returned or
    raised with SystemExit; no traceback)."""
    try:
        code = main(argv, **kwargs)
    except SystemExit as exit:
        code = exit.code
    finally:
        close_logger()
    err = capsys.readouterr().err
    assert code not in (0, None)
    message = code if isinstance(code, str) else err.strip().splitlines()[-1]
    assert "Traceback" not in err + message
    assert message.startswith("error") and "\n" not in message.strip(), message
    return message


def snapshot(folder):
    """Every file under ``folder`` with its content, to check a refused command wrote nothing."""
    files = {}
    for directory, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(directory, name)
            files[path] = open(path, "rb").read() if not os.path.islink(path) else os.readlink(path)
    return files


# ---------------------------------------------------------------------------------------------
# train.py, on the engine's toy trainer and dataset


@pytest.fixture
def toy(tmp_path):
    """train.py arguments for the toy trainer; call toy(*more_args)."""
    config = tmp_path / "toy.yaml"
    config.write_text(TOY_CONFIG)
    data = tmp_path / "data"
    data.mkdir()

    def args(*options, output="out", opts=()):
        return ["--root", str(data), "--seed", "1", "--trainer", "EngineToyTrainer", "--config-file",
                str(config), "--output-dir", str(tmp_path / output), *options,
                "DATASET.NAME", "EngineToyColors", *opts]

    return args


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A finished toy training run (2 epochs): its folder."""
    root = tmp_path_factory.mktemp("toy_run")
    config = root / "toy.yaml"
    config.write_text(TOY_CONFIG)
    (root / "data").mkdir()
    try:
        train.main(["--root", str(root / "data"), "--seed", "1", "--trainer", "EngineToyTrainer",
                    "--config-file", str(config), "--output-dir", str(root / "run"),
                    "DATASET.NAME", "EngineToyColors"])
    finally:
        close_logger()
    return root / "run"


TRAIN_OPTIONS = {
    "seed of 2^32": (["--seed", str(2 ** 32)], "--seed"),
    "negative learning rate": (["OPTIM.LR", "-1"], "OPTIM.LR"),
    "batch size 0": (["DATALOADER.TRAIN_X.BATCH_SIZE", "0"], "BATCH_SIZE"),
    "test batch size 0": (["DATALOADER.TEST.BATCH_SIZE", "0"], "BATCH_SIZE"),
    "negative number of workers": (["DATALOADER.NUM_WORKERS", "-1"], "NUM_WORKERS"),
    "resume from a missing folder": (["--resume", "/nonexistent/run"], "--resume"),
}


@pytest.mark.parametrize("case", sorted(TRAIN_OPTIONS))
def test_train_refuses_bad_options_in_one_line(toy, tmp_path, capsys, case):
    argv, named = TRAIN_OPTIONS[case]
    options = argv[0].startswith("--")  # else config overrides
    message = refused(train.main, toy(*argv) if options else toy(opts=argv), capsys)
    assert named in message
    assert not (tmp_path / "out" / "model").exists()


CONFIG_FILES = {
    "a YAML list": (b"- OPTIM\n- LR\n", "a mapping"),
    "non-UTF-8 bytes": (b"OPTIM:\n  NAME: \"sgd\xff\"\n", "UTF-8"),
    "a scalar": (b"12\n", "a mapping"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_FILES))
def test_train_refuses_a_config_file_that_is_not_a_mapping_of_keys(toy, tmp_path, capsys, case):
    content, named = CONFIG_FILES[case]
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    message = refused(train.main, ["--dataset-config-file", str(bad), *toy()], capsys)
    assert named in message and str(bad) in message


def checkpoint_of(run):
    return run / "model" / "model.pth.tar-2"


def corrupt_checkpoint(path, change):
    checkpoint = torch.load(path, weights_only=False)
    torch.save(change(checkpoint), path)


def with_nan(checkpoint):
    checkpoint["state_dict"]["weight"][0, 0] = math.nan
    checkpoint["state_dict"]["bias"][1] = math.inf
    return checkpoint


BAD_CHECKPOINTS = {
    "NaN and Inf weights": (with_nan, "weight, bias"),
    "no state_dict": (lambda checkpoint: {"epoch": 2}, "state_dict"),
    "a list": (lambda checkpoint: [checkpoint["state_dict"]], "list"),
    "a bare tensor": (lambda checkpoint: checkpoint["state_dict"]["weight"], "Tensor"),
    "state_dict a list": (lambda checkpoint: {**checkpoint, "state_dict": [1, 2]}, "state_dict"),
}


@pytest.fixture
def copy_of_run(toy_run, tmp_path):
    copy = tmp_path / "run_copy"
    shutil.copytree(toy_run, copy)
    return copy


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_evaluating_a_malformed_or_non_finite_checkpoint_is_refused(toy, copy_of_run, capsys, case):
    change, named = BAD_CHECKPOINTS[case]
    for path in (checkpoint_of(copy_of_run), copy_of_run / "model" / "model-best.pth.tar"):
        if path.exists():
            corrupt_checkpoint(path, change)
    message = refused(train.main, toy("--eval-only", "--model-dir", str(copy_of_run), output="eval"), capsys)
    assert named in message and "model" in message


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_resuming_from_a_malformed_or_non_finite_checkpoint_is_refused(toy, copy_of_run, capsys, case):
    change, named = BAD_CHECKPOINTS[case]
    corrupt_checkpoint(checkpoint_of(copy_of_run), change)
    before = snapshot(copy_of_run / "model")
    message = refused(train.main, toy(output="run_copy"), capsys)
    assert named in message
    assert snapshot(copy_of_run / "model") == before  # the checkpoints are left as they were


def bad_optimizer(checkpoint):
    checkpoint["optimizer"]["param_groups"] = []
    return checkpoint


def bad_rng(checkpoint):
    checkpoint["engine_state"]["rng_state"]["torch"] = torch.zeros(3, dtype=torch.uint8)
    return checkpoint


def bad_scheduler(checkpoint):
    checkpoint["scheduler"] = {"last_epoch": "two"}
    return checkpoint


@pytest.mark.parametrize("change, named", [(bad_optimizer, "optimizer"), (bad_rng, "random number"),
                                           (bad_scheduler, "scheduler")])
def test_resuming_with_a_bad_optimizer_scheduler_or_rng_state_is_refused(toy, copy_of_run, capsys, change, named):
    corrupt_checkpoint(checkpoint_of(copy_of_run), change)
    message = refused(train.main, toy(output="run_copy"), capsys)
    assert named in message and str(checkpoint_of(copy_of_run)) in message


def test_a_corrupt_older_checkpoint_does_not_block_resuming_from_a_good_latest_one(toy, copy_of_run, capsys):
    older = copy_of_run / "model" / "model.pth.tar-1"
    older.write_bytes(b"not a checkpoint")
    try:
        train.main(toy(output="run_copy"))
    finally:
        close_logger()
    assert "Resumed model at epoch 2" in capsys.readouterr().out


def test_a_lock_file_that_is_a_symbolic_link_is_never_written_through(toy, tmp_path, capsys):
    """Issue 20 §3: ``ln -s victim RUN/.lock`` truncated the victim."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "out").mkdir()
    os.symlink(victim, tmp_path / "out" / ".lock")
    message = refused(train.main, toy(), capsys)
    assert "symbolic link" in message and ".lock" in message
    assert victim.read_text() == "precious"


def test_a_log_file_that_is_a_symbolic_link_is_set_aside_not_written_through(toy, tmp_path):
    victim = tmp_path / "victim.txt"
    (tmp_path / "out").mkdir()
    os.symlink(victim, tmp_path / "out" / "log.txt")  # dangling: opening it would create the victim
    try:
        train.main(toy("--no-train"))
    finally:
        close_logger()
    assert not victim.exists()
    assert (tmp_path / "out" / "log.txt").is_file() and not (tmp_path / "out" / "log.txt").is_symlink()


# ---------------------------------------------------------------------------------------------
# The protocol scripts


@pytest.mark.parametrize("variables, dataset, named", [
    ({}, "../../../../elsewhere/x", "DATASET"), ({}, "a/b", "DATASET"), ({}, "..", "DATASET"),
    ({"SOURCE": "../imagenet"}, "eurosat", "SOURCE")])
def test_protocol_scripts_refuse_dataset_names_that_are_not_one_folder(tmp_path, capsys, variables, dataset, named):
    from scripts import protocols

    variables = {"DATA": str(tmp_path / "data"), "OUTPUT": str(tmp_path / "box" / "output"), **variables}
    step = "xd_test" if "SOURCE" in variables else "base2new_test"
    message = refused(protocols.main, ["zsclip", step, dataset, "1"], capsys, variables=variables)
    assert message.startswith(f"error: {named} ")
    assert not (tmp_path / "box").exists()


def test_the_script_itself_refuses_an_escaping_dataset_name(tmp_path):
    """``scripts/zsclip/base2new_test.sh ../../../../elsewhere/x 1`` (issue 20 §4)."""
    elsewhere = tmp_path / "elsewhere"
    result = subprocess.run(["bash", "scripts/zsclip/base2new_test.sh", "../../../../elsewhere/x", "1"],
                            cwd=train.ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "DATA": str(tmp_path / "data"),
                                 "OUTPUT": str(tmp_path / "a" / "b" / "c" / "output"), "PYTHON": sys.executable})
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: DATASET ")
    assert not elsewhere.exists() and not (tmp_path / "a").exists()


def test_training_refuses_a_decompression_bomb_in_one_line(toy, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 16)  # the toy's 8x8 images are 4 times that
    message = refused(train.main, toy(opts=["DATALOADER.NUM_WORKERS", "0"]), capsys)
    assert "decompression bomb" in message and ".png" in message


# ---------------------------------------------------------------------------------------------
# Your own dataset, through python -m datasets.prepare CONFIG --verify (train.py builds it alike)


def user_dataset(root, csv_lines=None, folders=None):
    """``root/mine`` with images of three classes, as class folders or listed by a CSV
    (``csv_lines`` after the header, bytes or text); returns the dataset YAML's path."""
    from tests.helpers.datasets import write_image

    folders = folders or {"rose": 10, "tulip": 10, "daisy": 10}
    for label, (name, count) in enumerate(folders.items()):
        for index in range(count):
            write_image(os.path.join(os.fsencode(root / "mine" / "images"), os.fsencode(name),
                                     f"{index}.png".encode()).decode("utf-8", "surrogateescape"),
                        label % 3, index)
    yaml = 'DATASET:\n  NAME: "UserDataset"\n  USER:\n    DIR: "mine"\n'
    if csv_lines is not None:
        lines = [line if isinstance(line, bytes) else line.encode() for line in ["path,class", *csv_lines]]
        (root / "mine" / "labels.csv").write_bytes(b"\n".join(lines) + b"\n")
        yaml += '    CSV: "labels.csv"\n'
    config = root / "mine.yaml"
    config.write_text(yaml)
    return config


def csv_rows(classes=("rose", "tulip", "daisy"), per_class=10):
    return [f"{name}/{index}.png,{name}" for name in classes for index in range(per_class)]


USER_DATASETS = {
    "CSV: an image listed twice": (dict(csv_lines=csv_rows() + ["rose/3.png,rose"]), "list the same image"),
    "CSV: an image listed twice, spelt otherwise": (dict(csv_lines=csv_rows() + ["rose/./3.png,tulip"]),
                                                   "list the same image"),
    "CSV: class \"\"": (dict(csv_lines=csv_rows() + [f"daisy/{i}.png," for i in range(10, 14)]), "blank"),
    "CSV: class \"   \"": (dict(csv_lines=csv_rows() + [f"daisy/{i}.png,   " for i in range(10, 14)]), "blank"),
    "CSV: a row without its class": (dict(csv_lines=csv_rows() + ["daisy/10.png"]), "line 32"),
    "CSV: not UTF-8": (dict(csv_lines=csv_rows() + [b"daisy/10.png,ros\xe9"]), "UTF-8"),
    "folders: class \"   \"": (dict(folders={"rose": 10, "   ": 10}), "blank"),
    "folders: class \"_\"": (dict(folders={"rose": 10, "_": 10}), "blank"),
    "folders: a name that is not UTF-8": (dict(folders={"rose": 10, "ros\udce9": 10}), "UTF-8"),
}


@pytest.mark.parametrize("case", sorted(USER_DATASETS))
def test_your_own_dataset_refuses_bad_lists_and_names_in_one_line(tmp_path, capsys, case):
    from datasets import prepare

    kwargs, named = USER_DATASETS[case]
    config = user_dataset(tmp_path, **kwargs)
    before = snapshot(tmp_path)
    message = refused(prepare.main, [str(config), "--root", str(tmp_path), "--verify"], capsys)
    assert named in message
    assert snapshot(tmp_path) == before  # no split file saved


# ---------------------------------------------------------------------------------------------
# predict.py, with the zero-shot trainer (no model folder needed) on a tiny CLIP


@pytest.fixture(scope="module")
def predict_args(tmp_path_factory):
    from PIL import Image

    from tests.helpers.trainers import tiny_opts, write_tiny_clip

    root = tmp_path_factory.mktemp("predict")
    Image.new("RGB", (8, 8)).save(root / "photo.png")
    clip_file = write_tiny_clip(root / "tiny.pt")

    def args(*options, classnames=("cat", "dog")):
        return ["--trainer", "ZeroshotCLIP", "--config-file",
                os.path.join(train.ROOT, "configs", "trainers", "CoOp", "vit_b16_ep50.yaml"),
                *options, "--classnames", *classnames, "--", str(root / "photo.png"), *tiny_opts(clip_file)]

    return args


def test_predict_works_with_these_arguments(predict_args, capsys):
    """The cases below fail for their bad input alone."""
    import predict

    predict.main(predict_args())
    assert "cat" in capsys.readouterr().out


@pytest.mark.parametrize("options, classnames, named", [
    (["--device", "tpu"], ("cat", "dog"), "--device"),
    (["--device", "cuda:x"], ("cat", "dog"), "--device"),
    ([], ("cat", "_"), "empty once underscores"),
    ([], ("cat", "__ _"), "empty once underscores"),
])
def test_predict_refuses_bad_arguments_in_one_line(predict_args, capsys, options, classnames, named):
    import predict

    assert named in refused(predict.main, predict_args(*options, classnames=classnames), capsys)


def test_predict_refuses_a_class_names_file_that_is_not_utf8(predict_args, tmp_path, capsys):
    import predict

    names = tmp_path / "names.txt"
    names.write_bytes(b"cat\nros\xe9\n")
    assert "UTF-8" in refused(predict.main, predict_args("--classnames-file", str(names)), capsys)


def test_predict_refuses_a_decompression_bomb_in_one_line(predict_args, monkeypatch, capsys):
    import predict
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 16)
    assert "decompression bomb" in refused(predict.main, predict_args(), capsys)


# ---------------------------------------------------------------------------------------------
# CoPrompt's class descriptions (TRAINER.COPROMPT.DESCRIPTIONS)

EUROSAT_CLASSES = ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road"]

DESCRIPTION_FILES = {
    "strings instead of lists": (json.dumps({name: f"A photo of {name}." for name in EUROSAT_CLASSES}),
                                 "not lists of sentences"),
    "numbers in the lists": (json.dumps({name: [1, 2] for name in EUROSAT_CLASSES}), "not lists of sentences"),
    "a number per class": (json.dumps({name: 3 for name in EUROSAT_CLASSES}), "not lists of sentences"),
    "a list": (json.dumps([[name, ["a sentence"]] for name in EUROSAT_CLASSES]), "not a JSON object"),
    "a number": ("42", "not a JSON object"),
    "invalid JSON": ('{"Forest": ["a forest."', "not valid JSON"),
    "deeply nested JSON": ("[" * 100000 + "]" * 100000, "not valid JSON"),
    "not UTF-8": ((json.dumps({name: ["a sentence"] for name in EUROSAT_CLASSES})[:-1] + ', "ros\xe9": []}')
                  .encode("latin-1"), "UTF-8"),
}


@pytest.mark.parametrize("case", sorted(DESCRIPTION_FILES))
def test_malformed_description_files_are_refused_in_one_line(tmp_path, case):
    from datasets.descriptions import load_descriptions
    from dassl.data.datasets import DatasetError

    content, named = DESCRIPTION_FILES[case]
    path = tmp_path / "descriptions.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DatasetError) as error:
        load_descriptions(str(path), EUROSAT_CLASSES)
    assert named in str(error.value) and "\n" not in str(error.value)


def test_coprompt_training_refuses_descriptions_given_as_strings(tmp_path, capsys):
    """Issue 20 §12: strings were split into characters ("541 class descriptions") and trained on."""
    from tests.helpers.datasets import make_eurosat
    from tests.helpers.trainers import train_py_args, write_tiny_clip

    make_eurosat(tmp_path / "data", n_classes=4, n_train=4, n_val=2, n_test=1)
    path = tmp_path / "descriptions.json"
    path.write_text(DESCRIPTION_FILES["strings instead of lists"][0])
    clip_file = write_tiny_clip(tmp_path / "tiny.pt")
    argv = train_py_args("CoPrompt", "CoPrompt/coprompt.yaml", tmp_path / "data", clip_file, tmp_path / "out",
                         overrides=["TRAINER.COPROMPT.DESCRIPTIONS", str(path), "TRAINER.MAPLE.PROMPT_DEPTH", "2", "OPTIM.MAX_EPOCH", "1",
                                    "DATASET.NUM_SHOTS", "1"])
    message = refused(train.main, argv, capsys)
    assert "not lists of sentences" in message
    assert not (tmp_path / "out" / "results.json").exists()


# ---------------------------------------------------------------------------------------------
# python -m scripts.released_weights


def zip_of(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def maple_members(dataset="dtd"):
    return {f"{dataset}/base/seed{seed}/MultiModalPromptLearner/model.pth.tar-5": b"w" for seed in (1, 2, 3)}


@pytest.mark.parametrize("members, named", [
    ({"dtd/base/seed1/../../../../escaped.txt": b"x", **maple_members()}, "refusing to extract it"),
    ({"/tmp/escaped.txt": b"x"}, "refusing to extract it"),
    ({"dtd/readme.txt": b"no checkpoints here"}, "holds no checkpoint"),
])
def test_released_weights_refuses_a_crafted_or_wrong_zip_in_one_line(tmp_path, capsys, members, named):
    from scripts import released_weights

    box = tmp_path / "box"
    archive = tmp_path / "dtd.zip"
    archive.write_bytes(zip_of(members))
    message = refused(released_weights.main, ["maple", "--dest", str(box / "w"), "--from-archive", str(archive)],
                      capsys)
    assert named in message
    assert sorted(os.listdir(tmp_path)) == ["box", "dtd.zip"] and os.listdir(box) == ["w"]


def test_released_weights_records_a_digest_only_for_an_accepted_archive(tmp_path, capsys):
    """Issue 20 §14: the digest of a refused archive was recorded, and the right one then refused."""
    from scripts import released_weights

    wrong, right = tmp_path / "wrong" / "dtd.zip", tmp_path / "right" / "dtd.zip"
    for path, members in ((wrong, {"dtd/readme.txt": b"no checkpoints"}), (right, maple_members())):
        path.parent.mkdir()
        path.write_bytes(zip_of(members))
    dest = tmp_path / "w"
    refused(released_weights.main, ["maple", "--dest", str(dest), "--from-archive", str(wrong)], capsys)
    assert released_weights.main(["maple", "--dest", str(dest), "--from-archive", str(right)]) == 0
    recorded = json.loads((dest / released_weights.MANIFEST).read_text())
    assert recorded["maple/dtd.zip"]["sha256"] == hashlib.sha256(right.read_bytes()).hexdigest()


def test_released_weights_refuses_a_file_as_dest_in_one_line(tmp_path, capsys):
    from scripts import released_weights

    archive = tmp_path / "dtd.zip"
    archive.write_bytes(zip_of(maple_members()))
    (tmp_path / "afile").write_text("mine")
    message = refused(released_weights.main, ["maple", "--dest", str(tmp_path / "afile"),
                                              "--from-archive", str(archive)], capsys)
    assert "--dest" in message and (tmp_path / "afile").read_text() == "mine"


@pytest.mark.parametrize("trainer, config, overrides", [
    ("CoOp", "CoOp/vit_b16_ep50.yaml", ["TRAINER.COOP.N_CTX", "100"]),
    ("BMIP", "BMIP/BMIP_ctx2_dp9_lr2.yaml", ["TRAINER.BMIP.N_CTX", "100", "TRAINER.BMIP.PROMPT_DEPTH", "2"]),
])
def test_more_context_tokens_than_clip_reads_is_one_line(tmp_path, capsys, trainer, config, overrides):
    from tests.helpers.datasets import make_eurosat
    from tests.helpers.trainers import train_py_args, write_tiny_clip

    make_eurosat(tmp_path / "data", n_classes=4, n_train=4, n_val=2, n_test=1)
    argv = train_py_args(trainer, config, tmp_path / "data", write_tiny_clip(tmp_path / "tiny.pt"), tmp_path / "out",
                         overrides=[*overrides, "OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "1"])
    message = refused(train.main, argv, capsys)
    assert "N_CTX" in message and "102 tokens" in message


@pytest.mark.parametrize("argv, named", [
    (["--sbatch-option", "--partition=gpu\nrm -rf ~"], "--sbatch-option"),
    (["--datasets", "../../elsewhere"], "DATASET"),
    (["--source", "a/b"], "--source"),
])
def test_run_all_refuses_options_that_would_break_out_in_one_line(tmp_path, capsys, argv, named):
    from scripts import sweep

    script = tmp_path / "box" / "job.sh"
    (tmp_path / "data").mkdir()
    message = refused(sweep.main, ["coop", "--protocols", "base2new", "--sbatch", str(script), *argv], capsys,
                      variables={"DATA": str(tmp_path / "data"), "OUTPUT": str(tmp_path / "out")})
    assert message.startswith(f"error: {named}")
    assert not (tmp_path / "box").exists() and not (tmp_path / "out").exists()


def test_the_slurm_log_path_is_quoted_when_output_has_spaces(tmp_path, capsys):
    from scripts import sweep

    output = tmp_path / "my runs" / "output"
    script = tmp_path / "job.sh"
    (tmp_path / "data").mkdir()
    assert sweep.main(["coop", "--protocols", "base2new", "--datasets", "eurosat", "--seeds", "1",
                       "--sbatch", str(script)], variables={"DATA": str(tmp_path / "data"), "OUTPUT": str(output)}) == 0
    (line,) = [line for line in script.read_text().splitlines() if line.startswith("#SBATCH --output=")]
    assert shlex.split(line[len("#SBATCH "):]) == [f"--output={output}/slurm/%A_%a.out"]
