"""IVLP, language-only prompting and VPT on the shared core: prompt depths per tower (instrumented
blocks), the fixed text side of VPT, and frozen BatchNorm on a ResNet backbone."""
import pytest
import torch

from dassl.config import ConfigError
from dassl.engine import build_trainer
from tests.helpers.clip_files import make_resnet_state_dict, tiny_clip_model, write_clip_file
from tests.helpers.trainers import CLASSNAMES, images, run_recorded, tiny_clip, toy_trainer_cfg, trainer_cfg
from trainers.ivlp import VLPromptLearner
from trainers.prompting import PromptedCLIP, tokenize
from trainers.vpt import VisionPromptLearner


def ivlp(clip_model=None, **opts):
    clip_model = clip_model or tiny_clip()
    learner = VLPromptLearner(trainer_cfg("IVLP", **opts), CLASSNAMES, clip_model)
    return PromptedCLIP(clip_model, learner)


def tiny_resnet_clip():
    return tiny_clip_model("resnet", embed_dim=24, transformer_width=32, transformer_layers=2)


@pytest.mark.parametrize("text_depth,vision_depth", [(2, 3), (3, 1), (1, 2)])
def test_ivlp_prompts_each_tower_to_its_own_depth(text_depth, vision_depth):
    model = ivlp(**{"TRAINER.IVLP.PROMPT_DEPTH_TEXT": text_depth,
                    "TRAINER.IVLP.PROMPT_DEPTH_VISION": vision_depth,
                    "TRAINER.IVLP.N_CTX_TEXT": 2, "TRAINER.IVLP.N_CTX_VISION": 3})
    learner = model.prompt_learner
    _, text_in, text_out, image_in, image_out = run_recorded(model)
    assert len(learner.text.deep) == text_depth - 1 and len(learner.vision.deep) == vision_depth - 1
    for i in range(1, 3):
        text_slots, image_slots = text_in[i][:, 1:3], image_in[i][:, -3:]
        if i < text_depth:
            torch.testing.assert_close(text_slots, learner.text.deep[i - 1].detach().expand(5, -1, -1))
        else:
            torch.testing.assert_close(text_in[i], text_out[i - 1])
        if i < vision_depth:
            torch.testing.assert_close(image_slots, learner.vision.deep[i - 1].detach().expand(3, -1, -1))
        else:
            torch.testing.assert_close(image_in[i], image_out[i - 1])


def test_language_only_leaves_the_image_tower_alone():
    clip_model = tiny_clip()
    model = ivlp(clip_model, **{"TRAINER.IVLP.PROMPT_DEPTH_VISION": 0, "TRAINER.IVLP.N_CTX_VISION": 0,
                                "TRAINER.IVLP.N_CTX_TEXT": 4, "TRAINER.IVLP.PROMPT_DEPTH_TEXT": 3})
    assert model.prompt_learner.vision is None
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model.image_encoder(x, model.prompt_learner.image_prompts()),
                                   clip_model.encode_image(x))


def test_vpt_text_side_is_clip_on_hand_crafted_prompts_and_cached_in_training():
    clip_model = tiny_clip()
    cfg = trainer_cfg("VPT", **{"TRAINER.VPT.PROMPT_DEPTH_VISION": 3, "TRAINER.VPT.N_CTX_VISION": 4})
    model = PromptedCLIP(clip_model, VisionPromptLearner(cfg, CLASSNAMES, clip_model))
    model.train()
    text = model.text_features()
    assert model.text_features() is text and not text.requires_grad
    tokens = tokenize([f"a photo of a {c.replace('_', ' ')}." for c in CLASSNAMES], clip_model)
    with torch.no_grad():
        expected = clip_model.encode_text(tokens)
    torch.testing.assert_close(text, expected / expected.norm(dim=-1, keepdim=True))
    model(images()).sum().backward()
    assert all(p.grad is not None for p in model.prompt_learner.parameters())


def test_resnet_batchnorm_stays_in_eval_mode_while_prompts_train():
    clip_model = tiny_resnet_clip()
    model = ivlp(clip_model, **{"TRAINER.IVLP.PROMPT_DEPTH_VISION": 0, "TRAINER.IVLP.N_CTX_VISION": 0,
                                "TRAINER.IVLP.PROMPT_DEPTH_TEXT": 2})
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    model.train()
    assert norms and not any(m.training for m in norms)
    size = clip_model.visual.input_resolution
    model(torch.randn(2, 3, size, size)).sum().backward()
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before, strict=True))


def test_vision_prompts_on_a_resnet_are_refused():
    clip_model = tiny_resnet_clip()
    with pytest.raises(ValueError, match="image prompts need a ViT CLIP backbone"):
        ivlp(clip_model, **{"TRAINER.IVLP.PROMPT_DEPTH_TEXT": 2,
                            "TRAINER.IVLP.PROMPT_DEPTH_VISION": 1})


def test_depth_beyond_the_encoder_is_refused():
    with pytest.raises(ValueError, match="PROMPT_DEPTH_TEXT is 4: it must be between 1 and 3"):
        ivlp(**{"TRAINER.IVLP.PROMPT_DEPTH_TEXT": 4})


@pytest.mark.parametrize("trainer, config_file", [
    ("MaPLe", "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"),
    ("BMIP", "BMIP/BMIP_ctx2_dp9_lr2.yaml"),
    ("IVLP", "IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml"),
    ("VPT", "VPT/vit_b16_c2_ep5_batch4_4.yaml"),
])
def test_a_resnet_clip_for_a_vit_only_trainer_says_so_first(tmp_path, trainer, config_file):
    """Before any complaint about INPUT.SIZE (the ResNet's resolution differs from the config's)."""
    clip_file = write_clip_file(tmp_path / "rn.pt", make_resnet_state_dict(
        embed_dim=24, image_resolution=64, transformer_width=32, transformer_layers=12))
    cfg = toy_trainer_cfg(trainer, config_file, clip_file, tmp_path, tmp_path / "out")
    with pytest.raises(ConfigError) as error:
        build_trainer(cfg)
    assert str(error.value) == ("image prompts need a ViT CLIP backbone (MODEL.BACKBONE.NAME, e.g. ViT-B/16), "
                                "not a ModifiedResNet one")
