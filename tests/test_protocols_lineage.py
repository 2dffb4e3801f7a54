"""The table never lies (issue 19): each sequence of documented commands, folder copies, moves
and renames that used to make parse_test_res.py print a wrong or mislabelled number, through the
real scripts, train.py and the parser on tiny data (CoOp, a tiny CLIP file, 1 epoch).

The tests share one output tree and run in file order. Trees that a test damages on purpose
(copies, renames) are copies. Item 9 (a checkpoint tested with other CLIP weights) is checked in
tests/test_protocols_identity.py (test_a_checkpoint_evaluated_with_other_clip_weights_says_so).
"""
import os
import random
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import parse_test_res
from tests.helpers.datasets import make_eurosat, write_image
from tests.helpers.protocols import b2n_dir, write_results, write_training_log
from tests.helpers.scripts import copy_checkout, ok, parse, results, run_script, tiny
from tests.helpers.trainers import write_tiny_clip

REPO = Path(__file__).resolve().parent.parent
CONFIG = "vit_b16_ep50"
FOLDER = f"{CONFIG}_t"  # the runs are tagged TAG=t
TRAIN = f"base2new/train_base/eurosat/shots_16/CoOp/{FOLDER}"
TEST = f"base2new/test_new/eurosat/shots_16/CoOp/{FOLDER}"


