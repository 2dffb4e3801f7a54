"""BMIP's prompt learner on a tiny CLIP, against independent references: the attention statistic
against torch's nn.MultiheadAttention weights, the limits w -> 1 (IVLP with the same prompts) and
w -> 0 (each tower gets the other's projected prompts), the ablation formulas computed by hand,
batch (in)dependence of the two ATTN_POOL modes, and where gradients go."""
import pytest
import torch
import torch.nn.functional as F

import trainers.bmip as bmip
from tests.helpers.clip_files import tiny_clip_model
from tests.helpers.trainers import CLASSNAMES, images, run_recorded, tiny_clip, trainer_cfg
from trainers.bmip import (BMIPPromptLearner, image_attention, text_attention,
                           text_attention_authors)
from trainers.ivlp import VLPromptLearner
from trainers.prompting import LayerInput, PromptedCLIP

N_CTX = 2
DEPTH = 3  # every layer of the 3-layer tiny CLIP
# Width 128 gives CLIP's blocks two heads (heads = width // 64), so head averaging is tested.
TWO_HEAD_SIZES = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128,
                      vision_patch_size=16, transformer_width=128, transformer_layers=2)


def bmip_model(clip_model=None, **opts):
    opts = {"TRAINER.BMIP.PROMPT_DEPTH": DEPTH, "TRAINER.BMIP.N_CTX": N_CTX, **opts}
    clip_model = clip_model or tiny_clip()
    learner = BMIPPromptLearner(trainer_cfg("BMIP", **opts), CLASSNAMES, clip_model)
    return PromptedCLIP(clip_model, learner)


def set_weight_heads(learner, weight, bias):
    with torch.no_grad():
        for head in [*learner.vision_weight_heads, *learner.text_weight_heads]:
            head.weight.fill_(weight)
            head.bias.fill_(bias)


def linear(tokens, layer):
    """A Linear layer's map written out, as the reference for the learner's projections."""
    return tokens @ layer.weight.t() + layer.bias


# ---------------------------------------------------------------------------------------------
# The attention statistic A
# ---------------------------------------------------------------------------------------------

def torch_attention_weights(block, x, attn_mask=None):
    """Head-averaged weights [B, L, L] from torch's own multi-head attention on ln_1(x)."""
    hidden = block.ln_1(x)
    _, weights = block.attn(hidden, hidden, hidden, need_weights=True,
                            average_attn_weights=True, attn_mask=attn_mask)
    return weights


@pytest.fixture(scope="module")
def two_head_model():
    clip_model = tiny_clip_model("vit", **TWO_HEAD_SIZES)
    assert clip_model.transformer.resblocks[1].attn.num_heads == 2
    assert clip_model.visual.transformer.resblocks[1].attn.num_heads == 2
    model = bmip_model(clip_model, **{"TRAINER.BMIP.PROMPT_DEPTH": 2})
    _, text_in, _, image_in, _ = run_recorded(model)
    return model, text_in[1], image_in[1]


