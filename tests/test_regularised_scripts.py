"""PromptSRC and CoPrompt over BMIP through their protocol scripts on tiny EuroSAT with a tiny CLIP:
`CFG=vit_b16_c2_ep20_batch4_4ctx_bmip bash scripts/promptsrc/base2new_train.sh eurosat 1` and
`CFG=coprompt_bmip bash scripts/coprompt/base2new_train.sh eurosat 1` train and test, the
base2new_test scripts evaluate the new classes, and parse_test_res.py lists both methods (with the
paper's Table 4 numbers next to complete averages)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from datasets.eurosat import NEW_CNAMES
from tests.helpers.datasets import make_eurosat
from tests.helpers.trainers import TINY_SIZES, write_tiny_clip
from tests.test_protocols_end_to_end import bash

REPO = Path(__file__).resolve().parent.parent
RUNS = {"promptsrc": ("PromptSRC", "vit_b16_c2_ep20_batch4_4ctx_bmip"),
        "coprompt": ("CoPrompt", "coprompt_bmip")}


def overrides(clip_file):
    size = TINY_SIZES["image_resolution"]
    return ["MODEL.BACKBONE.NAME", str(clip_file), "INPUT.SIZE", f"({size}, {size})",
            "OPTIM.MAX_EPOCH", "1", "TRAINER.BMIP.PROMPT_DEPTH", "2", "TRAINER.BMIP.N_CTX", "2",
            "TRAINER.PROMPTSRC.GPA_MEAN", "1", "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TEST.BATCH_SIZE", "8", "USE_CUDA", "False"]


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    root = tmp_path_factory.mktemp("regularised")
    make_eurosat(root / "data", n_classes=4, n_train=4, n_val=2, n_test=3)
    descriptions = {name: [f"a satellite photo of {name}.", f"{name} seen from above."]
                    for name in NEW_CNAMES.values()}
    (root / "data" / "coprompt_descriptions").mkdir()
    (root / "data" / "coprompt_descriptions" / "eurosat_prompt.json").write_text(
        json.dumps(descriptions))
    clip_file = write_tiny_clip(root / "tiny-clip.pt")
    for folder, (_, config) in RUNS.items():
        env = dict(os.environ, DATA=str(root / "data"), OUTPUT=str(root / "output"),
                   PYTHON=sys.executable, CFG=config, TAG="tiny")
        for step in ("base2new_train", "base2new_test"):
            bash(f"{folder}/{step}.sh", "eurosat", 1, *overrides(clip_file), env=env)
    return root / "output"


@pytest.mark.parametrize("folder", sorted(RUNS))
def test_the_scripts_train_and_test_over_bmip(output, folder):
    trainer, config = RUNS[folder]
    # The tiny settings are overrides that change training: config folder <CFG>_<TAG>.
    for split, subsample in (("train_base", "base"), ("test_new", "new")):
        run = output / f"base2new/{split}/eurosat/shots_16/{trainer}/{config}_tiny/seed1"
        record = json.loads((run / "results.json").read_text())
        assert (record["trainer"], record["config"], record["subsample_classes"]) == (
            trainer, config, subsample)
    checkpoint = (output / f"base2new/train_base/eurosat/shots_16/{trainer}/{config}_tiny/seed1"
                  / "MultiModalPromptLearner" / "model.pth.tar-1")
    assert checkpoint.is_file()
    log = (checkpoint.parent.parent / "log.txt").read_text()
    assert "over BMIPPromptLearner" in log


def test_parse_test_res_lists_both_methods(output):
    result = subprocess.run([sys.executable, str(REPO / "parse_test_res.py"), str(output),
                             "--format", "json", "--paper"], capture_output=True, text=True,
                            check=True)
    records = json.loads(result.stdout)["records"]
    methods = {(record["table"], record["method"]) for record in records
               if record["mean"] is not None}
    assert {table for table, _ in methods} == {"base2new"}
    labels = {method for _, method in methods}
    assert any(label.startswith("PromptSRC") for label in labels), labels
    assert any(label.startswith("CoPrompt") for label in labels), labels