def rows(document, table, metric):
    return [row for row in document["records"] if row["table"] == table
            and row["metric"] == metric and row["dataset"] != "Average"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Seed 1 of a tagged CoOp run on EuroSAT, trained and tested on the new classes."""
    root = tmp_path_factory.mktemp("lineage")
    make_eurosat(root / "data", n_classes=4, n_train=4, n_val=2, n_test=3)
    clip = Path(write_tiny_clip(root / "tiny-clip.pt"))
    env = dict(os.environ, DATA=str(root / "data"), OUTPUT=str(root / "output"),
               PYTHON=sys.executable, CLIP_CACHE_DIR=str(root / "cache"),
               TAG="t")
    ok(run_script("coop/base2new_train.sh", "eurosat", 1, *tiny(clip), env=env))
    ok(run_script("coop/base2new_test.sh", "eurosat", 1, *tiny(clip), env=env))
    return {"root": root, "output": root / "output", "env": env, "clip": clip}


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A copy of the repository, for the tests that add configs where the scripts read them
    (configs/): the repository's own configs/ stays as published while other tests run."""
    return copy_checkout(tmp_path_factory.mktemp("checkout"))


def copy_tree(tree, name):
    target = tree["root"] / name
    shutil.copytree(tree["output"], target, symlinks=True)
    return target


def test_every_result_records_its_settings_data_and_lineage(tree):
    train, test = results(tree["output"] / TRAIN / "seed1"), results(tree["output"] / TEST / "seed1")
    assert train["identity"]["settings"]["OPTIM.LR"] == 0.002
    assert train["identity"]["fingerprint"] == test["identity"]["fingerprint"]
    assert train["identity"]["config_file"]["published"] is True
    assert train["identity"]["config_file"]["changes"]["OPTIM.MAX_EPOCH"] == [50, 1]
    assert train["dataset_hash"] == test["dataset_hash"] and train["test_hash"] != test["test_hash"]
    assert test["lineage"]["model_run_id"] == train["run_id"] != test["run_id"]
    [digest] = test["lineage"]["checkpoints"].values()
    assert len(digest) == 64


def test_a_config_edited_between_seeds_is_another_setting(tree, checkout):
    """Item 1: seed 1 with LR 0.002, the YAML edited, seed 2 with LR 0.05 used to be one cell of
    (2) seeds; seed 1 again after the edit printed `skip: already finished`."""
    name = f"lineage-{uuid.uuid4().hex[:8]}"
    config = checkout / "configs/trainers/CoOp" / f"{name}.yaml"
    published = (checkout / "configs/trainers/CoOp" / f"{CONFIG}.yaml").read_text()
    config.write_text(published)
    env = {**tree["env"], "CFG": name, "OUTPUT": str(tree["root"] / "edited")}
    script = "coop/base2new_train.sh"
    ok(run_script(script, "eurosat", 1, *tiny(tree["clip"]), env=env, repo=checkout))
    config.write_text(published.replace("LR: 0.002", "LR: 0.05"))
    ok(run_script(script, "eurosat", 2, *tiny(tree["clip"]), env=env, repo=checkout))
    again = run_script(script, "eurosat", 1, *tiny(tree["clip"]), env=env, repo=checkout)
    assert again.returncode == 2 and "settings.OPTIM.LR: 0.002 -> 0.05" in again.stderr
    base = rows(parse(tree["root"] / "edited", repo=checkout), "base2new", "base")
    assert sorted((row["method"], row["seeds"]) for row in base) == [
        ("CoOp [lr 0.002]", [1]), ("CoOp [lr 0.05]", [2])]
    assert all("differs from the published one" in row["changes"] for row in base)
    # The classic form (MaPLe's usage) on that folder keeps the two settings apart too, and
    # lists an upstream log beside them apart.
    folder = tree["root"] / "edited/base2new/train_base/eurosat/shots_16/CoOp" / f"{name}_t"
    write_training_log(folder / "seed5", 12.0)
    classic = subprocess.run([sys.executable, str(checkout / "parse_test_res.py"), str(folder)],
                             capture_output=True, text=True)
    assert classic.returncode == 0, classic.stderr
    summaries = classic.stdout.split("Summary of")
    assert len(summaries) == 4, classic.stdout  # two settings and the log without a record
    assert "OPTIM.LR 0.05" in classic.stdout and "no results.json" in classic.stdout
    assert "* accuracy: 12.00%" in classic.stdout  # the log alone, never averaged in


def test_two_user_datasets_whose_folders_share_a_name_are_two_rows(tree, checkout):
    """Item 2: /a/flowers and /b/flowers, each with its config, used to be one row."""
    configs = []
    for variant, classes in (("a", ("daisy", "rose", "tulip", "iris")),
                             ("b", ("oak", "pine", "birch", "elm"))):
        for label, name in enumerate(classes):
            for index in range(6):
                write_image(tree["root"] / variant / "flowers" / "images" / name / f"{index}.png",
                            label, index)
        name = f"lineage_flowers_{variant}_{uuid.uuid4().hex[:6]}"
        (checkout / "configs/datasets" / f"{name}.yaml").write_text(
            f'DATASET:\n  NAME: "UserDataset"\n  USER:\n'
            f'    DIR: "{tree["root"] / variant / "flowers"}"\n')
        configs.append(name)
    env = {**tree["env"], "OUTPUT": str(tree["root"] / "flowers")}
    for name in configs:
        ok(run_script("coop/base2new_train.sh", name, 1, *tiny(tree["clip"]), env=env,
                      repo=checkout))
    base = rows(parse(tree["root"] / "flowers", repo=checkout), "base2new", "base")
    assert sorted(row["dataset"] for row in base) == sorted(configs)
    assert all(row["seeds"] == [1] for row in base)


def test_a_copied_seed_folder_adds_no_seed(tree):
    """Item 3: `cp -r seed1 seed3` used to count the copy as a third seed."""
    output = copy_tree(tree, "copied")
    for step in (TRAIN, TEST):
        shutil.copytree(output / step / "seed1", output / step / "seed3")
    document = parse(output)
    for metric in ("base", "new", "HM"):
        [row] = rows(document, "base2new", metric)
        assert row["seeds"] == [1] and row["n"] == 1
    assert any("seed3 is a copy of" in line for line in document["conflicts"])
    assert any("folder says seed 3" in line for line in document["conflicts"])


def test_folders_copied_or_renamed_keep_what_their_record_says(tree):
    """Item 4: a dataset folder copied to dtd, the trainer folder to MaPLe, the config folder
    renamed to another config's name used to label the numbers as DTD, MaPLe, that config."""
    output = copy_tree(tree, "renamed")
    shutil.copytree(output / "base2new/train_base/eurosat", output / "base2new/train_base/dtd")
    shutil.copytree(output / "base2new/test_new/eurosat/shots_16/CoOp",
                    output / "base2new/test_new/eurosat/shots_16/MaPLe")
    (output / TRAIN).rename(output / "base2new/train_base/eurosat/shots_16/CoOp/vit_b16_ep100")
    document = parse(output)
    labelled = {(row["dataset"], row["method"], row["trainer"], row["config"])
                for row in document["records"] if row["dataset"] != "Average"}
    assert labelled == {("EuroSAT", "CoOp", "CoOp", CONFIG)}
    for row in rows(document, "base2new", "base"):
        assert row["seeds"] == [1]
    conflicts = "\n".join(document["conflicts"])
    assert "folder says dataset dtd" in conflicts and "folder says trainer MaPLe" in conflicts
    assert "folder says config vit_b16_ep100" in conflicts


def test_a_model_is_evaluated_only_with_the_settings_it_was_trained_with(tree):
    """Item 5: trained with an override under a TAG, tested without it, used to evaluate
    another model definition silently."""
    env = {**tree["env"], "TAG": "position"}
    ok(run_script("coop/base2new_train.sh", "eurosat", 1, *tiny(tree["clip"]),
                  "TRAINER.COOP.CLASS_TOKEN_POSITION", "middle", env=env))
    result = run_script("coop/base2new_test.sh", "eurosat", 1, *tiny(tree["clip"]), env=env)
    assert result.returncode != 0
    assert "TRAINER.COOP.CLASS_TOKEN_POSITION: 'middle' -> 'end'" in result.stderr
    test = tree["output"] / "base2new/test_new/eurosat/shots_16/CoOp" / f"{CONFIG}_position"
    assert not (test / "seed1" / "results.json").exists()
    ok(run_script("coop/base2new_test.sh", "eurosat", 1, *tiny(tree["clip"]),
                  "TRAINER.COOP.CLASS_TOKEN_POSITION", "middle", env=env))


def test_an_evaluation_of_a_replaced_model_is_stale(tree):
    """Item 6: after FORCE=1 retraining, the HM used to pair the new model's base accuracy
    with the replaced model's new-class accuracy."""
    output = tree["output"]
    old = results(output / TEST / "seed1")
    ok(run_script("coop/base2new_train.sh", "eurosat", 1, *tiny(tree["clip"]), env=tree["env"],
                  FORCE="1"))
    assert results(output / TRAIN / "seed1")["run_id"] != old["lineage"]["model_run_id"]
    document = parse(output)
    [stale] = document["stale"]
    assert f"{TEST}/seed1" in stale and "base2new_test.sh eurosat 1" in stale
    tagged = [row for row in rows(document, "base2new", "new") if row["tag"] == "t"]
    assert [row["seeds"] for row in tagged] == [[]]
    assert all(row["mean"] is None for row in rows(document, "base2new", "HM")
               if row["tag"] == "t")
    ok(run_script("coop/base2new_test.sh", "eurosat", 1, *tiny(tree["clip"]), env=tree["env"]))
    document = parse(output)
    assert document["stale"] == []
    [hm] = [row for row in rows(document, "base2new", "HM") if row["tag"] == "t"]
    assert hm["seeds"] == [1] and hm["mean"] is not None


def test_random_folder_operations_never_mix_identities_or_count_a_run_twice(tree):
    """Property: any sequence of copies, moves and renames of run, config, trainer and
    dataset folders gives tables whose every cell holds values of distinct run ids of one
    setting, each under the seed its record says."""
    rng = random.Random(19)
    for trial in range(12):
        output = copy_tree(tree, f"random{trial}")
        for _ in range(rng.randint(1, 4)):
            folders = [path for path in output.rglob("*") if path.is_dir()
                       and path.name.startswith(("seed", "vit_", "CoOp", "eurosat"))
                       and not path.name.endswith(".staging")]
            source = rng.choice(folders)
            name = rng.choice(["seed2", "seed3", "vit_b16_ep100", "MaPLe", "dtd", "BMIP",
                               "vit_b16_c2_ep5_batch4_8ctx"])
            target = source.with_name(name)
            if target.exists() or source in target.parents:
                continue
            (shutil.copytree if rng.random() < 0.5 else shutil.move)(source, target)
        runs, _ = parse_test_res.counted_runs(parse_test_res.find_runs(output))
        ids = [run.run_id for run in runs if run.run_id]
        assert len(ids) == len(set(ids)), trial
        for table in parse_test_res.build_tables(runs):
            for (method, dataset, metric), cell in table.cells.items():
                if cell is None or cell.is_average or metric == "HM":
                    continue
                trainer, config, setting = table.method_info[method]
                sources = [run for run in runs if run.method == (trainer, config, setting)
                           and run.metrics is not None and run.key.seed in cell.values]
                assert {run.key.seed for run in sources} >= set(cell.values)
                assert all(run.metrics["seed"] == run.key.seed for run in sources)


def test_the_paper_number_follows_the_recorded_config_not_the_folder(tmp_path):
    """Item 10: a tagged PromptSRC+BMIP run (folder <CFG>_<tag>) used to be compared with
    PromptSRC's paper numbers."""
    config = "vit_b16_c2_ep20_batch4_4ctx_bmip"
    identity = {"trainer": "PromptSRC", "config": config, "tag": "mine", "step": "base2new_train",
                "shots": 16, "seed": 1, "model": "epoch 20", "fingerprint": "f" * 16,
                "settings": {"OPTIM.LR": 0.0025}, "config_file": {"published": True,
                                                                 "changes": {}}}
    write_results(b2n_dir(tmp_path, "train_base", "eurosat", "PromptSRC", f"{config}_mine", 1),
                  90.0, identity=identity, run_id="a" * 16, dataset_config="eurosat")
    document = parse(tmp_path, "--paper")
    [row] = rows(document, "base2new", "base")
    paper = parse_test_res.load_paper_results()
    assert paper.method(row["trainer"], row["config"]) == "PromptSRC+BMIP"
    assert row["method"].startswith("PromptSRC (PromptSRC+BMIP)")


def test_a_refused_run_names_every_override_at_once_and_leaves_no_folder(tree):
    """Item 6 of what to build: a CLIP that does not fit the config used to be refused one key
    per attempt, each attempt leaving a folder behind."""
    output = tree["root"] / "refused" / "run"
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--root", str(tree["root"] / "data"),
         "--seed", "1", "--trainer", "BMIP",
         "--dataset-config-file", str(REPO / "configs/datasets/eurosat.yaml"),
         "--config-file", str(REPO / "configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml"),
         "--output-dir", str(output), "MODEL.BACKBONE.NAME", str(tree["clip"]),
         "DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", "0", "USE_CUDA", "False"],
        capture_output=True, text=True, env=tree["env"])
    assert result.returncode != 0
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "TRAINER.BMIP.PROMPT_DEPTH is 9" in line and "set INPUT.SIZE (32, 32)" in line
    assert not output.exists()


