"""The authors' BMIP checkpoints (LAMDASZ-ML/BMIP: their whole CustomCLIP under their own names)
load strictly into our BMIP with ATTN_POOL authors and give the same logits; DEEP_VISION_INIT
same starts every layer's deep vision prompts from one draw, as their SHARE_PARAMETER_VISUAL."""
import types

import pytest
import torch

from tests.helpers.trainers import (CLASSNAMES, fp16_exact_values, images, tiny_clip, trainer_cfg,
                                    upstream_frozen_entries)
from trainers.bmip import BMIP, BMIPPromptLearner
from trainers.prompting import (CheckpointMismatchError, PromptedCLIP, learner_state_dict,
                                load_learner_state)

DEPTH = 3  # J: deep prompts for layers 1..J-1 of the tiny CLIP's 3 layers


def bmip_cfg(**opts):
    return trainer_cfg("BMIP", **{"TRAINER.BMIP.PROMPT_DEPTH": DEPTH,
                                  "TRAINER.BMIP.ATTN_POOL": "authors", **opts})


def bmip_model(cfg, seed=0):
    torch.manual_seed(seed)
    clip_model = tiny_clip()
    return clip_model, PromptedCLIP(clip_model, BMIPPromptLearner(cfg, CLASSNAMES, clip_model))


def authors_checkpoint(clip_model, ours, share=True):
    """An official-layout state dict holding the learner values `ours` (our key names), built
    from the authors' key names, with the entries their model has but never uses. `share`: their
    (SHARE_PARAMETER_TEXT, SHARE_PARAMETER_VISUAL), or one bool for both."""
    share_text, share_visual = (share, share) if isinstance(share, bool) else share
    d_text, d_vision = clip_model.ln_final.weight.shape[0], clip_model.visual.width
    generator = torch.Generator().manual_seed(7)

    def junk(*shape):
        return torch.randn(*shape, generator=generator).half()

    entries = dict(upstream_frozen_entries(clip_model))
    p = "prompt_learner."
    entries[p + "ctx_t"] = ours[p + "ctx"]
    for part in ("weight", "bias"):
        entries[f"{p}proj_t.{part}"] = ours[f"{p}proj.{part}"]
        if share_text:
            entries[f"{p}single_layer_t.{part}"] = ours[f"{p}to_vision.0.{part}"]
        if share_visual:
            entries[f"{p}single_layer_v.{part}"] = ours[f"{p}to_text.0.{part}"]
    for j in range(DEPTH - 1):
        entries[f"{p}compound_prompts_text.{j}"] = ours[f"{p}deep_text.{j}"]
        entries[f"{p}compound_prompts_visual.{j}"] = ours[f"{p}deep_vision.{j}"]
        for part in ("weight", "bias"):
            if not share_text:
                entries[f"{p}compound_prompt_projections_t.{j}.{part}"] = \
                    ours[f"{p}to_vision.{j}.{part}"]
            if not share_visual:
                entries[f"{p}compound_prompt_projections_v.{j}.{part}"] = \
                    ours[f"{p}to_text.{j}.{part}"]
        if not share_visual:
            entries[f"{p}compound_exchange_v.{j}.weight"] = junk(d_vision, 2 * d_vision)
        if not share_text:
            entries[f"{p}compound_exchange_t.{j}.weight"] = junk(d_text, 2 * d_text)
    # Unused by their forward pass.
    entries[p + "ctx_v"] = junk(77, d_vision)
    entries[p + "proj_v.weight"], entries[p + "proj_v.bias"] = junk(d_text, d_vision), junk(d_text)
    if share_visual:
        entries[p + "exchange_layer_v.weight"] = junk(d_vision, 2 * d_vision)
    if share_text:
        entries[p + "exchange_layer_t.weight"] = junk(d_text, 2 * d_text)
    entries[p + "token_prefix"], entries[p + "token_suffix"] = junk(5, 1, d_text), junk(5, 70, d_text)
    # Both heads in every block of both towers; image blocks use learnable_linear1, text blocks
    # learnable_linear2, for blocks 1..J-1.
    for tower, used, ours_name in (("image_encoder", 1, "vision_weight_heads"),
                                   ("text_encoder", 2, "text_weight_heads")):
        for i in range(3):
            for k in (1, 2):
                for part in ("weight", "bias"):
                    key = f"{tower}.transformer.resblocks.{i}.learnable_linear{k}.{part}"
                    if k == used and 1 <= i <= DEPTH - 1:
                        entries[key] = ours[f"{p}{ours_name}.{i - 1}.{part}"]
                    else:
                        entries[key] = junk(1, 1) if part == "weight" else junk(1)
    return entries


def rename(cfg):
    """The BMIP trainer's own renaming (the one --eval-only / --model-dir uses)."""
    trainer = types.SimpleNamespace(cfg=cfg)
    return lambda key: BMIP.rename_checkpoint_key(trainer, key)


