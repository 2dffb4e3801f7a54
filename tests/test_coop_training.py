"""CoOp and CoCoOp trainers built from their shipped configs: a few training steps change only the
prompt learner (CLIP bit-identical); checkpoints hold the trained parameters under the CoOp
codebase's keys and load back; checkpoints written by that codebase (built here from its key list:
fp16 `ctx`, class-name buffers, pickled scheduler) load with load_model and predict like the model
they came from; one that does not fit the config names the keys and shapes."""
import os.path as osp

import pytest
import torch

from dassl.engine import build_trainer
from tests.helpers import engine as toy
from tests.helpers.coop import TEXT_WIDTH, write_coop_clip
from tests.helpers.trainers import (predictions, toy_trainer_cfg,
                                    train_and_check_only_the_learner_changed, upstream_scheduler,
                                    write_checkpoint)
from trainers.prompting import CheckpointMismatchError

N_CLASSES = len(toy.TOY_CLASSES)
# config file, overrides
CASES = {
    "CoOp": ("CoOp/vit_b16_ep50.yaml", ["TRAINER.COOP.N_CTX", 4]),
    "CoOp-csc-front": ("CoOp/rn50_ep50.yaml", ["TRAINER.COOP.N_CTX", 4, "TRAINER.COOP.CSC", True,
                                                "TRAINER.COOP.CLASS_TOKEN_POSITION", "front"]),
    "CoCoOp": ("CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml", []),
}
UPSTREAM_KEYS = {"CoOp": {"ctx"}, "CoOp-csc-front": {"ctx"},
                 "CoCoOp": {"ctx", "meta_net.linear1.weight", "meta_net.linear1.bias",
                            "meta_net.linear2.weight", "meta_net.linear2.bias"}}


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    return write_coop_clip(tmp_path_factory.mktemp("clip") / "tiny-vit.pt")


def make_cfg(case, clip_file, data_root, output_dir):
    config_file, overrides = CASES[case]
    return toy_trainer_cfg(case.split("-")[0], config_file, clip_file, data_root, output_dir,
                           *overrides, "DATALOADER.TRAIN_X.BATCH_SIZE", 4,
                           "DATALOADER.TEST.BATCH_SIZE", 6)


def upstream_state_dict(learner_values, n_ctx):
    """The CoOp codebase's prompt_learner state dict: the learner's keys as they are, `ctx` in
    fp16 (PREC fp16), and the SOS / class-name token buffers of the classes it was trained on."""
    state = {key: value.half() for key, value in learner_values.items()}
    state["token_prefix"] = torch.randn(N_CLASSES, 1, TEXT_WIDTH).half()
    state["token_suffix"] = torch.randn(N_CLASSES, 77 - 1 - n_ctx, TEXT_WIDTH).half()
    return state


@pytest.mark.parametrize("case", list(CASES))
def test_trainer_trains_only_its_prompts_and_saves_upstream_keys(case, clip_file, tmp_path):
    cfg = make_cfg(case, clip_file, tmp_path, tmp_path / "out")
    trainer = build_trainer(cfg)
    assert trainer.get_model_names() == ["prompt_learner"]
    learner_keys = train_and_check_only_the_learner_changed(trainer)
    assert {key[len("prompt_learner."):] for key in learner_keys} == UPSTREAM_KEYS[case]

    checkpoint = torch.load(osp.join(cfg.OUTPUT_DIR, "prompt_learner", "model.pth.tar-1"),
                            weights_only=True)
    assert set(checkpoint["state_dict"]) == UPSTREAM_KEYS[case]
    fresh = build_trainer(cfg)
    fresh.load_model(cfg.OUTPUT_DIR, epoch=1)
    torch.testing.assert_close(predictions(fresh), predictions(trainer))


@pytest.mark.parametrize("case", ["CoOp-csc-front", "CoCoOp"])
def test_upstream_checkpoint_predicts_like_its_model(case, clip_file, tmp_path):
    cfg = make_cfg(case, clip_file, tmp_path, tmp_path / "out")
    source = build_trainer(cfg)
    learner = source.model.prompt_learner
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in learner.parameters():  # far from the initialisation, exact in fp16
            param.copy_((torch.randn(param.shape, generator=generator) * 0.5).half().float())
    values = {key: value.detach() for key, value in learner.state_dict().items()}
    n_ctx = learner.ctx.shape[-2]
    write_checkpoint(tmp_path / "upstream", "prompt_learner", upstream_state_dict(values, n_ctx),
                     50, upstream_scheduler(list(learner.parameters()), lr=0.002, max_epoch=50))

    target = build_trainer(cfg)
    target.load_model(str(tmp_path / "upstream"), epoch=50)
    assert target.loaded_epoch == 50
    torch.testing.assert_close(predictions(target), predictions(source))


def test_checkpoint_with_another_n_ctx_names_the_keys_and_shapes(clip_file, tmp_path):
    cfg = make_cfg("CoOp", clip_file, tmp_path, tmp_path / "out")
    state = upstream_state_dict({"ctx": torch.randn(16, TEXT_WIDTH)}, n_ctx=16)
    write_checkpoint(tmp_path / "upstream", "prompt_learner", state, 50)
    with pytest.raises(CheckpointMismatchError,
                       match=f"checkpoint has prompt_learner.ctx 16×{TEXT_WIDTH}, "
                             f"model expects 4×{TEXT_WIDTH}"):
        build_trainer(cfg).load_model(str(tmp_path / "upstream"), epoch=50)


def test_cocoop_checkpoint_without_its_meta_net_names_the_missing_keys(clip_file, tmp_path):
    cfg = make_cfg("CoCoOp", clip_file, tmp_path, tmp_path / "out")
    write_checkpoint(tmp_path / "coop", "prompt_learner", {"ctx": torch.randn(4, TEXT_WIDTH)}, 10)
    with pytest.raises(CheckpointMismatchError, match="lacks prompt_learner.meta_net.linear1.bias"):
        build_trainer(cfg).load_model(str(tmp_path / "coop"), epoch=10)


@pytest.mark.parametrize("eval_only", [False, True])
def test_evaluation_only_announces_no_trainable_parameters(clip_file, tmp_path, capsys, eval_only):
    cfg = make_cfg("CoOp", clip_file, tmp_path, tmp_path / "out")
    cfg.defrost()
    cfg.RUN.EVAL_ONLY = eval_only
    build_trainer(cfg)
    out = capsys.readouterr().out
    assert ("Parameters to be updated" in out) is not eval_only
    assert ("Building transform_train" in out) is not eval_only
