"""BMIP trains: a few steps on a tiny separable dataset lower the loss; the shipped configs build;
`python train.py --trainer BMIP --config-file configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml` trains
with early stopping / best-val selection, saves the learner only, evaluates, and reloads with
--eval-only to the same results."""
import os
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.datasets import make_eurosat
from tests.helpers.trainers import (CLASSNAMES, ROOT, run_train_py, tiny_clip, trainer_cfg,
                                    write_tiny_clip)
from trainers.bmip import BMIPPromptLearner
from trainers.prompting import PromptedCLIP

CONFIG_DIR = osp.join(ROOT, "configs", "trainers", "BMIP")
MAIN_CONFIG = "BMIP_ctx2_dp9_lr2.yaml"
MODEL_NAME = "MultiModalPromptLearner"


def separable_images(per_class=2, seed=0):
    """Images whose mean colour encodes the class, with a little noise."""
    generator = torch.Generator().manual_seed(seed)
    n_classes = len(CLASSNAMES)
    colours = torch.linspace(-1.5, 1.5, n_classes)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    images = colours[labels].view(-1, 1, 1, 1) + 0.1 * torch.randn(len(labels), 3, 32, 32,
                                                                   generator=generator)
    return images, labels


def test_a_short_training_lowers_the_loss():
    torch.manual_seed(0)
    cfg = trainer_cfg("BMIP", **{"TRAINER.BMIP.PROMPT_DEPTH": 3})
    clip_model = tiny_clip()
    model = PromptedCLIP(clip_model, BMIPPromptLearner(cfg, CLASSNAMES, clip_model))
    optimizer = torch.optim.Adam(model.prompt_learner.parameters(), lr=0.01)
    images, labels = separable_images()
    losses = []
    for _ in range(25):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def config_files():
    return sorted(name for name in os.listdir(CONFIG_DIR) if name.endswith(".yaml"))


def test_the_main_config_holds_the_authors_settings():
    cfg = load_cfg(MAIN_CONFIG)
    assert (
        cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.LR_SCHEDULER,
        cfg.OPTIM.WARMUP_EPOCH, cfg.OPTIM.WARMUP_TYPE, cfg.OPTIM.WARMUP_CONS_LR,
    ) == ("adam", 0.002, 10, "cosine", 1, "constant", 1e-5)
    assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 4
    assert cfg.TRAIN.EARLY_STOPPING is True and cfg.TRAIN.PATIENT_COUNT == 4
    assert cfg.TEST.FINAL_MODEL == "best_val"
    assert cfg.INPUT.INTERPOLATION == "bicubic" and tuple(cfg.INPUT.SIZE) == (224, 224)
    assert list(cfg.INPUT.TRANSFORMS) == ["random_resized_crop", "random_flip", "normalize"]
    assert cfg.MODEL.BACKBONE.NAME == "ViT-B/16"
    assert dict(cfg.TRAINER.BMIP) == {
        "N_CTX": 2, "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_DEPTH": 9,
        "SHARE_PROJECTIONS": True, "AGGREGATION": "weighted", "ATTN_POOL": "per_sample",
        "DEEP_VISION_INIT": "independent", "WEIGHT_ACT": "sigmoid", "SHARE_TO_VISION": True,
        "SHARE_TO_TEXT": True}


# Each config and the options that set it apart from the main config.
VARIANTS = {
    "BMIP_ctx2_dp9_lr2_add.yaml": {"TRAINER.BMIP.AGGREGATION": "add"},
    "BMIP_ctx2_dp9_lr2_attention.yaml": {"TRAINER.BMIP.AGGREGATION": "attention"},
    "BMIP_ctx2_dp9_lr2_joint.yaml": {"TRAINER.BMIP.AGGREGATION": "joint"},
    # and the authors' model selection (their early stopping never stops: see the config)
    "BMIP_ctx2_dp9_lr2_authors.yaml": {"TRAINER.BMIP.ATTN_POOL": "authors",
                                       "TRAINER.BMIP.DEEP_VISION_INIT": "same",
                                       "TRAIN.EARLY_STOPPING": False,
                                       "TRAIN.EARLY_STOPPING_MIN_EPOCH": 6,
                                       "TRAIN.BEST_VAL_MIN_DELTA": 0.01},
    "BMIP_ctx2_dp9_lr2_per_layer_proj.yaml": {"TRAINER.BMIP.SHARE_PROJECTIONS": False},
}


def load_cfg(name):
    cfg = trainer_cfg("BMIP")
    cfg.merge_from_file(osp.join(CONFIG_DIR, name))
    return cfg


def flat(cfg, prefix=""):
    items = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            items.update(flat(value, f"{prefix}{key}."))
        else:
            items[prefix + key] = value
    return items


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_ablation_config_changes_only_its_options_and_builds(name):
    assert set(config_files()) == {MAIN_CONFIG, "BMIP_ctx2_dp9_lr2_cross_datasets.yaml",
                                   *VARIANTS}
    main, variant = flat(load_cfg(MAIN_CONFIG)), flat(load_cfg(name))
    assert {k: variant[k] for k in main if main[k] != variant[k]} == VARIANTS[name]
    cfg = load_cfg(name)
    cfg.merge_from_list(["TRAINER.BMIP.PROMPT_DEPTH", 3, "INPUT.SIZE", (32, 32)])
    clip_model = tiny_clip()
    model = PromptedCLIP(clip_model, BMIPPromptLearner(cfg, CLASSNAMES, clip_model))
    assert model(separable_images()[0][:2]).shape == (2, len(CLASSNAMES))


def test_the_cross_dataset_config_selects_no_model_on_validation():
    main = flat(load_cfg(MAIN_CONFIG))
    cross = flat(load_cfg("BMIP_ctx2_dp9_lr2_cross_datasets.yaml"))
    differences = {k: cross[k] for k in main if main[k] != cross[k]}
    assert differences == {"TRAIN.EARLY_STOPPING": False, "TEST.FINAL_MODEL": "last_step"}


def run_train(data_root, clip_file, output_dir, *args):
    return run_train_py("BMIP", f"BMIP/{MAIN_CONFIG}", data_root, clip_file, output_dir, *args,
                        overrides=["OPTIM.MAX_EPOCH", "2", "TRAINER.BMIP.PROMPT_DEPTH", "3",
                                   "DATASET.NUM_SHOTS", "2"])


def test_train_py_trains_saves_evaluates_and_reloads(tmp_path):
    make_eurosat(tmp_path / "data", n_classes=4, n_train=4, n_val=2, n_test=3)
    clip_file = write_tiny_clip(tmp_path / "tiny-vit.pt")
    trained, log = run_train(tmp_path / "data", clip_file, tmp_path / "train")
    assert trained["trainer"] == "BMIP" and trained["config"] == "BMIP_ctx2_dp9_lr2"
    assert trained["total"] == 12 and trained["final_model"] == "best_val"
    assert "Evaluate on the *val* set" in log

    best = torch.load(tmp_path / "train" / MODEL_NAME / "model-best.pth.tar", weights_only=True)
    assert best["state_dict"] and all(key.startswith("prompt_learner.")
                                      for key in best["state_dict"])
    assert "prompt_learner.vision_weight_heads.1.weight" in best["state_dict"]

    reloaded, _ = run_train(tmp_path / "data", clip_file, tmp_path / "eval", "--eval-only",
                            "--model-dir", str(tmp_path / "train"))
    for key in ("total", "correct", "per_class_accuracy", "load_epoch"):
        assert reloaded[key] == trained[key]
    assert reloaded["load_epoch"] == best["epoch"]
