"""BMIP's statistic without a second projection: the queries and keys a prompted layer's
attention computes are taken for the statistic, and the layer's attention reuses them with only
the prompt positions recomputed. Logits and gradients equal those of the computation before
(the statistic projected separately, the block projecting everything itself), in both towers."""
import pytest
import torch
import torch.nn.functional as F

from clip.model import Attention
from tests.helpers.trainers import images
from tests.test_bmip_model import N_CTX, bmip_model, set_weight_heads
from trainers import prompting

TOLERANCE = 1e-5


def separate_projection(layer):
    """The computation before the reuse: the statistic's own projection, never kept."""
    return layer.block.attn.qkv(layer.block.ln_1(layer.x))


def logits_and_gradients(model):
    model.train()
    model.zero_grad()
    F.cross_entropy(model(images()), torch.tensor([0, 1, 2])).backward()
    gradients = {name: p.grad.clone() for name, p in model.prompt_learner.named_parameters()
                 if p.grad is not None}
    model.eval()
    with torch.no_grad():
        logits = model(images(seed=5))
    return logits, gradients


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
