"""Checkpoint rules: our files hold the learner only; upstream MaPLe / IVLP / VPT state dicts
(built here from their published key lists, SPEC.md §3) load and predict like the model they
came from; a checkpoint that does not fit raises an error naming keys and shapes."""
import pytest
import torch

from tests.helpers.trainers import (CLASSNAMES, images, tiny_clip, trainer_cfg,
                                    upstream_frozen_entries)
from trainers.ivlp import VLPromptLearner, rename_upstream_key
from trainers.maple import MultiModalPromptLearner
from trainers.prompting import (CheckpointMismatchError, PromptedCLIP, learner_state_dict,
                                load_learner_state)
from trainers.vpt import VisionPromptLearner

N_CTX, DEPTH = 2, 3


def build(learner_class, trainer, seed, **opts):
    clip_model = tiny_clip()
    torch.manual_seed(seed)
    learner = learner_class(trainer_cfg(trainer, **opts), CLASSNAMES, clip_model)
    return PromptedCLIP(clip_model, learner)


def maple(seed=0, n_ctx=N_CTX, depth=DEPTH):
    return build(MultiModalPromptLearner, "MaPLe", seed,
                 **{"TRAINER.MAPLE.N_CTX": n_ctx, "TRAINER.MAPLE.PROMPT_DEPTH": depth})


def ivlp(seed=0, vision_depth=DEPTH, text_depth=DEPTH):
    return build(VLPromptLearner, "IVLP", seed, **{
        "TRAINER.IVLP.PROMPT_DEPTH_VISION": vision_depth, "TRAINER.IVLP.PROMPT_DEPTH_TEXT": text_depth})


def with_fp16_values(model):
    """Round the learner's values through fp16, as upstream fp16 checkpoints store them."""
    with torch.no_grad():
        for param in model.prompt_learner.parameters():
            param.copy_(torch.randn_like(param).mul_(0.3).half().float())
    return model


def maple_upstream_state_dict(model, full=True):
    """MaPLe's `MultiModalPromptLearner` checkpoint: prompt_learner.ctx and proj in fp16, the
    deep prompts and their projections in fp32, the class-name buffers, and (full=True) the frozen
    CLIP of the whole CustomCLIP."""
    learner = model.prompt_learner
    d = learner.ctx.shape[1]
    state = {"prompt_learner.ctx": learner.ctx.detach().half(),
             "prompt_learner.proj.weight": learner.proj.weight.detach().half(),
             "prompt_learner.proj.bias": learner.proj.bias.detach().half(),
             "prompt_learner.token_prefix": torch.zeros(len(CLASSNAMES), 1, d).half(),
             "prompt_learner.token_suffix": torch.zeros(len(CLASSNAMES), 77 - 1 - N_CTX, d).half()}
    for j, prompt in enumerate(learner.compound_prompts_text):
        state[f"prompt_learner.compound_prompts_text.{j}"] = prompt.detach().clone()
    for j, projection in enumerate(learner.compound_prompt_projections):
        for name, tensor in projection.named_parameters():
            state[f"prompt_learner.compound_prompt_projections.{j}.{name}"] = tensor.detach().clone()
    if full:
        state.update(upstream_frozen_entries(tiny_clip()))
    return state


