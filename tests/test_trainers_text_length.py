"""Class prompts at their real length (MODEL.CUT_TEXT_AT_EOT): every trainer's text tower runs
the sequences cut after the batch's last EOT token, with positions and causal mask cut to match,
and computes the features, logits, gradients and BMIP text statistic of the full 77 positions."""
import pytest
import torch

import clip
import trainers.bmip as bmip
from dassl.engine import TRAINER_REGISTRY
from tests.helpers.trainers import CLASSNAMES, record_block_inputs, tiny_clip, trainer_cfg
from tests.helpers.trainers import logits_and_gradients as step_and_logits
from trainers.prompting import PromptTrainer
from trainers.zsclip import encode_texts

# Within fp32 rounding: the cut changes only the shapes of the products, not what is summed.
TOLERANCE = 1e-5
CONTEXT_LENGTH = 77
TINY_LAYERS = 3


def prompt_trainers():
    return sorted(name for name, cls in TRAINER_REGISTRY._obj_map.items()
                  if issubclass(cls, PromptTrainer))


def build(trainer, clip_model, **opts):
    """The model `trainer` registers, built on `clip_model` as its build_model does."""
    cls = TRAINER_REGISTRY.get(trainer)
    cfg = trainer_cfg(trainer, **opts)
    for section in cfg.TRAINER.values():  # prompt depths that fit the 3-layer tiny CLIP
        for key, value in getattr(section, "items", dict)():
            if "DEPTH" in key and isinstance(value, int) and value > TINY_LAYERS:
                section[key] = TINY_LAYERS
    trainer = cls.__new__(cls)  # the trainer's own build methods, without data or engine
    trainer.cfg = cfg
    learner = trainer.build_prompt_learner(CLASSNAMES, clip_model)
    return trainer.build_custom_clip(clip_model, learner)


def vary_weights_with_attention(model):
    """BMIP's weight heads made steep, so its logits follow the attention statistic closely."""
    for name in ("vision_weight_heads", "text_weight_heads"):
        for head in getattr(model.prompt_learner, name, ()):
            with torch.no_grad():
                head.weight.fill_(20.0)
                head.bias.fill_(-2.0)


def logits_and_gradients(model, cut):
    model.text_encoder.cut_at_eot = cut
    lengths, _, handles = record_block_inputs(model.text_encoder.transformer.resblocks[:1])
    logits, gradients = step_and_logits(model)
    for handle in handles:
        handle.remove()
    return logits, gradients, lengths[0].shape[1]


def test_every_prompt_trainer_is_checked():
    assert {"BMIP", "CoCoOp", "CoOp", "IVLP", "MaPLe", "VPT"} <= set(prompt_trainers())


@pytest.mark.parametrize("trainer", prompt_trainers())
def test_cut_text_gives_the_full_length_logits_and_gradients(trainer):
    torch.manual_seed(0)
    model = build(trainer, tiny_clip())
    vary_weights_with_attention(model)
    assert model.text_encoder.cut_at_eot  # the default
    cut_logits, cut_gradients, cut_length = logits_and_gradients(model, cut=True)
    full_logits, full_gradients, full_length = logits_and_gradients(model, cut=False)
    last_eot = int(model.prompt_learner.tokenized_prompts.argmax(dim=-1).max())
    assert (cut_length, full_length) == (last_eot + 1, CONTEXT_LENGTH)
    assert cut_length < CONTEXT_LENGTH / 2
    assert full_logits.std() > 0.01  # not a trivial match
    torch.testing.assert_close(cut_logits, full_logits, rtol=0, atol=TOLERANCE)
    assert cut_gradients.keys() == full_gradients.keys() and cut_gradients
    for name, gradient in full_gradients.items():
        torch.testing.assert_close(cut_gradients[name], gradient, rtol=0, atol=TOLERANCE,
                                   msg=name)


@pytest.mark.parametrize("attn_pool", bmip.ATTN_POOLS)
def test_bmip_text_statistic_is_the_full_length_one(attn_pool, monkeypatch):
    model = build("BMIP", tiny_clip(), **{"TRAINER.BMIP.ATTN_POOL": attn_pool})
    statistics = []
    for name in ("text_attention", "text_attention_authors"):
        original = getattr(bmip, name)
        monkeypatch.setattr(bmip, name, lambda layer, f=original: statistics.append(f(layer))
                            or statistics[-1])
    runs = []
    for cut in (True, False):
        statistics.clear()
        model.text_encoder.cut_at_eot = cut
        with torch.no_grad():
            model.encode_text()
        runs.append(list(statistics))
    # Layers 1 and 2 of the tiny CLIP; the authors' mode stops the text replacement one earlier.
    assert len(runs[0]) == len(runs[1]) == (2 if attn_pool == "per_sample" else 1)
    for cut, full in zip(*runs):
        torch.testing.assert_close(cut, full, rtol=0, atol=TOLERANCE)
    if attn_pool == "per_sample":
        assert min(statistic.min() for statistic in runs[0]) > 0


def test_zero_shot_text_features_are_the_full_length_ones():
    clip_model = tiny_clip()
    texts = [f"a photo of a {name}." for name in CLASSNAMES] + ["a much longer prompt " * 5]
    lengths, _, handles = record_block_inputs(clip_model.transformer.resblocks[:1])
    cut = encode_texts(clip_model, texts, "cpu")
    cut_length = lengths[0].shape[1]
    clip_model.cut_at_eot = False
    full = encode_texts(clip_model, texts, "cpu")
    for handle in handles:
        handle.remove()
    assert cut_length == int(clip.tokenize(texts).argmax(dim=-1).max()) + 1 < CONTEXT_LENGTH
    assert lengths[0].shape[1] == CONTEXT_LENGTH
    torch.testing.assert_close(cut, full, rtol=0, atol=TOLERANCE)


def test_the_switch_reaches_the_models_through_the_config(tmp_path):
    from tests.helpers.trainers import write_tiny_clip
    from trainers.prompting import load_clip

    clip_file = write_tiny_clip(tmp_path / "clip.pt")
    cfg = trainer_cfg("MaPLe", **{"MODEL.CUT_TEXT_AT_EOT": False})
    clip_model = load_clip(str(clip_file), "fp32", cfg.MODEL.CUT_TEXT_AT_EOT)
    assert not clip_model.cut_at_eot
    model = build("MaPLe", clip_model)
    assert not model.text_encoder.cut_at_eot
    assert load_clip(str(clip_file)).cut_at_eot