def no_second_attention_pass(block, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the statistic ran the attention module a second time")
    monkeypatch.setattr(block.attn, "forward", refuse)


@pytest.mark.parametrize("context", [True, False], ids=["context-parts", "one-hot-values"])
def test_image_statistic_equals_torch_attention_weights(two_head_model, monkeypatch, context):
    """Both ways of computing it: from the context's attention, which the block then completes
    (CPU), and by one fused attention over one-hot values (other devices)."""
    model, _, x = two_head_model
    block = model.image_encoder.transformer.resblocks[1]
    length, n = x.shape[1], N_CTX
    with torch.no_grad():
        reference = torch_attention_weights(block, x)[:, :length - n, length - n:].mean(dim=1)

    no_second_attention_pass(block, monkeypatch)
    if not context:
        monkeypatch.setattr(LayerInput, "_context_applies", lambda layer: False)
    layer = LayerInput(1, x.detach().requires_grad_(), block, n, None)
    statistic = image_attention(layer)
    assert (layer.computed_context is not None) == context
    torch.testing.assert_close(statistic, reference, rtol=1e-5, atol=1e-6)
    assert statistic.shape == (3, n) and not statistic.requires_grad
    assert (statistic > 0).all()


def test_text_statistic_equals_torch_attention_weights_under_the_causal_mask(
        two_head_model, monkeypatch):
    model, x, _ = two_head_model
    block = model.text_encoder.transformer.resblocks[1]
    length = x.shape[1]  # the class prompts cut after their last EOT
    mask = model.text_encoder.attn_mask[:length, :length]
    eot = model.prompt_learner.tokenized_prompts.argmax(dim=-1)
    assert length == eot.max() + 1
    assert len(set(eot.tolist())) > 1  # class names of different lengths
    weights = torch_attention_weights(block, x, mask)
    n = N_CTX
    reference = torch.stack([weights[c, n + 1:eot[c] + 1, 1:n + 1].mean(dim=0)
                             for c in range(len(CLASSNAMES))])

    no_second_attention_pass(block, monkeypatch)
    layer = LayerInput(1, x.requires_grad_(), block, n, mask, eot)
    statistic = text_attention(layer)
    torch.testing.assert_close(statistic, reference, rtol=1e-5, atol=1e-6)
    assert statistic.shape == (len(CLASSNAMES), n) and not statistic.requires_grad
    # The authors read the SOS row, which the causal mask keeps at exactly 0.
    authors = text_attention_authors(layer)
    torch.testing.assert_close(authors, weights[:, 0, 1:n + 1].mean(dim=0))
    assert torch.equal(authors, torch.zeros(n))


# ---------------------------------------------------------------------------------------------
# Limits of the weights
# ---------------------------------------------------------------------------------------------

def test_weights_near_one_give_ivlp_with_the_same_prompts():
    clip_model = tiny_clip()
    model = bmip_model(clip_model)
    learner = model.prompt_learner
    set_weight_heads(learner, weight=0.0, bias=40.0)  # sigmoid(40) == 1 in fp32

    ivlp_cfg = trainer_cfg("IVLP", **{"TRAINER.IVLP.N_CTX_TEXT": N_CTX,
                                      "TRAINER.IVLP.N_CTX_VISION": N_CTX,
                                      "TRAINER.IVLP.PROMPT_DEPTH_TEXT": DEPTH,
                                      "TRAINER.IVLP.PROMPT_DEPTH_VISION": DEPTH})
    ivlp = VLPromptLearner(ivlp_cfg, CLASSNAMES, clip_model)
    with torch.no_grad():
        ivlp.text.ctx.copy_(learner.ctx)
        ivlp.vision.ctx.copy_(linear(learner.ctx, learner.proj))
        for j in range(DEPTH - 1):
            ivlp.text.deep[j].copy_(learner.deep_text[j])
            ivlp.vision.deep[j].copy_(learner.deep_vision[j])
    ivlp_model = PromptedCLIP(clip_model, ivlp)
    model.eval(), ivlp_model.eval()

    with torch.no_grad():
        expected = ivlp_model(images())
        torch.testing.assert_close(model(images()), expected)
        set_weight_heads(learner, weight=0.0, bias=0.0)  # w = 1/2: the test can fail
        assert not torch.allclose(model(images()), expected, atol=1e-3)


def test_weights_near_zero_give_each_tower_the_other_towers_projected_prompts():
    model = bmip_model()
    learner = model.prompt_learner
    set_weight_heads(learner, weight=0.0, bias=-40.0)
    _, text_in, _, image_in, _ = run_recorded(model)
    with torch.no_grad():
        for i in range(1, DEPTH):
            from_text = linear(learner.deep_text[i - 1], learner.to_vision[0])
            from_image = linear(learner.deep_vision[i - 1], learner.to_text[0])
            for row in image_in[i][:, -N_CTX:]:
                torch.testing.assert_close(row, from_text)
            for row in text_in[i][:, 1:1 + N_CTX]:
                torch.testing.assert_close(row, from_image)


def test_weighted_prompts_follow_the_attention_weights_of_each_image():
    model = bmip_model()
    learner = model.prompt_learner
    set_weight_heads(learner, weight=5.0, bias=-0.5)
    _, _, _, image_in, image_out = run_recorded(model)
    block = model.image_encoder.transformer.resblocks[1]
    with torch.no_grad():
        entering = image_out[0]  # layer 1 sees layer 0's output, prompts not yet replaced
        hidden = block.ln_1(entering)
        _, attention = block.attn(hidden, hidden, hidden, need_weights=True)
        a = attention[:, :-N_CTX, -N_CTX:].mean(dim=1)  # [N, n]
        w = torch.sigmoid(5.0 * a - 0.5).unsqueeze(-1)
        local = learner.deep_vision[0]
        foreign = linear(learner.deep_text[0], learner.to_vision[0])
        torch.testing.assert_close(image_in[1][:, -N_CTX:], w * local + (1 - w) * foreign)


def test_weight_act_none_uses_the_heads_output_as_the_weight_without_a_sigmoid():
    """WEIGHT_ACT none: w = L(A) (the paper's eqs. (10)-(11)); the default's sigmoid is the
    authors' code's."""
    model = bmip_model(**{"TRAINER.BMIP.WEIGHT_ACT": "none"})
    learner = model.prompt_learner
    set_weight_heads(learner, weight=5.0, bias=-0.5)
    _, text_in, text_out, image_in, image_out = run_recorded(model)
    block = model.image_encoder.transformer.resblocks[1]
    with torch.no_grad():
        hidden = block.ln_1(image_out[0])
        _, attention = block.attn(hidden, hidden, hidden, need_weights=True)
        w = (5.0 * attention[:, :-N_CTX, -N_CTX:].mean(dim=1) - 0.5).unsqueeze(-1)
        local = learner.deep_vision[0]
        foreign = linear(learner.deep_text[0], learner.to_vision[0])
        torch.testing.assert_close(image_in[1][:, -N_CTX:], w * local + (1 - w) * foreign)
        # text side: w_l = L(A_l) with A_l from torch's weights under the causal mask
        block = model.text_encoder.transformer.resblocks[1]
        x = text_out[0]
        mask = model.text_encoder.attn_mask[:x.shape[1], :x.shape[1]]
        weights = torch_attention_weights(block, x, mask)
        eot = learner.tokenized_prompts.argmax(dim=-1)
        for row in range(x.shape[0]):
            a = weights[row, N_CTX + 1:eot[row] + 1, 1:N_CTX + 1].mean(dim=0)
            w = (5.0 * a - 0.5).unsqueeze(-1)
            local = learner.deep_text[0]
            foreign = linear(learner.deep_vision[0], learner.to_text[0])
            torch.testing.assert_close(text_in[1][row, 1:1 + N_CTX], w * local + (1 - w) * foreign)
    with pytest.raises(ValueError, match="WEIGHT_ACT is 'relu'"):
        bmip.BMIP(trainer_cfg("BMIP", **{"TRAINER.BMIP.WEIGHT_ACT": "relu"}))


# ---------------------------------------------------------------------------------------------
# Batch (in)dependence
# ---------------------------------------------------------------------------------------------

def logits_alone_and_in_batches(attn_pool):
    model = bmip_model(**{"TRAINER.BMIP.ATTN_POOL": attn_pool})
    set_weight_heads(model.prompt_learner, weight=20.0, bias=-2.0)  # weights that vary with A
    model.eval()
    image = images(1, seed=7)
    with torch.no_grad():
        alone = model(image)[0]
        first = model(torch.cat([image, images(3, seed=1)]))[0]
        last = model(torch.cat([images(2, seed=2), image]))[-1]
    return alone, first, last


def test_per_sample_logits_do_not_depend_on_the_batch():
    alone, first, last = logits_alone_and_in_batches("per_sample")
    torch.testing.assert_close(first, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, alone, rtol=1e-5, atol=1e-5)


def test_authors_pooling_makes_logits_depend_on_the_batch():
    alone, first, last = logits_alone_and_in_batches("authors")
    assert (first - alone).abs().max() > 1e-3
    assert (last - alone).abs().max() > 1e-3


def test_authors_mode_replaces_text_prompts_one_layer_fewer():
    model = bmip_model(**{"TRAINER.BMIP.ATTN_POOL": "authors"})
    learner = model.prompt_learner
    set_weight_heads(learner, weight=0.0, bias=-40.0)
    _, text_in, text_out, image_in, _ = run_recorded(model)
    last = DEPTH - 1
    with torch.no_grad():
        # Text layer J-1: layer J-2's prompt outputs flow on; image layer J-1 is replaced.
        prompt_slots = slice(1, 1 + N_CTX)
        torch.testing.assert_close(text_in[last][:, prompt_slots],
                                   text_out[last - 1][:, prompt_slots])
        torch.testing.assert_close(image_in[last][0, -N_CTX:],
                                   linear(learner.deep_text[last - 1], learner.to_vision[0]))
        torch.testing.assert_close(text_in[1][0, 1:1 + N_CTX],
                                   linear(learner.deep_vision[0], learner.to_text[0]))


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("share", [True, False], ids=["shared-projections", "per-layer"])
def test_gradients_reach_every_prompt_projection_and_weight_head_but_not_clip(share):
    model = bmip_model(**{"TRAINER.BMIP.SHARE_PROJECTIONS": share})
    learner = model.prompt_learner
    n_projections = 1 if share else DEPTH - 1
    assert len(learner.to_vision) == len(learner.to_text) == n_projections
    loss = F.cross_entropy(model(images()), torch.tensor([0, 3, 4]))
    loss.backward()

    groups = {"shallow prompt P_0": ["ctx"], "F_0": ["proj."], "P_i": ["deep_text."],
              "vision P_i": ["deep_vision."], "F_v": ["to_vision."], "F_l": ["to_text."],
              "L_v": ["vision_weight_heads."], "L_l": ["text_weight_heads."]}
    named = dict(learner.named_parameters())
    for group, prefixes in groups.items():
        members = [name for name in named if name.startswith(tuple(prefixes))]
        assert members, group
        for name in members:
            grad = named[name].grad
            assert grad is not None and grad.abs().sum() > 0, f"no gradient reaches {name}"
    for name, param in model.named_parameters():
        if not name.startswith("prompt_learner."):
            assert not param.requires_grad and param.grad is None, name


# ---------------------------------------------------------------------------------------------
# Ablations: joint, add, attention
# ---------------------------------------------------------------------------------------------

def test_joint_keeps_both_prompt_sets_side_by_side():
    model = bmip_model(**{"TRAINER.BMIP.AGGREGATION": "joint"})
    learner = model.prompt_learner
    assert learner.ctx.shape[0] == 2 * N_CTX
    assert not hasattr(learner, "vision_weight_heads")
    _, text_in, _, image_in, _ = run_recorded(model)
    plain_length = 1 + (32 // 16) ** 2
    assert image_in[0].shape[1] == plain_length + 2 * N_CTX
    with torch.no_grad():
        for i in range(1, DEPTH):
            image_expected = torch.cat([learner.deep_vision[i - 1],
                                        linear(learner.deep_text[i - 1], learner.to_vision[0])])
            text_expected = torch.cat([learner.deep_text[i - 1],
                                       linear(learner.deep_vision[i - 1], learner.to_text[0])])
            torch.testing.assert_close(image_in[i][1, -2 * N_CTX:], image_expected)
            torch.testing.assert_close(text_in[i][2, 1:1 + 2 * N_CTX], text_expected)


def test_add_sums_own_and_projected_prompts():
    model = bmip_model(**{"TRAINER.BMIP.AGGREGATION": "add"})
    learner = model.prompt_learner
    _, text_in, _, image_in, _ = run_recorded(model)
    with torch.no_grad():
        for i in range(1, DEPTH):
            image_expected = learner.deep_vision[i - 1] + linear(learner.deep_text[i - 1],
                                                                 learner.to_vision[0])
            text_expected = learner.deep_text[i - 1] + linear(learner.deep_vision[i - 1],
                                                              learner.to_text[0])
            torch.testing.assert_close(image_in[i][0, -N_CTX:], image_expected)
            torch.testing.assert_close(text_in[i][4, 1:1 + N_CTX], text_expected)


def cosine_by_hand(a, b):
    return (a * b).sum(-1) / (a.pow(2).sum(-1).sqrt() * b.pow(2).sum(-1).sqrt())


def test_attention_aggregation_weights_by_cosine_similarity():
    model = bmip_model(**{"TRAINER.BMIP.AGGREGATION": "attention"})
    learner = model.prompt_learner
    with torch.no_grad():  # prompts that point partly the same way, so cos is far from 0
        learner.deep_vision[0].copy_(linear(learner.deep_text[0], learner.to_vision[0])
                                     + 0.05 * torch.randn(N_CTX, 48))
    _, text_in, _, image_in, _ = run_recorded(model)
    with torch.no_grad():
        local, foreign = learner.deep_vision[0], linear(learner.deep_text[0], learner.to_vision[0])
        w = torch.sigmoid(cosine_by_hand(local, foreign)).unsqueeze(-1)
        assert (w > 0.6).all()
        torch.testing.assert_close(image_in[1][2, -N_CTX:], w * local + (1 - w) * foreign)
        local, foreign = learner.deep_text[1], linear(learner.deep_vision[1], learner.to_text[0])
        w = torch.sigmoid(cosine_by_hand(local, foreign)).unsqueeze(-1)
        torch.testing.assert_close(text_in[2][0, 1:1 + N_CTX], w * local + (1 - w) * foreign)


def test_unknown_options_are_refused_with_the_choices():
    # The trainer refuses them before it reads a dataset or loads CLIP.
    with pytest.raises(ValueError, match=r"AGGREGATION is 'sum': choose one of \['weighted'"):
        bmip.BMIP(trainer_cfg("BMIP", **{"TRAINER.BMIP.AGGREGATION": "sum"}))
    with pytest.raises(ValueError, match="ATTN_POOL is 'batch'"):
        bmip.BMIP(trainer_cfg("BMIP", **{"TRAINER.BMIP.ATTN_POOL": "batch"}))
    with pytest.raises(ValueError, match="PROMPT_DEPTH is 4"):
        bmip_model(**{"TRAINER.BMIP.PROMPT_DEPTH": 4})
