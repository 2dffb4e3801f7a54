"""The protocol scripts end to end: tiny EuroSAT / ImageNet / ImageNetV2, a tiny CLIP file, 1 epoch.

A module-scoped sweep is shared by the assertions: run_all.sh with BMIP for base-to-new and
open-world (its config tests the best-validation model) and with MaPLe for cross-dataset and
domain generalisation (last-epoch model), seed 1, each run twice. Folders are spelled out from
SPEC.md §3.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.datasets import make_eurosat, make_imagenet, make_imagenetv2
from tests.helpers.trainers import TINY_SIZES, write_tiny_clip

REPO = Path(__file__).resolve().parent.parent
# The tiny settings are overrides that change training: the runs are tagged (TAG=tiny).
BMIP = "BMIP_ctx2_dp9_lr2_tiny"
MAPLE_XD = "vit_b16_c2_ep5_batch4_2ctx_cross_datasets_tiny"
BMIP_TRAIN = f"base2new/train_base/eurosat/shots_16/BMIP/{BMIP}/seed1"


def overrides(clip_file, trainer_key):
    size = TINY_SIZES["image_resolution"]
    return ["MODEL.BACKBONE.NAME", str(clip_file), "INPUT.SIZE", f"({size}, {size})",
            "OPTIM.MAX_EPOCH", "1", f"TRAINER.{trainer_key}.PROMPT_DEPTH", "2",
            "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "8", "USE_CUDA", "False"]


def bash(script, *args, env):
    result = subprocess.run(["bash", str(REPO / "scripts" / script), *map(str, args)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocols")
    make_eurosat(root / "data", n_classes=4, n_train=4, n_val=2, n_test=3)
    make_imagenet(root / "data", n_classes=3, n_train=2, n_val=2)
    make_imagenetv2(root / "data", n_classes=3, n_per_class=2)
    clip_file = write_tiny_clip(root / "tiny-clip.pt")
    env = dict(os.environ, DATA=str(root / "data"), OUTPUT=str(root / "output"),
               PYTHON=sys.executable, TAG="tiny")
    sweeps = [
        ["bmip", "--protocols", "base2new", "openworld", "--datasets", "eurosat", "--seeds", "1",
         "--", *overrides(clip_file, "BMIP")],
        ["maple", "--protocols", "xd", "dg", "--seeds", "1", "--xd-targets", "eurosat",
         "--dg-targets", "imagenetv2", "--", *overrides(clip_file, "MAPLE")],
    ]
    first = "".join(bash("run_all.sh", *arguments, env=env) for arguments in sweeps)
    second = "".join(bash("run_all.sh", *arguments, env=env) for arguments in sweeps)
    return {"root": root, "output": root / "output", "env": env, "clip": clip_file,
            "first": first, "second": second}


def results(folder):
    assert (folder / "log.txt").is_file(), f"no log.txt in {folder}"
    return json.loads((folder / "results.json").read_text())


def test_runs_land_in_the_documented_folders(sweep):
    expected = {
        BMIP_TRAIN: ("BMIP", "base2new", "base"),
        f"base2new/test_new/eurosat/shots_16/BMIP/{BMIP}/seed1": ("BMIP", "base2new", "new"),
        f"openworld/test_all/eurosat/shots_16/BMIP/{BMIP}/seed1": ("BMIP", "openworld", "all"),
        f"imagenet/MaPLe/{MAPLE_XD}_16shots/seed1": ("MaPLe", "xd", "all"),
        f"evaluation/MaPLe/{MAPLE_XD}_16shots/eurosat/seed1": ("MaPLe", "xd", "all"),
        f"evaluation/MaPLe/{MAPLE_XD}_16shots/imagenetv2/seed1": ("MaPLe", "dg", "all"),
    }
    for folder, (trainer, protocol, subsample) in expected.items():
        record = results(sweep["output"] / folder)
        assert (record["trainer"], record["protocol"], record["subsample_classes"]) == (
            trainer, protocol, subsample), folder
        # The tiny datasets hold fewer than 16 training images per class: the shots used are recorded.
        assert record["seed"] == 1 and record["num_shots_requested"] == 16 and record["num_shots"] <= 16


def test_evaluations_load_the_trained_model(sweep):
    output = sweep["output"]
    new_dir = output / f"base2new/test_new/eurosat/shots_16/BMIP/{BMIP}/seed1"
    new = results(new_dir)
    assert Path(new["model_dir"]) == output / BMIP_TRAIN
    assert new["total"] == 2 * 3  # the 2 new classes of 4, 3 test images each
    log = (new_dir / "log.txt").read_text()
    assert "load_epoch: None" in log and "model-best.pth.tar" in log  # TEST.FINAL_MODEL best_val
    openworld = results(output / f"openworld/test_all/eurosat/shots_16/BMIP/{BMIP}/seed1")
    assert openworld["total"] == 4 * 3
    assert openworld["num_base_images"] == openworld["num_new_images"] == 2 * 3
    target = results(output / f"evaluation/MaPLe/{MAPLE_XD}_16shots/imagenetv2/seed1")
    assert Path(target["model_dir"]) == output / f"imagenet/MaPLe/{MAPLE_XD}_16shots/seed1"
    assert target["load_epoch"] == 1  # the OPTIM.MAX_EPOCH override, not the config's 2


def test_run_all_skips_finished_runs(sweep):
    # 6 runs, the base-to-new and open-world tests of the model in one pass.
    assert sweep["first"].count("skip:") == 0 and sweep["first"].count("starting:") == 5
    assert sweep["first"].count("in one pass over the test images") == 1
    assert sweep["second"].count("skip:") == 6
    assert "resume:" not in sweep["second"] and "starting:" not in sweep["second"]


def test_reproduce_evaluates_released_weights_in_the_maple_layout(sweep):
    """The trained BMIP model placed as in MaPLe's releases (<dataset>/base/seed1/) and
    evaluated into <CFG>_released folders: our own evaluations of that config stay as they were."""
    weights = sweep["root"] / "weights"
    (weights / "eurosat" / "base").mkdir(parents=True)
    os.symlink(sweep["output"] / BMIP_TRAIN, weights / "eurosat" / "base" / "seed1")
    ours = sweep["output"] / f"base2new/test_new/eurosat/shots_16/BMIP/{BMIP}/seed1/results.json"
    before = ours.read_bytes()
    out = bash("bmip/reproduce.sh", "eurosat", 1, weights,
               *overrides(sweep["clip"], "BMIP"), env=sweep["env"])
    assert out.count("skip:") == 0 and out.count("starting:") == 1  # one pass for all three
    assert ours.read_bytes() == before
    released = f"eurosat/shots_16/BMIP/{BMIP}_released/seed1"
    record = results(sweep["output"] / "base2new/test_base" / released)
    assert Path(record["model_dir"]) == weights / "eurosat" / "base" / "seed1"
    assert record["subsample_classes"] == "base"
    assert record["accuracy"] == results(sweep["output"] / BMIP_TRAIN)["accuracy"]
    assert results(sweep["output"] / "base2new/test_new" / released)["accuracy"] == (
        json.loads(before)["accuracy"])
    assert results(sweep["output"] / "openworld/test_all" / released)["subsample_classes"] == "all"


def test_parse_test_res_prints_the_tables(sweep):
    result = subprocess.run([sys.executable, str(REPO / "parse_test_res.py"), str(sweep["output"]),
                             "--format", "json"], capture_output=True, text=True, check=True)
    records = json.loads(result.stdout)["records"]
    tables = {(record["table"], record["method"]) for record in records
              if record["mean"] is not None}
    # BMIP (released) is there once the reproduce test has run.
    assert tables - {("base2new", "BMIP (released)"), ("openworld", "BMIP (released)")} == {
        ("base2new", "BMIP"), ("openworld", "BMIP"), ("xd", "MaPLe"), ("dg", "MaPLe")}
    assert "warning" not in result.stderr
    hm = next(r for r in records if r["table"] == "base2new" and r["dataset"] == "EuroSAT"
              and r["metric"] == "HM")
    assert hm["seeds"] == [1]
