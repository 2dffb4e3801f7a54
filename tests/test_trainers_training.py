"""Each prompting trainer, built from its shipped config file, trains for a few steps on tiny data
with a tiny CLIP: only the prompt learner changes, CLIP stays bit-identical, the checkpoint holds
the learner only and loads back to the same predictions."""
import os.path as osp

import pytest
import torch

from dassl.engine import build_trainer
from tests.helpers.trainers import (predictions, toy_trainer_cfg,
                                    train_and_check_only_the_learner_changed, write_tiny_clip)
from trainers.prompting import CheckpointMismatchError

# trainer, config file, overrides fitting the 3-layer tiny CLIP
CASES = {
    "MaPLe": ("MaPLe", "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", ["TRAINER.MAPLE.PROMPT_DEPTH", 2]),
    "MaPLe-xd": ("MaPLe", "MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml", []),
    "IVLP": ("IVLP", "IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml",
             ["TRAINER.IVLP.PROMPT_DEPTH_VISION", 3, "TRAINER.IVLP.PROMPT_DEPTH_TEXT", 2]),
    "language-only": ("IVLP", "IVLP/vit_b16_c2_ep5_batch4_4ctx_language_only.yaml",
                      ["TRAINER.IVLP.PROMPT_DEPTH_TEXT", 3]),
    "VPT": ("VPT", "VPT/vit_b16_c2_ep5_batch4_4.yaml", ["TRAINER.VPT.PROMPT_DEPTH_VISION", 2]),
}


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-vit.pt")


def make_cfg(case, clip_file, data_root, output_dir):
    trainer, config_file, overrides = CASES[case]
    return toy_trainer_cfg(trainer, config_file, clip_file, data_root, output_dir, *overrides,
                           "DATALOADER.TEST.BATCH_SIZE", 5)


@pytest.mark.parametrize("case", list(CASES))
def test_trainer_trains_only_its_prompts_and_reloads(case, clip_file, tmp_path):
    cfg = make_cfg(case, clip_file, tmp_path, tmp_path / "out")
    trainer = build_trainer(cfg)
    name = trainer.get_model_names()[0]
    learner_keys = train_and_check_only_the_learner_changed(trainer)
    assert learner_keys

    checkpoint = torch.load(osp.join(cfg.OUTPUT_DIR, name, "model.pth.tar-1"), weights_only=True)
    assert set(checkpoint["state_dict"]) == learner_keys

    fresh = build_trainer(cfg)
    fresh.load_model(cfg.OUTPUT_DIR, epoch=1)
    torch.testing.assert_close(predictions(fresh), predictions(trainer))


def test_loading_a_checkpoint_of_another_config_names_the_difference(clip_file, tmp_path):
    cfg = make_cfg("MaPLe", clip_file, tmp_path, tmp_path / "out")
    trainer = build_trainer(cfg)
    trainer.save_model(0, cfg.OUTPUT_DIR)
    cfg.merge_from_list(["TRAINER.MAPLE.N_CTX", 3])
    with pytest.raises(CheckpointMismatchError,
                       match="checkpoint has prompt_learner.ctx 2×32, model expects 3×32"):
        build_trainer(cfg).load_model(cfg.OUTPUT_DIR, epoch=1)


def test_model_is_never_wrapped_in_data_parallel(clip_file, tmp_path):
    trainer = build_trainer(make_cfg("MaPLe", clip_file, tmp_path, tmp_path / "out"))
    assert not isinstance(trainer.model, torch.nn.DataParallel)
    assert trainer.get_model_names() == ["MultiModalPromptLearner"]


def test_training_resumes_from_our_checkpoint(clip_file, tmp_path):
    cfg = make_cfg("MaPLe", clip_file, tmp_path, tmp_path / "out")
    trainer = build_trainer(cfg)
    trainer.train()
    cfg.merge_from_list(["OPTIM.MAX_EPOCH", 2])
    resumed = build_trainer(cfg)
    assert resumed.resume_model_if_exist(cfg.OUTPUT_DIR) == 1
    for key, value in trainer.model.prompt_learner.state_dict().items():
        assert torch.equal(resumed.model.prompt_learner.state_dict()[key], value)
