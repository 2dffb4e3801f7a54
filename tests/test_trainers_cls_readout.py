"""The prompted towers compute their last block only where it is read out (`forward(rows=...)`):
the image's [CLS] and each class prompt's EOT. Every trainer's logits and gradients equal those
of running the whole last blocks."""
import pytest
import torch

from clip.model import ResidualAttentionBlock, take_rows
from tests.helpers.trainers import logits_and_gradients, tiny_clip
from tests.test_trainers_text_length import build, prompt_trainers, vary_weights_with_attention

TOLERANCE = 1e-5


def whole_block_then_rows(forward):
    """The reference: the whole block, then the rows."""
    def run(block, x, attn_mask=None, qkv=None, heads=None, rows=None):
        out = forward(block, x, attn_mask, qkv, heads)
        return out if rows is None else take_rows(out, rows, 1)
    return run


@pytest.mark.parametrize("trainer", prompt_trainers())
def test_reading_the_last_blocks_out_only_gives_the_logits_and_gradients_of_whole_blocks(
        trainer, monkeypatch):
    torch.manual_seed(0)
    model = build(trainer, tiny_clip())
    vary_weights_with_attention(model)
    outputs = []
    handles = [encoder.transformer.resblocks[-1].register_forward_hook(
        lambda module, args, out: outputs.append(out.shape[1]))
        for encoder in (model.image_encoder, model.text_encoder)]
    at_cls = logits_and_gradients(model)
    # Both last blocks ran at one position per sequence, in training and evaluation.
    assert set(outputs) == {1} and len(outputs) >= 3
    outputs.clear()
    monkeypatch.setattr(ResidualAttentionBlock, "forward",
                        whole_block_then_rows(ResidualAttentionBlock.forward))
    whole = logits_and_gradients(model)
    for handle in handles:
        handle.remove()
    assert set(outputs) == {1}  # (the hook sees the rows the reference returns)
    assert whole[0].std() > 0.01
    torch.testing.assert_close(at_cls[0], whole[0], rtol=0, atol=TOLERANCE)
    assert at_cls[1].keys() == whole[1].keys() and at_cls[1]
    for name, gradient in whole[1].items():
        torch.testing.assert_close(at_cls[1][name], gradient, rtol=0, atol=TOLERANCE, msg=name)
