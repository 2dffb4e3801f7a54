"""CoPrompt over a choice of prompting: adapters and each PROMPTING's learner train, the
description and image targets are plain CLIP's, the loss terms equal a direct computation, and
the class descriptions are fetched with a checksum or read from a local file (generated here)."""
import hashlib
import json
import random

import pytest
import torch
import torch.nn.functional as F

import clip
from dassl.data.datasets import DatasetError
from datasets import descriptions as descriptions_module
from datasets.descriptions import fetch_descriptions, load_descriptions
from tests.helpers.trainers import CLASSNAMES, images, snapshot, tiny_clip, trainer_cfg
from trainers.coprompt import CoPromptCLIP, CoPromptLoss, add_adapters
from trainers.regularised import prompting_of

TINY_DEPTHS = {"TRAINER.IVLP.PROMPT_DEPTH_TEXT": 2, "TRAINER.IVLP.PROMPT_DEPTH_VISION": 2,
               "TRAINER.MAPLE.PROMPT_DEPTH": 3, "TRAINER.BMIP.PROMPT_DEPTH": 3}
LABELS = torch.tensor([0, 3, 4])


def generated_descriptions(counts=(3, 3, 3, 3, 3)):
    return {name.replace("_", " "): [f"a {name} seen from place {i}." for i in range(count)]
            for name, count in zip(CLASSNAMES, counts)}


def coprompt_model(prompting, seed=0):
    torch.manual_seed(seed)
    cfg = trainer_cfg("CoPrompt", **{"TRAINER.COPROMPT.PROMPTING": prompting, **TINY_DEPTHS})
    clip_model = tiny_clip()
    learner = prompting_of(cfg, "COPROMPT").learner(cfg, CLASSNAMES, clip_model)
    add_adapters(learner, clip_model.text_projection.shape[1], 4)
    return clip_model, CoPromptCLIP(clip_model, learner, 0.1, 0.2)


def objective(model, distance="cosine", counts=(3, 3, 3, 3, 3), seed=0):
    table = generated_descriptions(counts)
    sentences = [table[name.replace("_", " ")] for name in CLASSNAMES]
    return CoPromptLoss(model, sentences, weight=2.0, distance=distance, rng=random.Random(seed))


@pytest.mark.parametrize("prompting", ["ivlp", "maple", "bmip"])
def test_each_prompting_trains_with_the_adapters_and_clip_stays_frozen(prompting):
    clip_model, model = coprompt_model(prompting)
    frozen = {k: v for k, v in snapshot(model).items() if not k.startswith("prompt_learner.")}
    loss_fn = objective(model)
    optimizer = torch.optim.SGD(model.prompt_learner.parameters(), lr=0.5)
    batch, other, labels = images(5, seed=1), images(5, seed=2), torch.arange(5)
    losses = []
    for step in range(6):
        loss, _, _ = loss_fn(batch, other, labels)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            for name, param in model.prompt_learner.named_parameters():
                assert param.grad is not None and param.grad.abs().sum() > 0, name
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    names = [name for name, _ in model.prompt_learner.named_parameters()]
    assert any(name.startswith("adapter_image.") for name in names)
    assert any("weight_heads" in name for name in names) == (prompting == "bmip")
    after = snapshot(model)
    for key, value in frozen.items():
        assert torch.equal(after[key], value), key


@pytest.mark.parametrize("distance", ["cosine", "mse"])
def test_each_loss_term_equals_a_direct_computation(distance):
    clip_model, model = coprompt_model("maple")
    loss_fn = objective(model, distance, seed=5)
    k = random.Random(5).randrange(3)
    view, other = images(), images(seed=9)
    with torch.no_grad():
        total, logits, terms = loss_fn(view, other, LABELS)
        learner = model.prompt_learner
        raw_image = model.image_encoder(view, learner.image_prompts())
        image = F.normalize(0.1 * learner.adapter_image(raw_image) + 0.9 * raw_image, dim=-1)
        text = model.text_features()
        direct_logits = clip_model.logit_scale.exp() * image @ text.t()
        table = generated_descriptions()
        text_targets = F.normalize(clip_model.encode_text(clip.tokenize(
            [table[name.replace("_", " ")][k] for name in CLASSNAMES])), dim=-1)
        image_targets = F.normalize(clip_model.encode_image(other), dim=-1)
        if distance == "cosine":
            d_text = 1 - (text * text_targets).sum(-1).mean()
            d_image = 1 - (image * image_targets).sum(-1).mean()
        else:
            d_text = ((text - text_targets) ** 2).mean()
            d_image = ((image - image_targets) ** 2).mean()
    assert torch.allclose(logits, direct_logits, atol=1e-5)
    expected = {"ce": F.cross_entropy(direct_logits, LABELS), "consistency_text": 2 * d_text,
                "consistency_image": 2 * d_image}
    for name, value in expected.items():
        assert torch.allclose(terms[name], value, atol=1e-5), name
    assert terms["consistency_text"] > 0
    assert torch.allclose(total, sum(expected.values()), atol=1e-5)


