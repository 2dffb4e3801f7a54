"""Run identity end to end (issue 9): the real scripts, train.py and parse_test_res.py on tiny
data, CoOp with a tiny CLIP file, 1 epoch. Each test is a way the tables used to go wrong.

The tests share one output tree and run in file order; the CLIP swap, which replaces an
evaluation, comes last.
"""
import json
import os
import sys
from pathlib import Path

import pytest

from tests.helpers.datasets import make_eurosat, write_image
from tests.helpers.scripts import ok, parse, results, run_script, tiny
from tests.helpers.trainers import write_tiny_clip

REPO = Path(__file__).resolve().parent.parent
CONFIG = "vit_b16_ep50_tiny"  # CoOp's default config, the tiny runs tagged TAG=tiny
TRAIN = f"base2new/train_base/eurosat/shots_16/CoOp/{CONFIG}/seed1"
TEST = f"base2new/test_new/eurosat/shots_16/CoOp/{CONFIG}/seed1"


def records(document, table, dataset, metric):
    return {row["method"]: row for row in document["records"] if row["table"] == table
            and row["dataset"] == dataset and row["metric"] == metric}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A tagged 16-shot CoOp run on EuroSAT (seed 1), trained and evaluated on the new classes."""
    root = tmp_path_factory.mktemp("identity")
    make_eurosat(root / "data", n_classes=4, n_train=4, n_val=2, n_test=3)
    for folder, classes in (("flowers", ("daisy", "rose", "tulip", "iris")),
                            ("cars", ("sedan", "coupe", "truck", "van"))):
        for label, name in enumerate(classes):
            for index in range(6):
                write_image(root / "data" / folder / "images" / name / f"{index}.png", label,
                            index)
    clip = Path(write_tiny_clip(root / "tiny-clip.pt"))
    other_clip = Path(write_tiny_clip(root / "other-clip.pt", seed=1))  # same shapes, other weights
    env = dict(os.environ, DATA=str(root / "data"), OUTPUT=str(root / "output"),
               PYTHON=sys.executable, CLIP_CACHE_DIR=str(root / "cache"))
    tagged = {**env, "TAG": "tiny"}
    ok(run_script("coop/base2new_train.sh", "eurosat", 1, *tiny(clip), env=tagged))
    ok(run_script("coop/base2new_test.sh", "eurosat", 1, *tiny(clip), env=tagged))
    return {"root": root, "output": root / "output", "env": env, "tagged": tagged,
            "clip": clip, "other_clip": other_clip}


def test_results_record_the_whole_identity(tree):
    identity = results(tree["output"] / TEST)["identity"]
    assert identity["step"] == "base2new_test" and identity["protocol"] == "base2new"
    assert (identity["dataset"], identity["trainer"], identity["config"]) == (
        "EuroSAT", "CoOp", "vit_b16_ep50")
    assert (identity["shots"], identity["seed"], identity["tag"]) == (16, 1, "tiny")
    assert identity["overrides"] == {"INPUT.SIZE": [32, 32], "OPTIM.MAX_EPOCH": 1}
    assert identity["model"] == "epoch 1"
    import hashlib
    assert identity["clip_sha256"] == hashlib.sha256(tree["clip"].read_bytes()).hexdigest()
    # The fingerprint was computed once and cached by path, size and modification time.
    cache = json.loads((tree["root"] / "cache" / "sha256-cache.json").read_text())
    assert cache[str(tree["clip"])][2] == identity["clip_sha256"]


def test_an_override_of_the_shots_has_its_own_folder_and_row(tree):
    """DATASET.NUM_SHOTS 2 used to land in shots_16/ and be averaged with the 16-shot runs."""
    out = tree["output"]
    before = (out / TRAIN / "results.json").read_bytes()
    ok(run_script("coop/base2new_train.sh", "eurosat", 1, *tiny(tree["clip"]),
                  "DATASET.NUM_SHOTS", "2", env=tree["tagged"]))
    assert results(out / f"base2new/train_base/eurosat/shots_2/CoOp/{CONFIG}/seed1")[
        "identity"]["shots"] == 2
    assert (out / TRAIN / "results.json").read_bytes() == before
    base = records(parse(out), "base2new", "EuroSAT", "base")
    assert sorted((row["shots"], row["seeds"]) for row in base.values()) == [(2, [1]), (16, [1])]
    assert set(base) == {"CoOp [shots 16]", "CoOp [shots 2]"}
    hm = records(parse(out), "base2new", "EuroSAT", "HM")
    assert hm["CoOp [shots 16]"]["mean"] is not None
    assert hm["CoOp [shots 2]"]["mean"] is None  # no 2-shot new-class run: never paired


def test_other_settings_in_a_finished_folder_stop_with_the_differences(tree):
    """Other overrides used to print `skip: already finished` and keep the old run."""
    arguments = ("eurosat", 1, *tiny(tree["clip"]), "OPTIM.LR", "0.5")
    result = run_script("coop/base2new_train.sh", *arguments, env=tree["tagged"])
    assert result.returncode == 2
    assert "settings.OPTIM.LR: 0.002 -> 0.5" in result.stderr and "TAG=" in result.stderr
    dry = ok(run_script("run_all.sh", "coop", "--protocols", "base2new", "--datasets", "eurosat",
                        "--seeds", "1", "--dry-run", "--", *arguments[2:], env=tree["tagged"]))
    assert "stop (finished, other settings)" in dry and "settings.OPTIM.LR: 0.002 -> 0.5" in dry
    # Without a TAG, the overrides name a folder of their own: nothing finished there yet.
    dry = ok(run_script("run_all.sh", "coop", "--protocols", "base2new", "--datasets", "eurosat",
                        "--seeds", "1", "--dry-run", "--", *arguments[2:], env=tree["env"]))
    assert "2 runs: 2 start" in dry


def test_another_epoch_is_evaluated_beside_the_default_one(tree):
    out = tree["output"]
    before = (out / TEST / "results.json").read_bytes()
    arguments = ("coop/base2new_test.sh", "eurosat", 1, *tiny(tree["clip"]))
    ok(run_script(*arguments, env=tree["tagged"], LOAD_EPOCH="1"))
    epoch = results(out / f"base2new/test_new/eurosat/shots_16/CoOp/{CONFIG}_epoch1/seed1")
    assert epoch["identity"]["model"] == "epoch 1" and epoch["load_epoch"] == 1
    # A missing epoch, even with FORCE=1: the epochs there are, and nothing deleted.
    result = run_script(*arguments, env=tree["tagged"], LOAD_EPOCH="3", FORCE="1")
    assert result.returncode == 2 and "epochs saved: 1" in result.stderr
    assert (out / TEST / "results.json").read_bytes() == before


def test_a_failed_force_run_keeps_the_previous_results(tree):
    out = tree["output"]
    before = (out / TEST / "results.json").read_bytes()
    # A test batch size of 0 fails in train.py (a key that does not change the identity).
    result = run_script("coop/base2new_test.sh", "eurosat", 1, *tiny(tree["clip"]),
                        "DATALOADER.TEST.BATCH_SIZE", "0", env=tree["tagged"], FORCE="1")
    assert result.returncode != 0
    assert "keeps its previous results" in result.stderr
    assert (out / TEST / "results.json").read_bytes() == before
    assert (out / (TEST + ".staging") / "log.txt").is_file()  # the failed attempt, to read
    new = [row for row in records(parse(out), "base2new", "EuroSAT", "new").values()
           if row["config"] == "vit_b16_ep50" and row["tag"] == "tiny" and row["shots"] == 16]
    assert [row["seeds"] for row in new] == [[1]]


def test_a_run_refused_before_training_leaves_no_folder(tree):
    """A run that failed before it trained (here: its dataset is missing) used to leave a folder
    that made every cell of the method report a missing seed, later a "failed" line."""
    result = run_script("coop/base2new_train.sh", "dtd", 2, *tiny(tree["clip"]),
                        env=tree["tagged"])
    assert result.returncode != 0 and "error: " in result.stderr
    assert not (tree["output"] / "base2new/train_base/dtd").exists()
    document = parse(tree["output"])
    assert document["failed"] == []
    assert not any("missing seed" in line for line in document["problems"])
    rows = [row for row in document["records"] if row["dataset"] == "DescribableTextures"]
    assert rows == []


def test_a_model_of_another_source_is_evaluated_into_its_own_folder(tree):
    out = tree["output"]
    ok(run_script("coop/xd_train.sh", "eurosat", 1, *tiny(tree["clip"]), env=tree["tagged"]))
    ok(run_script("coop/xd_test.sh", "eurosat", 1, *tiny(tree["clip"]), env=tree["tagged"],
                  SOURCE="eurosat"))
    folder = out / "evaluation_from_eurosat/CoOp/vit_b16_ep50_tiny_16shots/eurosat/seed1"
    assert results(folder)["identity"]["source"] == "eurosat"
    assert not (out / "evaluation").exists()
    [row] = records(parse(out), "xd", "EuroSAT", "accuracy").values()
    assert row["source"] == "eurosat"
    [source] = records(parse(out), "xd", "EuroSAT (source)", "accuracy").values()
    assert source["seeds"] == [1]


def test_two_user_datasets_are_two_rows(tree):
    for folder in ("flowers", "cars"):
        ok(run_script("coop/base2new_train.sh", "my_dataset_example", 1, *tiny(tree["clip"]),
                      "DATASET.USER.DIR", folder, env=tree["env"]))
    base = parse(tree["output"])
    names = {row["dataset"] for row in base["records"] if row["table"] == "base2new"}
    # One dataset config, two folders of data: two rows, named apart by the data's own name.
    assert {"my_dataset_example (flowers)", "my_dataset_example (cars)"} <= names
    assert "UserDataset" not in names


NUMBERS = ("accuracy", "error", "macro_f1", "total", "correct", "per_class_accuracy")


def test_one_pass_over_the_test_images_files_what_separate_passes_file(tree):
    """reproduce.sh evaluates base, new and open-world: one train.py run reads the test images
    once; its numbers equal those of the separate passes (the training run's base test, the
    base2new_test and openworld_test runs), exactly."""
    out = tree["output"]
    ok(run_script("coop/openworld_test.sh", "eurosat", 1, *tiny(tree["clip"]), env=tree["tagged"]))
    weights = tree["root"] / "weights" / "eurosat" / "base"
    weights.mkdir(parents=True)
    os.symlink(out / TRAIN, weights / "seed1")
    printed = ok(run_script("coop/reproduce.sh", "eurosat", 1, tree["root"] / "weights",
                            *tiny(tree["clip"]), env=tree["tagged"]))
    assert printed.count("starting:") == 1 and "in one pass over the test images" in printed
    released = f"eurosat/shots_16/CoOp/{CONFIG}_released/seed1"
    for separate, one_pass, step in (
            (TRAIN, f"base2new/test_base/{released}", "base2new_test_base"),
            (TEST, f"base2new/test_new/{released}", "base2new_test"),
            (TEST.replace("base2new/test_new", "openworld/test_all"),
             f"openworld/test_all/{released}", "openworld_test")):
        expected, got = results(out / separate), results(out / one_pass)
        assert {key: got[key] for key in NUMBERS} == {key: expected[key] for key in NUMBERS}
        assert got["identity"]["step"] == step
        assert got["identity"]["subsample_classes"] == expected["identity"]["subsample_classes"]
    new_log = (out / "base2new/test_new" / released / "log.txt").read_text()
    assert new_log.startswith("One pass: the new classes scored from the all-class test")
    # Filed where separate runs file them: the scripts see them as finished.
    again = ok(run_script("coop/reproduce.sh", "eurosat", 1, tree["root"] / "weights",
                          *tiny(tree["clip"]), env=tree["tagged"]))
    assert again.count("skip:") == 3


def test_a_checkpoint_evaluated_with_other_clip_weights_says_so(tree):
    out = tree["output"]
    trained = results(out / TEST)["identity"]["clip_sha256"]
    arguments = ("coop/base2new_test.sh", "eurosat", 1, *tiny(tree["other_clip"]))
    result = run_script(*arguments, env=tree["tagged"])
    assert result.returncode == 2 and "clip_sha256:" in result.stderr
    # Refused unless asked for: the checkpoint's CLIP and this one are both named, with the
    # switch that allows it, and the evaluation already there is kept as it was (issue 19,
    # item 9: such a test used to only warn and be averaged into the row of the test's CLIP).
    before = (out / TEST / "results.json").read_bytes()
    refused = run_script(*arguments, env=tree["tagged"], FORCE="1")
    assert refused.returncode != 0 and trained in refused.stderr
    assert "TEST.ALLOW_OTHER_CLIP True" in refused.stderr
    assert (out / TEST / "results.json").read_bytes() == before
    ok(run_script(*arguments, "TEST.ALLOW_OTHER_CLIP", "True", env=tree["tagged"], FORCE="1"))
    record = results(out / TEST)
    assert record["model_clip_sha256"] == trained != record["identity"]["clip_sha256"]
    log = (out / TEST / "log.txt").read_text()
    assert f"trained with the CLIP weights of SHA-256 {trained}" in log
    assert record["identity"]["clip_sha256"] in log
    # The base accuracy (trained CLIP) and the new accuracy (other CLIP) are never paired.
    hm = [row for row in records(parse(out), "base2new", "EuroSAT", "HM").values()
          if row["config"] == "vit_b16_ep50" and row["tag"] == "tiny" and row["shots"] == 16]
    assert len({row["clip"] for row in hm}) == 2
    [other] = [row for row in hm if "model trained on" in row["clip"]]
    assert other["mean"] is None
