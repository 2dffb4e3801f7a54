"""BMIP's statistic without a second projection: the queries and keys a prompted layer's
attention computes are taken for the statistic, and the layer's attention reuses them with only
the prompt positions recomputed. Logits and gradients equal those of the computation before
(the statistic projected separately, the block projecting everything itself), in both towers.
At evaluation (no gradients, CPU) the image context is scored once for the statistic and the
block (`ContextAttention`): the same logits as scoring it twice.""" 
import pytest
import torch
import torch.nn.functional as F

from clip.model import Attention
from tests.helpers.trainers import images
from tests.helpers.trainers import logits_and_gradients as step_and_logits
from tests.test_bmip_model import N_CTX, bmip_model, set_weight_heads
from trainers import bmip, prompting

TOLERANCE = 1e-5


def separate_projection(layer):
    """The computation before the reuse: the statistic's own projection, never kept."""
    return layer.block.attn.qkv(layer.block.ln_1(layer.x))


def logits_and_gradients(model):
    """The learner's gradients (named as in the learner) and the logits of images(seed=5)."""
    return step_and_logits(model, model.prompt_learner, eval_seed=5)


def count_projections(monkeypatch):
    """Lengths of the sequences Attention.qkv projects, in call order."""
    lengths = []
    original = Attention.qkv

    def counted(self, x):
        lengths.append(x.shape[1])
        return original(self, x)

    monkeypatch.setattr(Attention, "qkv", counted)
    return lengths


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "grad-checkpointing"])
@pytest.mark.parametrize("attn_pool", ["per_sample", "authors"])
def test_reused_projections_give_the_logits_and_gradients_of_a_separate_one(
        monkeypatch, attn_pool, checkpointing):
    torch.manual_seed(0)
    model = bmip_model(**{"TRAINER.BMIP.ATTN_POOL": attn_pool})
    set_weight_heads(model.prompt_learner, weight=20.0, bias=-2.0)  # w follows A closely
    model.set_grad_checkpointing(checkpointing)
    lengths = count_projections(monkeypatch)
    reused = logits_and_gradients(model)
    n_prompts = N_CTX
    assert n_prompts in lengths  # only the prompt positions were projected again

    lengths.clear()
    monkeypatch.setattr(prompting.LayerInput, "qkv", separate_projection)
    separate = logits_and_gradients(model)
    assert n_prompts not in lengths
    assert reused[0].std() > 0.05
    torch.testing.assert_close(reused[0], separate[0], rtol=0, atol=TOLERANCE)
    assert reused[1].keys() == separate[1].keys()
    for name, gradient in separate[1].items():
        torch.testing.assert_close(reused[1][name], gradient, rtol=0, atol=TOLERANCE, msg=name)
    # The vision weight heads get gradients only through A: both towers' statistics took part.
    assert reused[1]["vision_weight_heads.0.weight"].abs().sum() > 0
    if attn_pool == "per_sample":
        assert reused[1]["text_weight_heads.0.weight"].abs().sum() > 0


def test_each_prompted_layer_projects_once_plus_its_prompt_positions(monkeypatch):
    model = bmip_model()  # depth 3: layers 1 and 2 of each tower get deep prompts
    model.eval()
    lengths = count_projections(monkeypatch)
    with torch.no_grad():
        model.text_features()
    text = list(lengths)
    lengths.clear()
    with torch.no_grad():
        model.image_features(images())
    n = N_CTX
    # Layer 0 once; layers 1 and 2: the whole sequence once, then the n prompt positions.
    assert text[1:] == [text[0], n, text[0], n] and lengths[1:] == [lengths[0], n, lengths[0], n]


def split_heads(x, heads):
    """[B, L, heads * width] -> [B, heads, L, width] (a strided view, as Attention.qkv gives)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_context_attention_completes_to_the_attention_over_all_keys(dtype):
    """Output and prompt weights against the softmax written out over all keys (fp64): the
    output as close as scaled_dot_product_attention's own over all keys, the weights (fp32
    from the same inputs) to 1e-5. The prompt rows of the block's q/k/v are replaced by new
    ones (`attend`): the output and gradients are those of the attention over the new rows,
    and no gradient reaches the replaced ones."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (split_heads(3 * torch.randn(2, 11, 3 * 8, generator=generator), 3).to(dtype)
               for _ in range(3))
    context, prompts = slice(0, 9), slice(9, 11)
    weights = torch.softmax(q.double() @ k.double().transpose(-1, -2) / 8 ** 0.5, dim=-1)
    reference = (weights @ v.double())[:, :, context]

    # The block's q/k/v enter with other (older) prompt rows, which the statistic would read.
    old = torch.stack([q, k, v]).clone()
    old[..., prompts, :] = 5 * torch.randn(old[..., prompts, :].shape,
                                           generator=generator).to(dtype)
    old.requires_grad_()
    new_rows = torch.stack([q, k, v])[..., prompts, :].clone().requires_grad_()
    parts = prompting.ContextAttention(old, n_context=9)
    completed = parts.attend(old, new_rows)
    out = completed[:, :, context]
    prompt_weights, _ = parts.prompt_weights(k[:, :, prompts])
    assert out.dtype == dtype and out.shape == reference.shape
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    fused = F.scaled_dot_product_attention(q, k, v)[:, :, context]
    fused_error = (fused.double() - reference).abs().max()
    assert (out.double() - reference).abs().max() <= 2 * fused_error + 1e-6
    torch.testing.assert_close(prompt_weights.double(), weights[:, :, context, prompts],
                               rtol=0, atol=1e-5)
    # Gradients for every position, as close to the fp64 ones as the fused attention's.
    upstream = torch.randn(completed.shape, generator=generator).to(dtype)
    grad_old, grad_new = torch.autograd.grad(completed, (old, new_rows), upstream)
    assert grad_old.dtype == grad_new.dtype == dtype
    assert grad_old.stride() == old.stride()  # laid out as the fused projection's output
    assert not grad_old[..., prompts, :].any()
    grads = grad_old.clone()
    grads[..., prompts, :] = grad_new
    fused = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v), (q, k, v), upstream)
    exact = [t.double().detach().requires_grad_() for t in (q, k, v)]
    weights = torch.softmax(exact[0] @ exact[1].transpose(-1, -2) / 8 ** 0.5, dim=-1)
    expected = torch.autograd.grad(weights @ exact[2], exact, upstream.double())
    for got, theirs, want in zip(grads, fused, expected):
        fused_error = (theirs.double() - want).abs().max()
        assert (got.double() - want).abs().max() <= 2 * fused_error + 1e-5 * want.abs().max()
        assert want.abs().max() > 0.1
    assert weights[:, :, context, prompts].max() > 0.1  # the prompt keys matter