def test_description_features_are_computed_once_and_classes_may_have_fewer(monkeypatch):
    _, model = coprompt_model("maple")
    loss_fn = objective(model, counts=(1, 2, 3, 3, 3), seed=1)
    calls = []
    encode = model.frozen_text_features
    monkeypatch.setattr(model, "frozen_text_features",
                        lambda tokens: calls.append(1) or encode(tokens))
    features = loss_fn.description_features()
    assert [len(f) for f in features] == [1, 2, 3, 3, 3] and len(calls) == 5
    targets = [loss_fn.text_targets() for _ in range(6)]
    assert len(calls) == 5
    for drawn in targets:
        k = next(k for k in range(3) if torch.equal(drawn[4], features[4][k]))
        assert torch.equal(drawn[0], features[0][0]) and torch.equal(drawn[1], features[1][k % 2])


def test_descriptions_are_read_by_class_name_with_clear_errors(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(generated_descriptions()))
    sentences = load_descriptions(str(path), CLASSNAMES)
    assert sentences[2] == generated_descriptions()["herbaceous vegetation"]
    with pytest.raises(DatasetError, match="coprompt-descriptions"):
        load_descriptions(str(tmp_path / "absent.json"), CLASSNAMES)
    path.write_text(json.dumps({"forest": ["a forest."]}))
    with pytest.raises(DatasetError, match="no descriptions for 4 classes"):
        load_descriptions(str(path), CLASSNAMES)


def test_prepare_fetches_descriptions_with_their_checksum_and_says_what_to_do_offline(
        tmp_path, monkeypatch):
    archives = tmp_path / "archives"
    archives.mkdir()
    data = json.dumps(generated_descriptions()).encode()
    (archives / "eurosat_prompt.json").write_bytes(data)
    # The published file's MD5 does not match a generated file: refused.
    with pytest.raises(DatasetError, match="expected MD5"):
        fetch_descriptions("EuroSAT", tmp_path / "data", archives_dir=str(archives))
    monkeypatch.setitem(descriptions_module.FILES, "EuroSAT",
                        ("eurosat_prompt.json", hashlib.md5(data).hexdigest()))
    path = fetch_descriptions("EuroSAT", tmp_path / "data", archives_dir=str(archives))
    assert path.endswith("coprompt_descriptions/eurosat_prompt.json")
    assert open(path, "rb").read() == data
    # Offline (an address that refuses): the message names the local-file options.
    with pytest.raises(DatasetError, match="TRAINER.COPROMPT.DESCRIPTIONS"):
        fetch_descriptions("DescribableTextures", tmp_path / "data", mirror="http://127.0.0.1:9")


def test_an_upstream_coprompt_checkpoint_loads_with_its_adapters_and_clip_copy():
    """Upstream CoPrompt saves MaPLe's learner keys, its adapters on the CustomCLIP
    (adapter_image.*, adapter_text.*) and a whole second CLIP (model_distill.*, checked as CLIP's)."""
    from tests.helpers.trainers import fp16_exact_values, upstream_frozen_entries
    from trainers.coprompt import CoPrompt
    from trainers.prompting import learner_state_dict, load_learner_state

    clip_model, source = coprompt_model("maple")
    values = fp16_exact_values(learner_state_dict(source), seed=2)
    load_learner_state(source, values)
    upstream = dict(upstream_frozen_entries(clip_model))
    for key, value in values.items():
        name = key.removeprefix("prompt_learner.")
        upstream[name if name.startswith("adapter_") else key] = value
    for key, value in clip_model.state_dict().items():
        upstream[f"model_distill.{key}"] = value
    trainer = CoPrompt.__new__(CoPrompt)
    trainer.cfg = trainer_cfg("CoPrompt", **TINY_DEPTHS)
    _, target = coprompt_model("maple", seed=1)
    load_learner_state(target, upstream, trainer.rename_checkpoint_key, "CoPrompt")
    with torch.no_grad():
        assert torch.allclose(target(images()), source(images()), atol=1e-6)
    del upstream["adapter_text.fc.2.weight"]
    with pytest.raises(Exception, match="adapter_text.fc.2.weight"):
        load_learner_state(target, upstream, trainer.rename_checkpoint_key, "CoPrompt")
