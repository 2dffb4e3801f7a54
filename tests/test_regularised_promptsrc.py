"""PromptSRC over a choice of prompting: each PROMPTING choice runs its own learner, the frozen
targets are plain CLIP's, each loss term equals a direct computation, a few steps lower the loss,
CLIP stays frozen, and GPA's final prompts are the Gaussian-weighted average of the epochs'."""
import math

import pytest
import torch
import torch.nn.functional as F

import clip
from dassl.config import ConfigError
from dassl.engine import build_trainer
from dassl.utils import set_random_seed
from tests.helpers.trainers import (CLASSNAMES, images, snapshot, tiny_clip, toy_trainer_cfg,
                                    trainer_cfg, write_tiny_clip)
from trainers.bmip import BMIPPromptLearner
from trainers.ivlp import VLPromptLearner
from trainers.maple import MultiModalPromptLearner
from trainers.promptsrc import (IMAGENET_TEMPLATES, GaussianPromptAggregation, PromptSRCLoss,
                                gpa_weights)
from trainers.prompting import PromptedCLIP, learner_state_dict
from trainers.regularised import prompting_of

# Depths that fit the tiny CLIP's three layers per tower.
TINY_DEPTHS = {"TRAINER.IVLP.PROMPT_DEPTH_TEXT": 2, "TRAINER.IVLP.PROMPT_DEPTH_VISION": 2,
               "TRAINER.MAPLE.PROMPT_DEPTH": 3, "TRAINER.BMIP.PROMPT_DEPTH": 3}
LEARNERS = {"ivlp": VLPromptLearner, "maple": MultiModalPromptLearner, "bmip": BMIPPromptLearner}
LABELS = torch.tensor([0, 3, 4])
# A few of the 60 templates keep the tests fast; the ensemble rule is the same.
TEMPLATES = IMAGENET_TEMPLATES[:3]


def promptsrc_model(prompting, seed=0):
    torch.manual_seed(seed)
    cfg = trainer_cfg("PromptSRC", **{"TRAINER.PROMPTSRC.PROMPTING": prompting, **TINY_DEPTHS})
    clip_model = tiny_clip()
    learner = prompting_of(cfg, "PROMPTSRC").learner(cfg, CLASSNAMES, clip_model)
    return cfg, clip_model, PromptedCLIP(clip_model, learner)


@pytest.mark.parametrize("prompting", list(LEARNERS))
def test_each_prompting_runs_its_own_learner_and_every_parameter_gets_a_gradient(prompting):
    _, _, model = promptsrc_model(prompting)
    learner = model.prompt_learner
    assert type(learner) is LEARNERS[prompting]
    loss, _, _ = PromptSRCLoss(model, 25, 10, TEMPLATES)(images(), LABELS)
    loss.backward()
    for name, param in learner.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    heads = [name for name, _ in learner.named_parameters() if "weight_heads" in name]
    assert bool(heads) == (prompting == "bmip")


def test_classes_are_scored_independently_unless_the_prompting_mixes_them():
    from trainers.coprompt import CoPrompt
    from trainers.promptsrc import PromptSRC

    for trainer in (PromptSRC, CoPrompt):
        section = trainer.SECTION
        for prompting, pool, expected in (("ivlp", "per_sample", True), ("bmip", "per_sample", True),
                                          ("bmip", "authors", False)):
            cfg = trainer_cfg(trainer.__name__, **{f"TRAINER.{section}.PROMPTING": prompting,
                                                   "TRAINER.BMIP.ATTN_POOL": pool})
            assert trainer.scores_classes_independently(cfg) is expected, (trainer, prompting, pool)


def test_an_unknown_prompting_is_a_config_error():
    cfg = trainer_cfg("PromptSRC", **{"TRAINER.PROMPTSRC.PROMPTING": "coop"})
    with pytest.raises(ConfigError, match="ivlp"):
        prompting_of(cfg, "PROMPTSRC")