@pytest.mark.parametrize("attn_pool", ["per_sample", "authors"])
def test_scoring_the_image_context_once_gives_the_logits_and_gradients_of_scoring_it_twice(
        monkeypatch, attn_pool):
    torch.manual_seed(0)
    model = bmip_model(**{"TRAINER.BMIP.ATTN_POOL": attn_pool})
    set_weight_heads(model.prompt_learner, weight=20.0, bias=-2.0)  # w follows A closely
    one_hot_passes = []
    original = bmip.layer_attention_to_prompts

    def counted(layer, queries, prompt_keys):
        one_hot_passes.append(layer.eot is None)  # True: an image layer
        return original(layer, queries, prompt_keys)

    monkeypatch.setattr(bmip, "layer_attention_to_prompts", counted)
    once = logits_and_gradients(model)
    assert one_hot_passes and not any(one_hot_passes)  # text layers only: images used parts
    one_hot_passes.clear()
    monkeypatch.setattr(prompting.LayerInput, "_context_applies", lambda layer: False)
    twice = logits_and_gradients(model)
    assert any(one_hot_passes)
    assert once[0].std() > 0.05
    torch.testing.assert_close(once[0], twice[0], rtol=0, atol=TOLERANCE)
    assert once[1].keys() == twice[1].keys()
    for name, gradient in twice[1].items():
        torch.testing.assert_close(once[1][name], gradient, rtol=0, atol=TOLERANCE, msg=name)
    assert once[1]["deep_vision.0"].abs().sum() > 0


def test_bf16_training_completes_the_context_in_fp32_as_the_block_attends():
    """bf16 on the CPU with gradients: the context is attended in fp32 and the completed
    attention too (torch's bf16 CPU attention backward is slow), output rounded back to bf16:
    what the block computes itself there (`clip.model.slow_bf16_backward`), gradients
    included."""
    generator = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(2, 11, 3 * 8, generator=generator)
    block = torch.nn.Module()
    block.attn, block.ln_1 = Attention(8, 1), torch.nn.Identity()
    with torch.no_grad():
        block.attn.in_proj_weight.copy_(torch.eye(8).repeat(3, 1))
        block.attn.in_proj_bias.zero_()

    def heads(use_context):
        leaf = x[..., :8].to(torch.bfloat16).requires_grad_()
        layer = prompting.LayerInput(1, leaf, block, 2, None)
        if use_context:
            context = layer.context_attention()
            assert context.out.dtype == context.qkv.dtype == torch.float32  # converted once
            out = context.attend(layer.qkv())
        else:
            q, k, v = layer.qkv()
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
            out = out.to(torch.bfloat16)
        assert out.dtype == torch.bfloat16
        upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
        (grad,) = torch.autograd.grad(out, leaf, upstream.to(out.dtype))
        return out, grad

    block.attn.to(torch.bfloat16)
    (out, grad), (reference, reference_grad) = heads(True), heads(False)
    # One bf16 rounding of fp32 results that differ in their last bits at most.
    torch.testing.assert_close(out, reference, rtol=2 ** -7, atol=1e-3)
    torch.testing.assert_close(grad, reference_grad, rtol=2 ** -7, atol=1e-2)
    assert reference_grad.abs().max() > 0.5


def test_conversion_keeps_the_layout_of_the_fused_projection():
    """`_converted`: the values of `.to(dtype)`, laid out in memory as the input (a block's
    q/k/v view into its fused projection), and the input itself when it has the dtype."""
    projection = torch.randn(2, 5, 3 * 4 * 8).to(torch.bfloat16)
    qkv = projection.view(2, 5, 3, 4, 8).permute(2, 0, 3, 1, 4)
    converted = prompting._converted(qkv, torch.float32)
    assert converted.dtype == torch.float32 and converted.stride() == qkv.stride()
    assert torch.equal(converted, qkv.to(torch.float32))
    assert prompting._converted(qkv, torch.bfloat16) is qkv
    sliced = qkv[:, :, :, 1:4]  # not dense in memory: converted as `.to` does
    assert torch.equal(prompting._converted(sliced, torch.float32), sliced.float())