def assert_same_predictions(source, target):
    x = images(4)
    source.eval()
    target.eval()
    with torch.no_grad():
        expected, got = source(x), target(x)
    torch.testing.assert_close(got, expected)
    assert torch.equal(got.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("full", [True, False], ids=["full-model", "prompt-only"])
def test_maple_upstream_checkpoint_predicts_like_its_model(full):
    source = with_fp16_values(maple(seed=1))
    target = maple(seed=2)
    load_learner_state(target, maple_upstream_state_dict(source, full=full))
    assert_same_predictions(source, target)


def test_our_checkpoint_holds_the_learner_only_and_loads_back():
    source = with_fp16_values(maple(seed=1))
    state = learner_state_dict(source)
    assert set(state) == {f"prompt_learner.{k}" for k in source.prompt_learner.state_dict()}
    assert not any(k.endswith(("token_prefix", "token_suffix", "tokenized_prompts")) for k in state)
    target = maple(seed=2)
    load_learner_state(target, state)
    assert_same_predictions(source, target)


def test_mismatched_n_ctx_names_the_keys_and_shapes():
    state = maple_upstream_state_dict(maple(n_ctx=4))
    with pytest.raises(CheckpointMismatchError,
                       match="checkpoint has prompt_learner.ctx 4×32, model expects 2×32"):
        load_learner_state(maple(n_ctx=2), state)


def test_mismatched_depth_names_the_keys():
    deeper = maple_upstream_state_dict(maple(depth=3))
    with pytest.raises(CheckpointMismatchError,
                       match="entries the model does not: prompt_learner.compound_prompt_projections.1"):
        load_learner_state(maple(depth=2), deeper)
    shallower = learner_state_dict(maple(depth=2))
    with pytest.raises(CheckpointMismatchError, match="lacks .*compound_prompts_text.1"):
        load_learner_state(maple(depth=3), shallower)


def test_checkpoint_of_another_backbone_is_refused():
    state = maple_upstream_state_dict(maple())
    state["image_encoder.conv1.weight"] = torch.zeros(48, 3, 32, 32).half()
    with pytest.raises(CheckpointMismatchError,
                       match="frozen CLIP has image_encoder.conv1.weight 48×3×32×32, "
                             "the loaded CLIP has 48×3×16×16"):
        load_learner_state(maple(), state)


def test_checkpoint_of_a_deeper_backbone_is_refused():
    state = maple_upstream_state_dict(maple())
    state["image_encoder.transformer.resblocks.3.ln_1.weight"] = torch.ones(48)
    with pytest.raises(CheckpointMismatchError,
                       match="resblocks.3.ln_1.weight 48, the loaded CLIP has none"):
        load_learner_state(maple(), state)


def ivlp_upstream_state_dict(model):
    """IVLP's `VLPromptLearner` checkpoint: the deep prompts live inside upstream's forked blocks."""
    learner = model.prompt_learner
    state = {"prompt_learner.ctx": learner.text.ctx.detach().half(),
             "image_encoder.VPT": learner.vision.ctx.detach().clone()}
    for j, prompt in enumerate(learner.text.deep):
        state[f"text_encoder.transformer.resblocks.{j + 1}.VPT_shallow"] = prompt.detach().clone()
    for j, prompt in enumerate(learner.vision.deep):
        state[f"image_encoder.transformer.resblocks.{j + 1}.VPT_shallow"] = prompt.detach().clone()
    state.update(upstream_frozen_entries(tiny_clip()))
    return state


def test_ivlp_upstream_keys_map_to_ours():
    assert rename_upstream_key("image_encoder.transformer.resblocks.4.VPT_shallow") == \
        "prompt_learner.vision.deep.3"
    assert rename_upstream_key("prompt_learner.text.ctx") == "prompt_learner.text.ctx"
    source = with_fp16_values(ivlp(seed=1))
    target = ivlp(seed=2)
    load_learner_state(target, ivlp_upstream_state_dict(source), rename_upstream_key)
    assert_same_predictions(source, target)


def test_vpt_upstream_checkpoint_loads():
    opts = {"TRAINER.VPT.PROMPT_DEPTH_VISION": 2, "TRAINER.VPT.N_CTX_VISION": 3}
    source = with_fp16_values(build(VisionPromptLearner, "VPT", 1, **opts))
    target = build(VisionPromptLearner, "VPT", 2, **opts)
    vision = source.prompt_learner.vision
    state = {"image_encoder.VPT": vision.ctx.detach().clone(),
             "image_encoder.transformer.resblocks.1.VPT_shallow": vision.deep[0].detach().clone()}
    state.update(upstream_frozen_entries(tiny_clip()))
    load_learner_state(target, state, rename_upstream_key)
    assert_same_predictions(source, target)
