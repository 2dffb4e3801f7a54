"""clip/model.py against open_clip's model built from the same OpenAI state dict."""
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import build_model_from_openai_state_dict

import clip
from clip.model import CLIP, build_model, convert_weights_to, convert_weights_to_fp16
from tests.helpers.clip_files import make_resnet_state_dict, make_vit_state_dict

TEXTS = ["a photo of a cat.", "a centered satellite photo of forest.", ""]


def open_clip_reference(state_dict):
    return build_model_from_openai_state_dict(dict(state_dict), cast_dtype=None).float().eval()


@pytest.fixture(scope="module")
def vit_state_dict():
    return make_vit_state_dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64,
                               vision_patch_size=8, transformer_width=64, transformer_layers=2)


@pytest.fixture(scope="module")
def resnet_state_dict():
    # 64 px: a 2x2 grid reaches the attention pool, so the pooling is more than one position.
    return make_resnet_state_dict(embed_dim=32, image_resolution=64, vision_layers=(1, 2, 1, 1),
                                  vision_width=8, transformer_width=64, transformer_layers=2)


def images(resolution, n=3):
    return torch.randn(n, 3, resolution, resolution, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("state_dict_name, resolution", [
    ("vit_state_dict", 32), ("resnet_state_dict", 64)])
def test_features_equal_open_clip(request, state_dict_name, resolution):
    state_dict = request.getfixturevalue(state_dict_name)
    ours, reference = build_model(state_dict), open_clip_reference(state_dict)
    batch, tokens = images(resolution), clip.tokenize(TEXTS)
    with torch.no_grad():
        image_features = ours.encode_image(batch)
        text_features = ours.encode_text(tokens)
        torch.testing.assert_close(image_features, reference.encode_image(batch),
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(text_features, reference.encode_text(tokens),
                                   rtol=1e-4, atol=1e-5)
        logits_per_image, logits_per_text = ours(batch, tokens)
    assert image_features.std() > 0.1 and text_features.std() > 0.1  # not a trivial match
    expected = reference.logit_scale.exp() * (
        torch.nn.functional.normalize(image_features, dim=-1)
        @ torch.nn.functional.normalize(text_features, dim=-1).t())
    torch.testing.assert_close(logits_per_image, expected)
    torch.testing.assert_close(logits_per_text, expected.t())


def test_vit_architecture_is_inferred_from_shapes():
    state_dict = make_vit_state_dict(embed_dim=48, image_resolution=48, vision_layers=3,
                                     vision_width=128, vision_patch_size=16, context_length=20,
                                     transformer_width=64, transformer_layers=1)
    model = build_model(state_dict)
    visual = model.visual
    assert (visual.input_resolution, visual.patch_size, visual.width, visual.output_dim) == (
        48, 16, 128, 48)
    assert visual.transformer.layers == 3 and visual.transformer.width == 128
    assert visual.transformer.resblocks[0].attn.num_heads == 2  # 128 // 64, OpenAI's rule
    assert (model.context_length, model.vocab_size) == (20, 49408)
    assert model.transformer.layers == 1 and model.transformer.width == 64
    assert model.dtype == torch.float32 and not model.training


def test_resnet_architecture_is_inferred_from_shapes(resnet_state_dict):
    model = build_model(resnet_state_dict)
    visual = model.visual
    assert [len(getattr(visual, f"layer{i}")) for i in (1, 2, 3, 4)] == [1, 2, 1, 1]
    assert (visual.input_resolution, visual.width, visual.output_dim) == (64, 8, 32)
    assert visual.attnpool.num_heads == 4  # 8 * 32 // 64
    assert not any(m.training for m in model.modules())  # BatchNorm uses running statistics


def test_build_model_rejects_unexpected_and_missing_keys(vit_state_dict):
    extra = dict(vit_state_dict, **{"visual.extra.weight": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="visual.extra.weight"):
        build_model(extra)
    missing = {k: v for k, v in vit_state_dict.items() if k != "ln_final.bias"}
    with pytest.raises(RuntimeError, match="ln_final.bias"):
        build_model(missing)
    with pytest.raises(ValueError, match="not an OpenAI CLIP state dict"):
        build_model({"fc.weight": torch.zeros(2, 2)})


def test_build_model_ignores_torchscript_attributes(vit_state_dict):
    with_attributes = dict(vit_state_dict, input_resolution=torch.tensor(32),
                           context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    assert isinstance(build_model(with_attributes), CLIP)


@pytest.mark.parametrize("state_dict_name", ["vit_state_dict", "resnet_state_dict"])
def test_build_model_draws_what_openai_s_constructor_draws(request, state_dict_name):
    """The random initialisation the weights replace still runs, so the global generator
    advances exactly as OpenAI's (and the authors') CLIP constructor makes it: a seed gives the
    prompts built next the authors' initial values. Every parameter and buffer holds the state
    dict's value (cast to fp32)."""
    from clip.model import architecture_from_state_dict

    state_dict = request.getfixturevalue(state_dict_name)
    torch.manual_seed(0)
    CLIP(**architecture_from_state_dict(
        {k: v for k, v in state_dict.items() if k not in ("input_resolution", "context_length",
                                                          "vocab_size")}))
    expected = torch.get_rng_state()
    torch.manual_seed(0)
    model = build_model(state_dict)
    assert torch.equal(torch.get_rng_state(), expected)
    assert not torch.equal(expected, torch.manual_seed(0).get_state())
    loaded = model.state_dict()
    assert loaded.keys() == state_dict.keys()
    for key, value in loaded.items():
        expected = state_dict[key]
        expected = expected.float() if expected.is_floating_point() else expected
        assert value.device.type == "cpu" and value.dtype == expected.dtype, key
        assert torch.equal(value, expected), key


def test_attention_mask_is_causal():
    mask = build_model(make_vit_state_dict(context_length=4)).build_attention_mask()
    inf = float("-inf")
    assert mask.tolist() == [[0, inf, inf, inf], [0, 0, inf, inf], [0, 0, 0, inf], [0, 0, 0, 0]]


def test_text_feature_ignores_tokens_after_end_of_text(vit_state_dict):
    # Causal attention: the end-of-text feature cannot see the padding after it.
    model = build_model(vit_state_dict)
    tokens = clip.tokenize(["a photo of a dog"])
    padded = tokens.clone()
    padded[0, 10:] = 5
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens), model.encode_text(padded))


def test_blocks_are_batch_first_and_take_the_mask_as_argument(vit_state_dict):
    model = build_model(vit_state_dict)
    block = model.transformer.resblocks[0]
    x = torch.randn(2, 5, 64)
    mask = torch.full((5, 5), float("-inf")).triu_(1)
    with torch.no_grad():
        causal, full = block(x, mask), block(x)
        # The first position sees only itself under the mask: run it alone to check.
        torch.testing.assert_close(causal[:, :1], block(x[:, :1]))
    assert causal.shape == (2, 5, 64) and not torch.allclose(causal, full)
    assert not any(isinstance(v, torch.Tensor) for v in vars(block).values())


def upstream_text_encoder(model, tokens):
    """CoOp / MaPLe's TextEncoder as written for OpenAI's CLIP: sequence-first, no mask passed
    (OpenAI's blocks store the causal mask)."""
    x = model.token_embedding(tokens).type(model.dtype) + model.positional_embedding.type(model.dtype)
    x = model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = model.ln_final(x).type(model.dtype)
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ model.text_projection


def test_openai_sequence_first_transformer_applies_the_causal_mask(vit_state_dict):
    """`clip_model.transformer(x)` on (L, N, D) is OpenAI's: the text tower masks causally by
    itself, so an upstream TextEncoder gives encode_text's features; our batch-first entry with
    the mask gives the same; the image tower is not masked."""
    model = build_model(vit_state_dict)
    tokens = clip.tokenize(TEXTS)
    x = model.embed_text(tokens) + model.positional_embedding
    with torch.no_grad():
        torch.testing.assert_close(upstream_text_encoder(model, tokens), model.encode_text(tokens))
        batch_first = model.transformer.batch_first(x, model.build_attention_mask())
        torch.testing.assert_close(model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2),
                                   batch_first)
        unmasked = model.transformer.batch_first(x)
        assert not torch.allclose(unmasked, batch_first)
        # Causal: the first position of a sequence sees only itself.
        torch.testing.assert_close(model.transformer(x[:1].permute(1, 0, 2))[0],
                                   model.transformer(x[:1, :1].permute(1, 0, 2))[0])
        image_tokens = torch.randn(2, 5, 64)
        torch.testing.assert_close(model.visual.transformer(image_tokens.transpose(0, 1)),
                                   model.visual.transformer.batch_first(image_tokens).transpose(0, 1))
    assert model.transformer.causal and not model.visual.transformer.causal


def test_openai_names_exist():
    from clip import clip as clip_module
    from clip.model import convert_weights
    from clip.simple_tokenizer import SimpleTokenizer

    assert convert_weights is convert_weights_to_fp16
    assert clip_module._MODELS["ViT-B/16"].endswith("/ViT-B-16.pt") and callable(clip_module._download)
    assert SimpleTokenizer().encode("a photo") == clip.tokenize("a photo")[0, 1:3].tolist()


def test_fp16_model_matches_fp32_within_half_precision(vit_state_dict):
    model32 = build_model(vit_state_dict)
    model16 = convert_weights_to_fp16(build_model(vit_state_dict))
    assert model16.dtype == torch.float16 and model16.ln_final.weight.dtype == torch.float32
    batch, tokens = images(32), clip.tokenize(TEXTS)
    with torch.no_grad():
        text16, image16 = model16.encode_text(tokens), model16.encode_image(batch)
        assert text16.dtype == image16.dtype == torch.float16
        torch.testing.assert_close(text16.float(), model32.encode_text(tokens), rtol=0, atol=2e-2)
        torch.testing.assert_close(image16.float(), model32.encode_image(batch), rtol=0, atol=2e-2)


def mha_block_reference(block, x, mask=None):
    """The block as it was computed before the fused q/k/v + scaled_dot_product_attention:
    through nn.MultiheadAttention's own forward (batch-first)."""
    h = block.ln_1(x)
    x = x + block.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
    return x + block.mlp(block.ln_2(x))


@pytest.mark.parametrize("causal", [False, True], ids=["image", "text"])
def test_fused_attention_equals_multihead_attention_forward_and_backward(vit_state_dict, causal):
    model = build_model(vit_state_dict)
    block = (model.transformer if causal else model.visual.transformer).resblocks[1]
    assert {"attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
            "attn.out_proj.bias"} <= set(block.state_dict())
    x = torch.randn(3, 7, 64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    mask = torch.full((7, 7), float("-inf")).triu_(1) if causal else None
    ours = block(x, mask)
    (grad_ours,) = torch.autograd.grad(ours.square().sum(), x)
    reference = mha_block_reference(block, x, mask)
    (grad_reference,) = torch.autograd.grad(reference.square().sum(), x)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(grad_ours, grad_reference, rtol=1e-5, atol=1e-5)
    assert (ours - x).abs().max() > 0.1  # the attention and MLP did something


@pytest.mark.parametrize("per_sequence", [False, True], ids=["slice", "one-per-sequence"])
@pytest.mark.parametrize("causal", [False, True], ids=["image", "text"])
def test_block_output_at_some_rows_equals_those_rows_of_the_whole_block(vit_state_dict, causal,
                                                                        per_sequence):
    model = build_model(vit_state_dict)
    block = (model.transformer if causal else model.visual.transformer).resblocks[1]
    x = torch.randn(3, 7, 64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    mask = torch.full((7, 7), float("-inf")).triu_(1) if causal else None
    rows = torch.tensor([2, 4, 3]) if per_sequence else slice(2, 4)
    ours = block(x, mask, rows=rows)
    (grad_ours,) = torch.autograd.grad(ours.square().sum(), x)
    reference = mha_block_reference(block, x, mask)
    reference = reference[torch.arange(3), rows][:, None] if per_sequence else reference[:, rows]
    (grad_reference,) = torch.autograd.grad(reference.square().sum(), x)
    assert ours.shape == (3, 1 if per_sequence else 2, 64)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(grad_ours, grad_reference, rtol=1e-5, atol=1e-5)
    # Without a mask the rows attend to later positions too, which then get gradients.
    assert (grad_reference[:, 5:].abs().max() > 0) == (not causal)
    # The same with the queries, keys and values given (a prompted layer that computed them).
    given = block(x, mask, qkv=block.attn.qkv(block.ln_1(x)), rows=rows)
    torch.testing.assert_close(given, reference, rtol=0, atol=1e-5)


def test_bf16_attention_with_gradients_on_the_cpu_is_computed_in_fp32(vit_state_dict,
                                                                       monkeypatch):
    """torch's bf16 CPU attention backward is slow on short sequences: with gradients, bf16
    blocks attend in fp32 (output back in bf16); without, in bf16. Both agree with the fp32
    block within bf16 rounding."""
    model = build_model(vit_state_dict)
    block = model.transformer.resblocks[1]
    x = torch.randn(3, 7, 64, generator=torch.Generator().manual_seed(2))
    mask = torch.full((7, 7), float("-inf")).triu_(1)
    reference = block(x, mask)
    block16 = convert_weights_to(build_model(vit_state_dict), torch.bfloat16).transformer
    block16 = block16.resblocks[1]
    dtypes = []
    original = F.scaled_dot_product_attention

    def recorded(q, k, v, **kwargs):
        dtypes.append(q.dtype)
        return original(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recorded)
    x16 = x.to(torch.bfloat16).requires_grad_()
    trained = block16(x16, mask)
    with torch.no_grad():
        evaluated = block16(x16, mask)
    assert dtypes == [torch.float32, torch.bfloat16]
    assert trained.dtype == evaluated.dtype == torch.bfloat16
    for out in (trained, evaluated):
        torch.testing.assert_close(out.float(), reference, rtol=0, atol=0.1)
    (grad,) = torch.autograd.grad(trained.float().square().sum(), x16)
    assert grad.dtype == torch.bfloat16 and grad.abs().max() > 0


def test_attention_never_runs_multihead_attention_forward(vit_state_dict, monkeypatch):
    model = build_model(vit_state_dict)

    def refuse(*args, **kwargs):
        raise AssertionError("nn.MultiheadAttention.forward was called")

    monkeypatch.setattr(torch.nn.MultiheadAttention, "forward", refuse)
    with torch.no_grad():
        model(images(32), clip.tokenize(TEXTS))


def test_bf16_layer_norm_on_cpu_equals_the_fp32_computation():
    from clip.model import LayerNorm

    norm = LayerNorm(64)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    x = torch.randn(3, 7, 64, generator=torch.Generator().manual_seed(4)).bfloat16()
    x.requires_grad_()
    out = norm(x)
    reference = torch.nn.functional.layer_norm(x.float(), (64,), norm.weight, norm.bias,
                                               norm.eps).bfloat16()
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference.float(), rtol=0, atol=0.02)
    out.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quick_gelu_is_bitwise_the_expression_with_and_without_a_graph(dtype):
    """QuickGELU writes into its temporaries where no graph is built: the values, and with
    gradients the gradients, are bitwise those of x * sigmoid(1.702 x); x is left as it was."""
    from clip.model import QuickGELU

    gelu = QuickGELU()
    x = (3 * torch.randn(2, 5, 48, generator=torch.Generator().manual_seed(5))).to(dtype)
    before = x.clone()
    expected = x * torch.sigmoid(1.702 * x)
    with torch.no_grad():
        assert torch.equal(gelu(x), expected)
    assert torch.equal(gelu(x), expected)  # grad mode on, x needs none: no graph either
    assert torch.equal(x, before)
    leaf, reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = gelu(leaf)
    assert out.requires_grad and torch.equal(out, expected)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(6)).to(dtype)
    out.backward(upstream)
    (reference * torch.sigmoid(1.702 * reference)).backward(upstream)
    assert torch.equal(leaf.grad, reference.grad)
    assert reference.grad.abs().max() > 0.5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("state_dict_name", ["vit_state_dict", "resnet_state_dict"])
def test_build_model_loads_half_precision_weights_as_casting_the_fp32_model(request,
                                                                            state_dict_name, dtype):
    state_dict = request.getfixturevalue(state_dict_name)
    cast = convert_weights_to(build_model(state_dict), dtype).state_dict()
    loaded = build_model(state_dict, weight_dtype=dtype)
    assert not loaded.training and loaded.dtype == dtype
    assert loaded.state_dict().keys() == cast.keys()
    for key, value in loaded.state_dict().items():
        assert value.dtype == cast[key].dtype and torch.equal(value, cast[key]), key
