"""The prompted encoders and the shared model: equality with plain CLIP, prompt positions and
depths (instrumented blocks), MaPLe's equations recomputed by hand, text-feature caching,
frozen CLIP and the precision policy."""
import pytest
import torch
import torch.nn.functional as F

from tests.helpers.trainers import (CLASSNAMES, images, record_block_inputs, tiny_clip,
                                    trainer_cfg)
from trainers.maple import MultiModalPromptLearner
from trainers.prompting import (LayerPrompts, PromptedCLIP, PromptedImageEncoder,
                                PromptedTextEncoder, PromptLearner, init_context, tokenize)


def maple_model(depth=2, n_ctx=2, clip_model=None, seed=0):
    clip_model = clip_model or tiny_clip()
    cfg = trainer_cfg("MaPLe", **{"TRAINER.MAPLE.PROMPT_DEPTH": depth, "TRAINER.MAPLE.N_CTX": n_ctx})
    torch.manual_seed(seed)
    return PromptedCLIP(clip_model, MultiModalPromptLearner(cfg, CLASSNAMES, clip_model))


def test_encoders_without_prompts_are_clip():
    clip_model = tiny_clip()
    tokens = tokenize(["a photo of a forest.", "a river"], clip_model)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(PromptedTextEncoder(clip_model)(tokens),
                                   clip_model.encode_text(tokens))
        torch.testing.assert_close(PromptedImageEncoder(clip_model.visual)(x),
                                   clip_model.encode_image(x))


def test_init_context_follows_the_maple_rule():
    clip_model = tiny_clip()
    ctx, prefix = init_context(clip_model, 2, "a photo of a")
    # "a photo" learnt, "of a" kept in the class prompts after the context.
    assert prefix == "a photo of a"
    expected = clip_model.token_embedding(tokenize("a photo", clip_model))[0, 1:3]
    torch.testing.assert_close(ctx, expected)
    ctx, prefix = init_context(clip_model, 5, "a photo of a")
    assert prefix == "X X X X X" and ctx.shape == (5, 32)
    with pytest.raises(ValueError, match="CTX_INIT 'a photo' has 2 tokens"):
        init_context(clip_model, 3, "a photo")


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_maple_writes_prompts_in_exactly_the_layers_below_depth(depth):
    model = maple_model(depth=depth, n_ctx=2)
    learner = model.prompt_learner
    text_blocks = model.text_encoder.transformer.resblocks
    image_blocks = model.image_encoder.transformer.resblocks
    text_in, text_out, handles = record_block_inputs(text_blocks)
    image_in, image_out, more = record_block_inputs(image_blocks)
    with torch.no_grad():
        model(images())
        text_deep = [p.clone() for p in learner.compound_prompts_text]
        image_first = model.image_encoder.ln_pre(learner.proj(learner.ctx))
        image_deep = [proj(p) for proj, p in zip(learner.compound_prompt_projections,
                                                  learner.compound_prompts_text, strict=True)]
        text_first = learner.ctx + model.text_encoder.positional_embedding[1:3]
    for handle in handles + more:
        handle.remove()

    def text_slots(x):
        return x[:, 1:3]

    def image_slots(x):
        return x[:, -2:]

    # Layer 0: the shallow prompts, after SOS (text, with positions) / after the patches (image).
    torch.testing.assert_close(text_slots(text_in[0]), text_first.expand(len(CLASSNAMES), -1, -1))
    torch.testing.assert_close(image_slots(image_in[0]), image_first.expand(3, -1, -1))
    for i in range(1, 3):
        if i < depth:  # replaced by the layer's prompts
            torch.testing.assert_close(text_slots(text_in[i]), text_deep[i - 1].expand(5, -1, -1))
            torch.testing.assert_close(image_slots(image_in[i]), image_deep[i - 1].expand(3, -1, -1))
        else:  # the previous block's outputs flow on
            torch.testing.assert_close(text_in[i], text_out[i - 1])
            torch.testing.assert_close(image_in[i], image_out[i - 1])
        # Other positions are never touched.
        torch.testing.assert_close(text_in[i][:, 3:], text_out[i - 1][:, 3:])
        torch.testing.assert_close(text_in[i][:, :1], text_out[i - 1][:, :1])
        torch.testing.assert_close(image_in[i][:, :-2], image_out[i - 1][:, :-2])
    assert image_in[0].shape[1] == 1 + (32 // 16) ** 2 + 2


def maple_logits_by_hand(clip_model, learner, x_images, depth, n_ctx):
    """MaPLe's equations on CLIP's plain modules (batch-first), written out independently."""
    tokens = tokenize([f"a photo of a {name.replace('_', ' ')}." for name in CLASSNAMES], clip_model)
    text = clip_model.token_embedding(tokens)
    text[:, 1:1 + n_ctx] = learner.ctx
    text = text + clip_model.positional_embedding
    mask = torch.full((77, 77), float("-inf")).triu(1)
    for i, block in enumerate(clip_model.transformer.resblocks):
        if 1 <= i < depth:
            text[:, 1:1 + n_ctx] = learner.compound_prompts_text[i - 1]
        text = block(text, attn_mask=mask)
    text = clip_model.ln_final(text)[torch.arange(len(CLASSNAMES)), tokens.argmax(-1)]
    text = text @ clip_model.text_projection

    visual = clip_model.visual
    patches = visual.conv1(x_images).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.expand(len(x_images), 1, -1)
    seq = torch.cat([cls, patches], 1) + visual.positional_embedding
    shallow = learner.ctx @ learner.proj.weight.t() + learner.proj.bias
    seq = visual.ln_pre(torch.cat([seq, shallow.expand(len(x_images), -1, -1)], 1))
    for i, block in enumerate(visual.transformer.resblocks):
        if 1 <= i < depth:
            projection = learner.compound_prompt_projections[i - 1]
            seq[:, -n_ctx:] = learner.compound_prompts_text[i - 1] @ projection.weight.t() + projection.bias
        seq = block(seq)
    image = visual.ln_post(seq[:, 0]) @ visual.proj

    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return clip_model.logit_scale.exp() * image @ text.t()


def test_maple_logits_match_the_equations():
    clip_model = tiny_clip()
    model = maple_model(depth=3, n_ctx=2, clip_model=clip_model)
    learner = model.prompt_learner
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():  # chosen values, far from the initialisation
        for param in learner.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    x = images()
    with torch.no_grad():
        expected = maple_logits_by_hand(clip_model, learner, x, depth=3, n_ctx=2)
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


def test_cached_text_features_give_the_per_batch_logits():
    model = maple_model(depth=2)
    x = images(4)
    model.train()
    per_batch = model(x).detach()  # training mode: no cache
    model.eval()
    with torch.no_grad():
        first = model(x[:2])
        cached = model._cached_text_features
        assert cached is not None
        second = model(x[2:])
        assert model._cached_text_features is cached  # computed once per evaluation
    torch.testing.assert_close(torch.cat([first, second]), per_batch)
    # Training again invalidates it: new prompts give new text features.
    model.train()
    assert model._cached_text_features is None
    with torch.no_grad():
        model.prompt_learner.ctx.add_(0.5)
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(x), per_batch)