# Their (SHARE_PARAMETER_TEXT, SHARE_PARAMETER_VISUAL) and our keys for the same model.
SHARING = [
    ((True, True), {}),
    ((False, False), {"TRAINER.BMIP.SHARE_PROJECTIONS": False}),
    ((True, False), {"TRAINER.BMIP.SHARE_TO_TEXT": False}),
    ((False, True), {"TRAINER.BMIP.SHARE_TO_VISION": False}),
]


@pytest.mark.parametrize("share,opts", SHARING)
def test_an_official_checkpoint_gives_the_same_logits_with_mapped_weights(share, opts):
    cfg = bmip_cfg(**opts)
    clip_model, source = bmip_model(cfg, seed=0)
    learner = source.prompt_learner
    assert (len(learner.to_vision), len(learner.to_text)) == \
        tuple(1 if shared else DEPTH - 1 for shared in share)
    values = fp16_exact_values(learner_state_dict(source), seed=3)
    load_learner_state(source, values)
    checkpoint = authors_checkpoint(clip_model, values, share=share)
    _, target = bmip_model(cfg, seed=1)  # same CLIP, other prompts
    batch = images()
    with torch.no_grad():
        assert not torch.allclose(target(batch), source(batch))
        load_learner_state(target, checkpoint, rename(cfg), "BMIP")
        assert torch.allclose(target(batch), source(batch), atol=1e-6)
    for key, value in learner_state_dict(target).items():
        assert torch.equal(value, values[key]), key


def test_the_mapping_is_strict():
    cfg = bmip_cfg()
    clip_model, model = bmip_model(cfg)
    checkpoint = authors_checkpoint(clip_model, learner_state_dict(model))
    missing = dict(checkpoint)
    del missing["prompt_learner.compound_prompts_visual.1"]
    with pytest.raises(CheckpointMismatchError, match="deep_vision.1"):
        load_learner_state(model, missing, rename(cfg), "BMIP")
    extra = dict(checkpoint, **{"prompt_learner.something_new": torch.zeros(2)})
    with pytest.raises(CheckpointMismatchError, match="something_new"):
        load_learner_state(model, extra, rename(cfg), "BMIP")
    # A depth-9 checkpoint has heads and prompts our depth-3 model lacks.
    deeper = dict(checkpoint, **{"prompt_learner.compound_prompts_text.5": torch.zeros(2, 32)})
    with pytest.raises(CheckpointMismatchError, match="deep_text.5"):
        load_learner_state(model, deeper, rename(cfg), "BMIP")


def test_same_deep_vision_init_starts_every_layer_from_one_draw_and_trains_them_apart():
    cfg = trainer_cfg("BMIP", **{"TRAINER.BMIP.PROMPT_DEPTH": DEPTH,
                                 "TRAINER.BMIP.DEEP_VISION_INIT": "same"})
    _, model = bmip_model(cfg)
    deep = model.prompt_learner.deep_vision
    assert torch.equal(deep[0], deep[1]) and deep[0] is not deep[1]
    optimizer = torch.optim.SGD(model.prompt_learner.parameters(), lr=1.0)
    model(images()).logsumexp(dim=1).sum().backward()
    optimizer.step()
    assert not torch.equal(deep[0], deep[1])
    _, independent = bmip_model(trainer_cfg("BMIP", **{"TRAINER.BMIP.PROMPT_DEPTH": DEPTH}))
    assert not torch.equal(independent.prompt_learner.deep_vision[0],
                           independent.prompt_learner.deep_vision[1])


def test_an_unknown_deep_vision_init_is_a_config_error():
    from dassl.config import ConfigError
    from trainers.bmip import check_options
    with pytest.raises(ConfigError, match="DEEP_VISION_INIT"):
        check_options(trainer_cfg("BMIP", **{"TRAINER.BMIP.DEEP_VISION_INIT": "tied"}).TRAINER.BMIP)


def test_uniform_deep_vision_init_draws_each_layer_as_the_authors_without_shared_visual_prompts():
    """Their SHARE_PARAMETER_VISUAL False: nn.init.uniform_(-val, val) per layer with
    val = sqrt(6 / (3 * reduce(mul, [16], 1) + width)) (0.0857 at width 768)."""
    import math

    from trainers.bmip import uniform_init_bound

    assert uniform_init_bound(768) == pytest.approx(0.0857, abs=1e-4)
    cfg = trainer_cfg("BMIP", **{"TRAINER.BMIP.PROMPT_DEPTH": DEPTH,
                                 "TRAINER.BMIP.DEEP_VISION_INIT": "uniform"})
    clip_model, model = bmip_model(cfg)
    bound = math.sqrt(6.0 / (3 * 16 + clip_model.visual.width))
    deep = model.prompt_learner.deep_vision
    for prompt in deep:
        assert prompt.abs().max() <= bound and prompt.abs().max() > bound / 2
        # N(0, 0.02) would put most values within 0.02; a uniform draw spreads over the bound
        assert (prompt.abs() > 0.5 * bound).float().mean() > 0.3
    assert not torch.equal(deep[0], deep[1])
