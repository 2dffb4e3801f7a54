"""Zero-shot CLIP end to end: `python train.py --trainer ZeroshotCLIP --eval-only ...` on a tiny
EuroSAT with a tiny CLIP file writes log.txt with the result lines, and its logits are those of
the plain CLIP model with CoOp's EuroSAT template (written out here, not imported);
ZeroshotCLIP2 averages the normalised text features of its templates."""
import re

import pytest
import torch
import torch.nn.functional as F

import clip
import train
from dassl.engine import build_trainer
from dassl.utils import UserError
from tests.helpers.coop import zero_shot_logits
from tests.helpers.datasets import EUROSAT_CLASSES, make_eurosat
from tests.helpers.trainers import run_train_py, train_py_args, write_tiny_clip
from trainers.zsclip import GENERIC_TEMPLATE, IMAGENET_TEMPLATES_SELECT, dataset_template

CONFIG_FILE = "CoOp/vit_b16_ep50.yaml"
TEST_BATCH = ["DATALOADER.TEST.BATCH_SIZE", "5"]
N_CLASSES = 4
EUROSAT_NAMES = [name for _, name in EUROSAT_CLASSES[:N_CLASSES]]
EUROSAT_PROMPTS = [f"a centered satellite photo of {name}." for name in EUROSAT_NAMES]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(data root, CLIP file) of a tiny EuroSAT with 3 test images per class."""
    root = tmp_path_factory.mktemp("zsclip")
    make_eurosat(root / "data", n_classes=N_CLASSES, n_train=1, n_val=1, n_test=3)
    return root / "data", write_tiny_clip(root / "tiny-vit.pt")


def build(setup, output_dir, trainer="ZeroshotCLIP"):
    """The trainer train.py builds for these arguments, in this process."""
    args = train.build_parser().parse_args(train_py_args(
        trainer, CONFIG_FILE, *setup, output_dir, "--eval-only", overrides=TEST_BATCH))
    return build_trainer(train.setup_cfg(args))


def images_and_labels(trainer):
    batches = list(trainer.test_loader)
    return torch.cat([b["img"] for b in batches]), torch.cat([b["label"] for b in batches])


def test_eval_only_run_logs_the_results_of_clip_with_the_eurosat_template(setup, tmp_path):
    run_train_py("ZeroshotCLIP", CONFIG_FILE, *setup, tmp_path / "run", "--eval-only",
                 overrides=TEST_BATCH)
    with open(tmp_path / "run" / "log.txt") as f:
        log = f.read()
    for line in ("=> result", f"* total: {3 * N_CLASSES}", "* correct:", "* accuracy:", "* error:",
                 "* macro_f1:"):
        assert line in log

    trainer = build(setup, tmp_path / "in_process")
    images, labels = images_and_labels(trainer)
    expected = zero_shot_logits(clip.load(setup[1])[0], images, EUROSAT_PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(trainer.model_inference(images), expected)
    accuracy = 100.0 * (expected.argmax(dim=1) == labels).float().mean().item()
    assert f"* accuracy: {accuracy:.1f}%" in log
    assert re.search(r"Prompts: \['a centered satellite photo of Annual Crop Land\.'", log)


def test_zeroshot_clip2_averages_its_templates(setup, tmp_path):
    trainer = build(setup, tmp_path, trainer="ZeroshotCLIP2")
    model = clip.load(setup[1])[0]
    templates = [*IMAGENET_TEMPLATES_SELECT, "a centered satellite photo of {}."]
    assert len(templates) == 8 and "itap of a {}." in templates
    with torch.no_grad():
        per_template = [F.normalize(model.encode_text(clip.tokenize(
            [template.format(name) for name in EUROSAT_NAMES])), dim=-1) for template in templates]
    expected = F.normalize(torch.stack(per_template).mean(dim=0), dim=-1)
    torch.testing.assert_close(trainer.model.text_features, expected)


def test_zero_shot_has_nothing_to_train(setup, tmp_path):
    trainer = build(setup, tmp_path)
    assert trainer.get_model_names() == []
    with pytest.raises(UserError, match="--eval-only"):
        trainer.train()


def test_templates_per_dataset_user_choice_and_fallback():
    assert dataset_template("EuroSAT") == "a centered satellite photo of {}."
    assert dataset_template("DescribableTextures") == "{} texture."
    assert dataset_template("UserDataset") == "a photo of a {}."
    assert dataset_template("SomeoneElsesDataset") == GENERIC_TEMPLATE
    assert dataset_template("EuroSAT", "a satellite image of {}.") == "a satellite image of {}."
    with pytest.raises(ValueError, match="exactly once"):
        dataset_template("EuroSAT", "a satellite image.")