def test_frozen_targets_are_plain_clip_features():
    _, clip_model, model = promptsrc_model("maple")
    batch = images()
    with torch.no_grad():
        expected_image = F.normalize(clip_model.encode_image(batch), dim=-1)
        tokens = clip.tokenize(["a photo of a forest.", "a river."])
        expected_text = clip_model.encode_text(tokens)
    assert torch.allclose(model.frozen_image_features(batch), expected_image, atol=1e-5)
    assert torch.allclose(model.frozen_text_features(tokens), expected_text, atol=1e-5)
    assert not model.frozen_image_features(batch).requires_grad


def test_text_targets_are_the_template_ensemble_computed_once_per_class_set(monkeypatch):
    _, clip_model, model = promptsrc_model("ivlp")
    objective = PromptSRCLoss(model, 25, 10, TEMPLATES)
    with torch.no_grad():
        total = sum(clip_model.encode_text(clip.tokenize(
            [template.format(name.replace("_", " ")) for name in CLASSNAMES]))
            for template in TEMPLATES)
    expected = F.normalize(total / len(TEMPLATES), dim=-1)
    assert len(IMAGENET_TEMPLATES) == 60
    assert torch.allclose(objective.text_targets(), expected, atol=1e-5)
    calls = []
    encode = model.frozen_text_features
    monkeypatch.setattr(model, "frozen_text_features", lambda tokens: calls.append(1) or encode(tokens))
    objective(images(), LABELS)
    objective(images(), LABELS)
    assert calls == []


def test_each_loss_term_equals_a_direct_computation():
    _, clip_model, model = promptsrc_model("bmip")
    objective = PromptSRCLoss(model, text_weight=25, image_weight=10, templates=TEMPLATES)
    batch = images()
    with torch.no_grad():
        total, logits, terms = objective(batch, LABELS)
        text = F.normalize(model.encode_text(), dim=-1)
        image = F.normalize(model.image_encoder(batch, model.prompt_learner.image_prompts()),
                            dim=-1)
        scale = clip_model.logit_scale.exp()
        direct_logits = scale * image @ text.t()
        text_targets = objective.text_targets()
        image_targets = F.normalize(clip_model.encode_image(batch), dim=-1)
        zs_logits = scale * image_targets @ text_targets.t()
        p_zs = zs_logits.softmax(dim=1)
        kl = (p_zs * (p_zs.log() - direct_logits.log_softmax(dim=1))).sum() / direct_logits.numel()
        expected = {
            "ce": F.cross_entropy(direct_logits, LABELS),
            "scl_text": 25 * (text - text_targets).abs().mean(),
            "scl_image": 10 * (image - image_targets).abs().mean(),
            "scl_logits": kl,
        }
    assert torch.allclose(logits, direct_logits, atol=1e-5)
    for name, value in expected.items():
        assert torch.allclose(terms[name], value, atol=1e-5), name
    assert terms["scl_logits"] > 0 and terms["scl_text"] > 0 and terms["scl_image"] > 0
    assert torch.allclose(total, sum(expected.values()), atol=1e-5)


