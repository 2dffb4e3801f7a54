"""CoOp and CoCoOp models against independent references: the embedded class prompts (read at
the first text block) hold the context and the class name where CLASS_TOKEN_POSITION says;
CSC gives each class its own context; word-initialised contexts reproduce CLIP's zero-shot
logits with that template; CoCoOp's per-image context is ctx + meta_net(image feature)."""
import pytest
import torch
import torch.nn.functional as F

import clip
from tests.helpers.coop import coop_clip, zero_shot_logits
from tests.helpers.trainers import CLASSNAMES, images, record_block_inputs, trainer_cfg
from trainers.cocoop import CoCoOpCLIP, CoCoOpPromptLearner
from trainers.coop import CoOpPromptLearner
from trainers.prompting import PromptedCLIP

N_CTX = 3  # odd: "middle" splits it 1 + 2
PROMPTS = [f"a photo of a {name.replace('_', ' ')}." for name in CLASSNAMES]


def coop(**opts):
    clip_model = coop_clip()
    cfg = trainer_cfg("CoOp", **{"TRAINER.COOP.N_CTX": N_CTX, **opts})
    return PromptedCLIP(clip_model, CoOpPromptLearner(cfg, CLASSNAMES, clip_model))


def cocoop(**opts):
    clip_model = coop_clip()
    cfg = trainer_cfg("CoCoOp", **{"TRAINER.COCOOP.CTX_INIT": "a photo of a", **opts})
    return CoCoOpCLIP(clip_model, CoCoOpPromptLearner(cfg, CLASSNAMES, clip_model))


def assert_is_clip_with_the_template(model, x):
    """`model` in eval mode gives CLIP's zero-shot logits on `x` with PROMPTS."""
    model.eval()
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, zero_shot_logits(coop_clip(), x, PROMPTS))


def set_distinct_context(model):
    """Context vectors far from any token embedding, different per token (and per class)."""
    with torch.no_grad():
        ctx = model.prompt_learner.ctx
        ctx.copy_(torch.arange(ctx.numel(), dtype=torch.float32).view_as(ctx) + 100.0)


def embedded_prompts(model):
    """The class prompts entering the first text block at full length (not cut after the last
    EOT, so the padding is checked too), positional embedding removed."""
    model.text_encoder.cut_at_eot = False
    inputs, _, handles = record_block_inputs(model.text_encoder.transformer.resblocks[:1])
    with torch.no_grad():
        model.encode_text()
    for handle in handles:
        handle.remove()
    return inputs[0] - model.text_encoder.positional_embedding


def expected_prompt(clip_model, classname, ctx, position):
    """The embedded prompt of `classname` built from token ids: SOS, then context and name in
    CoOp's arrangement, then ".", EOT and padding of "X X X <name>."."""
    table = clip_model.token_embedding.weight
    name = classname.replace("_", " ")
    name_ids = clip.tokenize(name)[0]
    name_ids = name_ids[1:name_ids.argmax()]
    full_ids = clip.tokenize(" ".join(["X"] * N_CTX) + f" {name}.")[0]
    assert torch.equal(full_ids[1 + N_CTX:1 + N_CTX + len(name_ids)], name_ids)
    sos, name_tokens = table[full_ids[:1]], table[name_ids]
    after = table[full_ids[1 + N_CTX + len(name_ids):]]
    half = N_CTX // 2
    body = {"end": [ctx, name_tokens],
            "front": [name_tokens, ctx],
            "middle": [ctx[:half], name_tokens, ctx[half:]]}[position]
    return torch.cat([sos, *body, after])


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_class_token_position_puts_the_tokens_where_they_belong(position):
    model = coop(**{"TRAINER.COOP.CLASS_TOKEN_POSITION": position})
    set_distinct_context(model)
    got = embedded_prompts(model)
    clip_model = coop_clip()
    for i, classname in enumerate(CLASSNAMES):
        ctx = model.prompt_learner.ctx.detach()
        expected = expected_prompt(clip_model, classname, ctx, position)
        torch.testing.assert_close(got[i], expected, msg=f"{position}: class {classname}")


