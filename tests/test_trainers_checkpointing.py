"""Gradient checkpointing (MODEL.GRAD_CHECKPOINTING): the same loss and prompt gradients with and
without it, each CLIP block run again in backward only while training with grad enabled, eval
logits unchanged; the trainers turn it on from the config."""
import pytest
import torch
import torch.nn.functional as F

from dassl.engine import build_trainer
from tests.helpers.trainers import (CLASSNAMES, TINY_SIZES, images, tiny_clip, toy_trainer_cfg,
                                    trainer_cfg, write_tiny_clip)
from trainers.bmip import BMIPPromptLearner
from trainers.cocoop import CoCoOpCLIP, CoCoOpPromptLearner
from trainers.maple import MultiModalPromptLearner
from trainers.prompting import PromptedCLIP

LABELS = torch.tensor([0, 3, 4])


def maple():
    clip_model = tiny_clip()
    cfg = trainer_cfg("MaPLe", **{"TRAINER.MAPLE.PROMPT_DEPTH": 3})
    return PromptedCLIP(clip_model, MultiModalPromptLearner(cfg, CLASSNAMES, clip_model))


def bmip():
    clip_model = tiny_clip()
    cfg = trainer_cfg("BMIP", **{"TRAINER.BMIP.PROMPT_DEPTH": 3, "TRAINER.BMIP.N_CTX": 2})
    return PromptedCLIP(clip_model, BMIPPromptLearner(cfg, CLASSNAMES, clip_model))


def cocoop():
    clip_model = tiny_clip()
    cfg = trainer_cfg("CoCoOp", **{"TRAINER.COCOOP.CTX_INIT": "a photo of a"})
    learner = CoCoOpPromptLearner(cfg, CLASSNAMES, clip_model)
    # The tiny meta-net has one hidden ReLU unit: keep it active so that gradients reach it.
    with torch.no_grad():
        learner.meta_net.linear1.bias.fill_(1.0)
    return CoCoOpCLIP(clip_model, learner)


BUILDERS = {"MaPLe": maple, "BMIP": bmip, "CoCoOp": cocoop}


def count_block_forwards(model):
    """Forwards of CLIP's blocks per tower ({"text": n, "image": n}), and the hook handles (a
    pre-hook: a recomputation stops early, once it has what backward needs)."""
    calls, handles = {"text": 0, "image": 0}, []
    for tower, encoder in (("text", model.text_encoder), ("image", model.image_encoder)):
        for block in encoder.transformer.resblocks:
            handles.append(block.register_forward_pre_hook(
                lambda *args, tower=tower: calls.__setitem__(tower, calls[tower] + 1)))
    return calls, handles


def training_step(model):
    """Loss, the prompt learner's gradients and how many block forwards the step ran."""
    model.train()
    model.prompt_learner.zero_grad()
    calls, handles = count_block_forwards(model)
    loss = F.cross_entropy(model(images()), LABELS)
    loss.backward()
    for handle in handles:
        handle.remove()
    grads = {name: p.grad.clone() for name, p in model.prompt_learner.named_parameters()}
    return loss.detach(), grads, calls


@pytest.mark.parametrize("method", list(BUILDERS))
def test_checkpointing_gives_the_same_loss_and_gradients_recomputing_each_block(method):
    model = BUILDERS[method]()
    loss, grads, plain_calls = training_step(model)
    model.set_grad_checkpointing()
    checkpointed_loss, checkpointed_grads, checkpointed_calls = training_step(model)

    # The image tower of CoCoOp has no prompts: no gradient flows through it, nothing is recomputed.
    image_runs = 2 if model.prompt_learner.image_prompts() is not None else 1
    assert checkpointed_calls == {"text": 2 * plain_calls["text"],
                                  "image": image_runs * plain_calls["image"]}
    torch.testing.assert_close(checkpointed_loss, loss)
    assert checkpointed_grads.keys() == grads.keys()
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, f"no gradient reaches {name}"
        torch.testing.assert_close(checkpointed_grads[name], grad, msg=name)


@pytest.mark.parametrize("method", list(BUILDERS))
def test_eval_is_not_checkpointed_and_gives_the_same_logits(method):
    model = BUILDERS[method]()
    model.eval()
    with torch.no_grad():
        plain = model(images())
    model.set_grad_checkpointing()
    model.eval()
    with torch.no_grad():
        checkpointed = model(images())
    torch.testing.assert_close(checkpointed, plain)
    for encoder in (model.text_encoder, model.image_encoder):
        assert not encoder.grad_checkpointing
    model.clear_text_cache()
    calls, handles = count_block_forwards(model)
    model(images()).sum().backward()  # eval mode with grad: still one forward per block
    for handle in handles:
        handle.remove()
    assert calls == {"text": TINY_SIZES["transformer_layers"], "image": TINY_SIZES["vision_layers"]}