def test_chunked_text_encoding_matches_one_pass():
    model = maple_model(depth=3)
    with torch.no_grad():
        whole = model.encode_text()
        model.text_chunk_size = 2
        torch.testing.assert_close(model.encode_text(), whole)


def test_only_the_learner_trains_and_clip_stays_in_eval_mode():
    model = maple_model(depth=3)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("prompt_learner.") for name in trainable)
    model.train()
    assert model.prompt_learner.training
    assert not any(m.training for m in model.image_encoder.modules())
    assert not any(m.training for m in model.text_encoder.modules())
    loss = F.cross_entropy(model(images()), torch.tensor([0, 1, 2]))
    loss.backward()
    assert all(p.grad is not None for p in model.prompt_learner.parameters())
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)


def test_fp16_clip_keeps_fp32_prompts():
    clip_model = tiny_clip()
    from clip.model import convert_weights_to_fp16
    convert_weights_to_fp16(clip_model)
    model = maple_model(depth=2, clip_model=clip_model)
    assert model.prompt_learner.ctx.dtype == torch.float32
    logits = model(images())
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    logits.sum().backward()
    assert model.prompt_learner.ctx.grad.dtype == torch.float32


class PerSampleLearner(PromptLearner):
    """Prompts computed from the hidden state (like BMIP): each sequence gets its own tokens."""

    def __init__(self, clip_model):
        super().__init__(CLASSNAMES, clip_model, "X X")
        self.scale = torch.nn.Parameter(torch.tensor(0.5))
        self.seen = []

    def text_prompts(self):
        first = torch.zeros(2, 32)
        return LayerPrompts(first, self.from_state)

    def image_prompts(self):
        return LayerPrompts(torch.zeros(2, 48), self.from_state)

    def from_state(self, layer):
        self.seen.append((layer.index, layer.eot is not None, layer.n_prompts))
        # Per sequence: the mean of its own non-prompt tokens, scaled.
        return self.scale * layer.x.mean(dim=1, keepdim=True).expand(-1, layer.n_prompts, -1)


def test_deep_callback_gets_the_state_and_may_return_per_sample_tokens():
    clip_model = tiny_clip()
    learner = PerSampleLearner(clip_model)
    model = PromptedCLIP(clip_model, learner)
    x = images(3)
    together = model(x)
    alone = model(x[1:2])
    # Per-sample prompts: an image's logits do not depend on the rest of the batch.
    torch.testing.assert_close(alone, together[1:2])
    assert (1, True, 2) in learner.seen and (2, False, 2) in learner.seen
    assert all(index >= 1 for index, _, _ in learner.seen)


def test_wrong_number_of_deep_tokens_is_an_error():
    clip_model = tiny_clip()
    learner = PerSampleLearner(clip_model)
    learner.from_state = lambda layer: torch.zeros(3, 32)
    with pytest.raises(ValueError, match="3 prompt tokens supplied where the sequence has 2"):
        PromptedCLIP(clip_model, learner).encode_text()


def test_prompts_longer_than_the_prefix_are_refused():
    clip_model = tiny_clip()
    learner = PerSampleLearner(clip_model)
    learner.prompt_prefix, learner.n_prefix_tokens = "X", 1
    with pytest.raises(ValueError, match="2 text prompt tokens, but the prompt prefix 'X' has 1"):
        PromptedCLIP(clip_model, learner).encode_text()