def test_csc_gives_every_class_its_own_context():
    model = coop(**{"TRAINER.COOP.CSC": True, "TRAINER.COOP.CLASS_TOKEN_POSITION": "middle"})
    ctx = model.prompt_learner.ctx
    assert ctx.shape == (len(CLASSNAMES), N_CTX, ctx.shape[-1])
    set_distinct_context(model)
    got = embedded_prompts(model)
    clip_model = coop_clip()
    for i, classname in enumerate(CLASSNAMES):
        expected = expected_prompt(clip_model, classname, ctx[i].detach(), "middle")
        torch.testing.assert_close(got[i], expected)

    features = model.encode_text()
    features[0].sum().backward()
    touched = ctx.grad.abs().sum(dim=(1, 2)) > 0
    assert touched.tolist() == [True] + [False] * (len(CLASSNAMES) - 1)


def test_chunked_text_encoding_matches_one_pass():
    model = coop(**{"TRAINER.COOP.CSC": True, "TRAINER.COOP.CLASS_TOKEN_POSITION": "front"})
    with torch.no_grad():
        whole = model.encode_text()
        model.text_chunk_size = 2
        torch.testing.assert_close(model.encode_text(), whole)


def test_word_initialised_context_is_clip_with_that_template():
    model = coop(**{"TRAINER.COOP.CTX_INIT": "a_photo_of_a", "TRAINER.COOP.N_CTX": 16})
    assert model.prompt_learner.ctx.shape[0] == 4  # CTX_INIT's word count, not N_CTX
    assert_is_clip_with_the_template(model, images(4))


def test_csc_with_ctx_init_keeps_coops_shared_context():
    model = coop(**{"TRAINER.COOP.CTX_INIT": "a photo of a", "TRAINER.COOP.CSC": True})
    assert model.prompt_learner.ctx.dim() == 2


def test_unknown_class_token_position_is_refused():
    with pytest.raises(ValueError, match="CLASS_TOKEN_POSITION \"start\" must be one of"):
        coop(**{"TRAINER.COOP.CLASS_TOKEN_POSITION": "start"})


def test_cocoop_with_a_silent_meta_net_is_clip_with_its_template():
    model = cocoop()
    with torch.no_grad():
        model.prompt_learner.meta_net.linear2.weight.zero_()
        model.prompt_learner.meta_net.linear2.bias.zero_()
    assert_is_clip_with_the_template(model, images(3))


def test_cocoop_shifts_the_context_of_each_image_by_its_meta_net_output():
    model = cocoop()
    learner = model.prompt_learner
    with torch.no_grad():
        for param in learner.meta_net.parameters():
            param.copy_(torch.randn_like(param))
    x = images(3)
    model.eval()
    with torch.no_grad():
        got = model(x)
        # The meta-net by hand, on CLIP's normalised image features.
        features = F.normalize(coop_clip().encode_image(x), dim=-1)
        net = learner.meta_net
        hidden = F.relu(features @ net.linear1.weight.t() + net.linear1.bias)
        shifts = hidden @ net.linear2.weight.t() + net.linear2.bias
        # CoOp with image i's shifted context is the reference for row i.
        reference = coop(**{"TRAINER.COOP.CTX_INIT": "a photo of a"})
        for i in range(len(x)):
            reference.prompt_learner.ctx.copy_(learner.ctx + shifts[i])
            reference.eval()  # also drops the cached text features
            torch.testing.assert_close(got[i], reference(x[i:i + 1])[0])


def test_cocoop_chunks_give_the_same_logits():
    model = cocoop()
    x = images(3)
    model.eval()
    with torch.no_grad():
        whole = model(x)
        model.text_chunk_size = 4  # chunks span image boundaries (5 classes per image)
        torch.testing.assert_close(model(x), whole)