def test_the_config_key_turns_it_on_in_the_trainer(tmp_path, capsys):
    clip_file = write_tiny_clip(tmp_path / "tiny-vit.pt")
    cfg = toy_trainer_cfg("MaPLe", "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", clip_file, tmp_path,
                          tmp_path / "out", "TRAINER.MAPLE.PROMPT_DEPTH", 3,
                          "MODEL.GRAD_CHECKPOINTING", True)
    model = build_trainer(cfg).model
    assert "Gradient checkpointing" in capsys.readouterr().out
    assert model.training and model.text_encoder.grad_checkpointing
    assert model.image_encoder.grad_checkpointing
    assert trainer_cfg("MaPLe").MODEL.GRAD_CHECKPOINTING is False


@pytest.mark.parametrize("method", list(BUILDERS))
def test_text_tower_alone_is_checkpointed_above_the_class_threshold(method):
    """MODEL.TEXT_CHECKPOINT_CLASSES: above that many classes, training recomputes the text
    tower's blocks (not the image tower's), with the logits, loss and gradients of the plain
    path; at or below it nothing changes."""
    model = BUILDERS[method]()
    model.set_text_checkpoint_classes(-1)   # never: the unchanged path
    model.train()
    plain_logits = model(images())
    loss, grads, plain_calls = training_step(model)
    model.set_text_checkpoint_classes(len(CLASSNAMES))   # not above: still the plain path
    assert training_step(model)[2] == plain_calls
    model.set_text_checkpoint_classes(len(CLASSNAMES) - 1)
    assert model.text_encoder.grad_checkpointing and not model.image_encoder.grad_checkpointing
    model.train()
    checkpointed_logits = model(images())
    checkpointed_loss, checkpointed_grads, checkpointed_calls = training_step(model)
    assert checkpointed_calls == {"text": 2 * plain_calls["text"], "image": plain_calls["image"]}
    torch.testing.assert_close(checkpointed_logits, plain_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(checkpointed_loss, loss, rtol=1e-5, atol=1e-5)
    assert checkpointed_grads.keys() == grads.keys()
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, f"no gradient reaches {name}"
        torch.testing.assert_close(checkpointed_grads[name], grad, rtol=1e-5, atol=1e-5, msg=name)
    model.eval()
    assert not model.text_encoder.grad_checkpointing


def test_the_text_threshold_comes_from_the_config(tmp_path, capsys):
    clip_file = write_tiny_clip(tmp_path / "tiny-vit.pt")
    cfg = toy_trainer_cfg("MaPLe", "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", clip_file, tmp_path,
                          tmp_path / "out", "TRAINER.MAPLE.PROMPT_DEPTH", 3,
                          "MODEL.TEXT_CHECKPOINT_CLASSES", 1)
    model = build_trainer(cfg).model
    assert "the text tower's blocks are recomputed" in capsys.readouterr().out
    assert model.training and model.text_encoder.grad_checkpointing
    assert not model.image_encoder.grad_checkpointing
    assert trainer_cfg("MaPLe").MODEL.TEXT_CHECKPOINT_CLASSES == 256


def test_a_checkpointed_bmip_layer_projects_twice_and_scores_its_prompts_once(monkeypatch):
    """A recomputed BMIP layer runs its callback again on the same input: the q/k/v projections
    (the callback's, reused by the block, and the new prompt rows') run twice, as every other
    operation of a checkpointed block, none more; the attention statistic is computed once per
    layer and step (`LayerInput.reuse`), checkpointed or not."""
    import trainers.bmip as bmip_module

    model = bmip()
    statistics = []
    original = bmip_module.attention_to_prompts
    monkeypatch.setattr(bmip_module, "attention_to_prompts",
                        lambda *args, **kwargs: statistics.append(1) or original(*args, **kwargs))
    projections = {"text": 0}
    for block in model.text_encoder.transformer.resblocks:
        for name in ("qkv", "qkv_at"):
            method = getattr(block.attn, name)

            def counted(*args, method=method, **kwargs):
                projections["text"] += 1
                return method(*args, **kwargs)
            monkeypatch.setattr(block.attn, name, counted)

    model.set_text_checkpoint_classes(-1)
    _, plain_grads, _ = training_step(model)
    plain_projections, plain_statistics = projections["text"], len(statistics)
    assert plain_statistics == 2  # the text layers 1 and 2 of depth 3 (the image side's come
    # from the context's attention on the CPU, not from attention_to_prompts)
    model.set_text_checkpoint_classes(len(CLASSNAMES) - 1)
    projections["text"], statistics[:] = 0, []
    _, grads, _ = training_step(model)
    assert projections["text"] == 2 * plain_projections
    assert len(statistics) == plain_statistics
    # The recomputation runs the first pass's operations on the same input: the same gradients,
    # bit for bit (they differed by ~2e-7 when the recomputed block projected q/k/v itself).
    for name, grad in plain_grads.items():
        assert torch.equal(grads[name], grad), name