def test_a_few_steps_lower_the_loss_and_leave_clip_frozen():
    _, clip_model, model = promptsrc_model("maple")
    frozen = {key: value for key, value in snapshot(model).items()
              if not key.startswith("prompt_learner.")}
    objective = PromptSRCLoss(model, 25, 10, TEMPLATES)
    optimizer = torch.optim.Adam(model.prompt_learner.parameters(), lr=0.02)
    batch = images(5, seed=1)
    labels = torch.arange(5)
    losses = []
    for _ in range(8):
        loss, _, _ = objective(batch, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    after = snapshot(model)
    for key, value in frozen.items():
        assert torch.equal(after[key], value), key
    assert all(not p.requires_grad for p in clip_model.parameters())


def test_gpa_weights_are_the_normalised_gaussian_over_epochs():
    weights = gpa_weights(4, mean=2, std=1)
    density = [math.exp(-0.5), 1.0, math.exp(-0.5), math.exp(-2.0)]
    assert weights == pytest.approx([d / sum(density) for d in density])
    with pytest.raises(ConfigError, match="GPA_STD"):
        gpa_weights(4, mean=2, std=0)


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny.pt")


def test_training_ends_with_the_gaussian_average_of_the_epochs_prompts(clip_file, tmp_path):
    cfg = toy_trainer_cfg(
        "PromptSRC", "PromptSRC/vit_b16_c2_ep20_batch4_4ctx_bmip.yaml", clip_file, tmp_path,
        tmp_path / "out", "OPTIM.MAX_EPOCH", 3, "OPTIM.LR", 0.01, "TRAINER.BMIP.PROMPT_DEPTH", 3,
        "TRAINER.BMIP.N_CTX", 2, "TRAINER.PROMPTSRC.GPA_MEAN", 2, "TRAINER.PROMPTSRC.GPA_STD", 1)
    trainer = build_trainer(cfg)
    assert trainer.get_model_names() == ["MultiModalPromptLearner"]
    before = snapshot(trainer.model)
    per_epoch = []
    add = trainer.gpa.add
    trainer.gpa.add = lambda epoch, state: per_epoch.append(
        {k: v.detach().clone() for k, v in state.items()}) or add(epoch, state)
    trainer.train()
    assert len(per_epoch) == 3
    a, b = math.exp(-0.5), 1.0  # N(e; 2, 1) at e = 1, 3 and at e = 2
    weights = [a / (2 * a + b), b / (2 * a + b), a / (2 * a + b)]
    final = learner_state_dict(trainer.model)
    for key, value in final.items():
        expected = sum(w * state[key] for w, state in zip(weights, per_epoch))
        assert torch.allclose(value, expected, atol=1e-6), key
        assert not torch.equal(value, per_epoch[-1][key]), key
    for key, value in snapshot(trainer.model).items():
        if not key.startswith("prompt_learner."):
            assert torch.equal(value, before[key]), key
    # The saved last-epoch checkpoint is the aggregate.
    reloaded = build_trainer(cfg)
    reloaded.load_model(cfg.OUTPUT_DIR, epoch=3)
    for key, value in learner_state_dict(reloaded.model).items():
        assert torch.equal(value, final[key]), key


def test_early_stopping_is_refused_with_the_keys_to_change(clip_file, tmp_path):
    cfg = toy_trainer_cfg("PromptSRC", "PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml", clip_file,
                          tmp_path, tmp_path / "out", "TRAIN.EARLY_STOPPING", True)
    with pytest.raises(ConfigError, match="EARLY_STOPPING"):
        build_trainer(cfg)


def test_gpa_sum_is_carried_in_the_engine_state():
    aggregation = GaussianPromptAggregation([0.25, 0.75])
    aggregation.add(0, {"prompt_learner.ctx": torch.ones(2)})
    aggregation.add(1, {"prompt_learner.ctx": torch.full((2,), 3.0)})
    assert torch.allclose(aggregation.total["prompt_learner.ctx"], torch.full((2,), 2.5))


def test_an_upstream_promptsrc_checkpoint_loads_with_its_frozen_encoder_copy():
    """Upstream PromptSRC saves IVLP's keys plus its zero-shot image encoder inside the learner
    (prompt_learner.ZS_image_encoder.*): CLIP's weights, checked and skipped."""
    from tests.helpers.trainers import fp16_exact_values, upstream_frozen_entries
    from trainers.promptsrc import PromptSRC
    from trainers.prompting import load_learner_state

    cfg, clip_model, source = promptsrc_model("ivlp")
    values = fp16_exact_values(learner_state_dict(source), seed=4)
    load_learner_state(source, values)
    p = "prompt_learner."
    upstream = dict(upstream_frozen_entries(clip_model))
    upstream[p + "ctx"] = values[p + "text.ctx"]
    upstream["image_encoder.VPT"] = values[p + "vision.ctx"]
    for tower, ours in (("text_encoder", "text"), ("image_encoder", "vision")):
        upstream[f"{tower}.transformer.resblocks.1.VPT_shallow"] = values[f"{p}{ours}.deep.0"]
    for key, value in clip_model.visual.state_dict().items():
        upstream[f"{p}ZS_image_encoder.{key}"] = value.half()
    trainer = PromptSRC.__new__(PromptSRC)
    trainer.cfg = cfg
    _, _, target = promptsrc_model("ivlp", seed=1)
    load_learner_state(target, upstream, trainer.rename_checkpoint_key, "PromptSRC")
    with torch.no_grad():
        assert torch.allclose(target(images()), source(images()), atol=1e-6)
    upstream[p + "ZS_image_encoder.proj"] = torch.zeros(3, 3)
    with pytest.raises(Exception, match="frozen CLIP"):
        load_learner_state(target, upstream, trainer.rename_checkpoint_key, "PromptSRC")


class Interrupted(Exception):
    pass


def check_a_resumed_run_aggregates_the_same_epochs(clip_file, tmp_path):
    def cfg_for(output):
        return toy_trainer_cfg(
            "PromptSRC", "PromptSRC/vit_b16_c2_ep20_batch4_2ctx_maple.yaml", clip_file, tmp_path,
            tmp_path / output, "OPTIM.MAX_EPOCH", 3, "OPTIM.LR", 0.01,
            "TRAINER.MAPLE.PROMPT_DEPTH", 2, "TRAINER.PROMPTSRC.GPA_MEAN", 2,
            "TRAINER.PROMPTSRC.GPA_STD", 1)

    set_random_seed(1)
    uninterrupted = build_trainer(cfg_for("full"))
    uninterrupted.train()
    set_random_seed(1)  # the same initial prompts and data order
    killed = build_trainer(cfg_for("killed"))
    after_epoch = killed.after_epoch

    def stop_after_the_second_epoch():
        after_epoch()
        if killed.epoch == 1:
            raise Interrupted
    killed.after_epoch = stop_after_the_second_epoch
    with pytest.raises(Interrupted):
        killed.train()
    resumed = build_trainer(cfg_for("killed"))
    resumed.train()
    assert resumed.start_epoch == 2
    expected = learner_state_dict(uninterrupted.model)
    for key, value in learner_state_dict(resumed.model).items():
        assert torch.allclose(value, expected[key], atol=1e-6), key


def test_a_resumed_run_aggregates_the_same_epochs(clip_file, tmp_path):
    """GPA's running sum travels in the checkpoint: killed after epoch 2 of 3 and resumed, the
    final prompts equal those of an uninterrupted run. In a fresh interpreter: after some other
    tests of the suite, the two in-process runs were seen to diverge (the cause, some global
    state those tests leave, is not identified)."""
    import subprocess
    import sys

    from tests.helpers.trainers import ROOT

    code = ("import pathlib, sys; from tests.test_regularised_promptsrc import "
            "check_a_resumed_run_aggregates_the_same_epochs as check; "
            "check(sys.argv[1], pathlib.Path(sys.argv[2]))")
    result = subprocess.run([sys.executable, "-c", code, str(clip_file), str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


def test_templates_clip_ensembles_clips_80_templates(clip_file, tmp_path):
    from trainers.promptsrc import CLIP_IMAGENET_TEMPLATES

    cfg = toy_trainer_cfg("PromptSRC", "PromptSRC/vit_b16_c2_ep20_batch4_4ctx_bmip_authors.yaml",
                          clip_file, tmp_path, tmp_path / "out", "TRAINER.BMIP.PROMPT_DEPTH", 3)
    trainer = build_trainer(cfg)
    templates = trainer.objective.templates
    # CLIP's 80: PromptSRC's 60 and 20 more (e.g. "a plushie {}."), each once.
    assert len(templates) == len(set(templates)) == 80
    assert set(IMAGENET_TEMPLATES) < set(templates) and "a plushie {}." in templates
    assert templates == CLIP_IMAGENET_TEMPLATES
    model = trainer.model
    with torch.no_grad():  # the authors' teacher: mean of the unnormalised features
        features = torch.stack([model.frozen_text_features(clip.tokenize(
            [t.format(name) for name in model.prompt_learner.classnames]))
            for t in templates], dim=1).mean(dim=1)
    assert torch.allclose(trainer.objective.text_targets(), F.normalize(features, dim=-1), atol=1e-5)
    cfg.defrost()
    cfg.TRAINER.PROMPTSRC.TEMPLATES = "openai"
    with pytest.raises(ConfigError, match="TEMPLATES"):
        build_trainer(cfg)


def _flat(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("trainer,paper,authors,differences", [
    ("PromptSRC", "PromptSRC/vit_b16_c2_ep20_batch4_4ctx_bmip.yaml",
     "PromptSRC/vit_b16_c2_ep20_batch4_4ctx_bmip_authors.yaml",
     {"TRAINER.BMIP.ATTN_POOL": "authors", "TRAINER.BMIP.DEEP_VISION_INIT": "same",
      "TRAINER.PROMPTSRC.TEMPLATES": "clip"}),
    ("PromptSRC", "PromptSRC/vit_b16_c2_ep20_batch4_4ctx_bmip_cross_datasets.yaml",
     "PromptSRC/vit_b16_c2_ep20_batch4_2ctx_bmip_cross_datasets_authors.yaml",
     {"TRAINER.BMIP.ATTN_POOL": "authors", "TRAINER.BMIP.DEEP_VISION_INIT": "same",
      "TRAINER.PROMPTSRC.TEMPLATES": "clip", "OPTIM.NAME": "sgd", "TRAINER.BMIP.N_CTX": 2,
      "TRAINER.BMIP.PROMPT_DEPTH": 9}),
    ("CoPrompt", "CoPrompt/coprompt_bmip.yaml", "CoPrompt/coprompt_bmip_authors.yaml",
     {"TRAINER.BMIP.ATTN_POOL": "authors", "TRAINER.BMIP.DEEP_VISION_INIT": "same"}),
])
def test_each_authors_config_is_its_paper_reading_config_with_the_authors_settings(
        trainer, paper, authors, differences, clip_file, tmp_path):
    """The `_authors` configs (what produced the paper's Table 4) differ from the paper-reading
    ones only where the authors' code does."""
    flat = {name: _flat(toy_trainer_cfg(trainer, name, clip_file, tmp_path, tmp_path / "out"))
            for name in (paper, authors)}
    changed = {key: value for key, value in flat[authors].items() if flat[paper][key] != value}
    assert changed == differences


def test_text_targets_are_computed_in_fp32_under_a_half_precision_clip():
    """Upstream PromptSRC's teacher is an fp32 copy of CLIP: with CLIP stored in bf16 here, the
    targets equal those of the same weights in fp32, not the bf16 tower's."""
    import copy

    from clip.model import convert_weights_to

    _, clip_model, model = promptsrc_model("ivlp")
    convert_weights_to(clip_model, torch.bfloat16)
    assert model.text_encoder.dtype == torch.bfloat16
    objective = PromptSRCLoss(model, 25, 10, TEMPLATES)
    reference_clip = copy.deepcopy(clip_model).float()
    with torch.no_grad():
        def ensemble(encode):
            total = sum(encode(clip.tokenize([template.format(name.replace("_", " "))
                                              for name in CLASSNAMES])).float()
                        for template in TEMPLATES)
            return F.normalize(total / len(TEMPLATES), dim=-1)
        fp32 = ensemble(reference_clip.encode_text)
        half = ensemble(model.frozen_text_features)
    targets = objective.text_targets()
    assert targets.dtype == torch.float32
    torch.testing.assert_close(targets, fp32, rtol=0, atol=1e-6)
    assert (half - fp32).abs().max() > 1e-4
    assert model.text_encoder.dtype == torch.bfloat16  # the model's own tower is left as it was