def test_the_classic_parse_of_a_folder_that_exists_with_a_suffix_names_it(tree):
    """MaPLe's documented parse command on an untagged folder, when only tagged runs exist."""
    folder = tree["output"] / "base2new/train_base/eurosat/shots_16/CoOp" / CONFIG
    result = subprocess.run([sys.executable, str(REPO / "parse_test_res.py"), str(folder)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert f"{folder}_t" in result.stderr and "with that name and a suffix" in result.stderr


def test_the_plot_marks_incomplete_averages_and_changed_settings(tmp_path):
    identity = {"trainer": "BMIP", "config": "BMIP_ctx2_dp9_lr2", "tag": "", "shots": 16,
                "seed": 1, "model": "best_val", "fingerprint": "e" * 16,
                "settings": {"OPTIM.LR": 0.05},
                "config_file": {"published": True, "changes": {"OPTIM.LR": [0.002, 0.05]}}}
    for step, part, accuracy in (("base2new_train", "train_base", 80.0),
                                 ("base2new_test", "test_new", 60.0)):
        write_results(b2n_dir(tmp_path, part, "eurosat", "BMIP", "BMIP_ctx2_dp9_lr2", 1),
                      accuracy, identity={**identity, "step": step}, run_id=step,
                      dataset_config="eurosat")
    runs, _ = parse_test_res.counted_runs(parse_test_res.find_runs(tmp_path))
    [table] = parse_test_res.build_tables(runs)
    metric, series = parse_test_res.plot_series(table)
    [(method, values)] = series.items()
    assert values["label"] == "BMIP {lr 0.05}"
    assert values["incomplete"] == [None, "1/11"]  # EuroSAT, then the Average over 1 of 11
    text = parse_test_res.render_text([table], "table")
    assert "BMIP {lr 0.05}" in text and "OPTIM.LR = 0.05 (published: 0.002)" in text


def test_an_open_clip_backbone_is_named_in_the_clip_column(tmp_path):
    for backbone, seed, digest in (("ViT-B-16/laion2b_s34b_b88k", 1, "a" * 64),
                                   ("ViT-B/16", 1, "b" * 64)):
        label = backbone
        identity = {"trainer": "BMIP", "config": "BMIP_ctx2_dp9_lr2", "tag": "", "shots": 16,
                    "seed": seed, "model": "best_val", "step": "base2new_train",
                    "backbone": f"/models/{backbone}", "backbone_label": label,
                    "clip_sha256": digest, "fingerprint": "e" * 16, "settings": {}}
        folder = b2n_dir(tmp_path / backbone.replace("/", "_"), "train_base", "eurosat", "BMIP",
                         "BMIP_ctx2_dp9_lr2", seed)
        write_results(folder, 80.0, identity=identity, run_id=digest[:16],
                      dataset_config="eurosat")
    base = rows(parse(tmp_path), "base2new", "base")
    assert sorted(row["clip"] for row in base) == [
        f"ViT-B-16/laion2b_s34b_b88k sha256:{'a' * 12}", f"ViT-B/16 sha256:{'b' * 12}"]
    assert len({row["method"] for row in base}) == 2
