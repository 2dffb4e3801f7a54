"""PREC bf16: CLIP's frozen weights stored in bf16, the learner and its optimizer in fp32, on CPU;
fp16 / amp configs on a CPU with native bf16 run bf16 and say so; bf16 logits agree with fp32."""
import pytest
import torch
import torch.nn.functional as F

import dassl.engine.trainer as engine
from dassl.engine import build_trainer
from tests.helpers.trainers import images, tiny_clip, toy_trainer_cfg, write_tiny_clip
from tests.test_trainers_text_length import build, prompt_trainers
from trainers.prompting import WEIGHT_DTYPES
from clip.model import convert_weights_to

# Logits are exp(logit_scale) (= 1/0.07 here) times a cosine: bf16 keeps 8 bits of mantissa, so
# after the tiny CLIP's 3 blocks per tower a cosine may move by ~5e-3 (a logit by ~0.07).
LOGIT_TOLERANCE = 0.15


@pytest.mark.parametrize("trainer", prompt_trainers())
def test_bf16_logits_agree_with_fp32(trainer):
    torch.manual_seed(0)
    clip32 = tiny_clip()
    model32 = build(trainer, clip32)
    clip16 = convert_weights_to(tiny_clip(), torch.bfloat16)
    model16 = build(trainer, clip16)
    model16.prompt_learner.load_state_dict(model32.prompt_learner.state_dict())
    assert clip16.visual.conv1.weight.dtype == torch.bfloat16
    assert clip16.ln_final.weight.dtype == torch.float32  # LayerNorms stay fp32
    assert all(p.dtype == torch.float32 for p in model16.prompt_learner.parameters())
    model32.eval(), model16.eval()
    with torch.no_grad():
        logits32, logits16 = model32(images()), model16(images())
    assert logits16.dtype == torch.float32 and logits32.std() > 0.05
    torch.testing.assert_close(logits16, logits32, rtol=0, atol=LOGIT_TOLERANCE)
    assert not torch.equal(logits16, logits32)  # it did run in bf16

    model16.train()
    F.cross_entropy(model16(images()), torch.tensor([0, 1, 2])).backward()
    grads = [p.grad for p in model16.prompt_learner.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def resolved(monkeypatch, prec, native, variable=None):
    from yacs.config import CfgNode

    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: native)
    if variable is None:
        monkeypatch.delenv(engine.CPU_BF16_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(engine.CPU_BF16_VARIABLE, variable)
    host = type("Host", (), {"device": torch.device("cpu")})()
    cfg = CfgNode({"TRAINER": CfgNode({"NAME": "MaPLe", "MAPLE": CfgNode({"PREC": prec})})})
    return engine.SimpleTrainer._resolve_precision(host, cfg)


@pytest.mark.parametrize("prec", ["fp16", "amp"])
def test_half_precision_on_a_cpu_runs_bf16_when_native_else_fp32(monkeypatch, capsys, prec):
    assert resolved(monkeypatch, prec, native=True) == "bf16"
    assert "computes bf16 natively, so the run uses bf16" in capsys.readouterr().out
    assert resolved(monkeypatch, prec, native=True, variable="0") == "fp32"
    assert resolved(monkeypatch, prec, native=False) == "fp32"
    assert "running in fp32 on CPU" in capsys.readouterr().out


def test_bf16_is_kept_on_cpu_and_warned_about_when_emulated(monkeypatch, capsys):
    assert resolved(monkeypatch, "bf16", native=True) == "bf16"
    assert resolved(monkeypatch, "fp32", native=True) == "fp32"
    assert capsys.readouterr().out == ""
    assert resolved(monkeypatch, "bf16", native=False) == "bf16"
    assert "emulated, slower than fp32" in capsys.readouterr().out


def test_a_bf16_training_run_keeps_clip_in_bf16_and_the_learner_in_fp32(tmp_path, monkeypatch):
    clip_file = write_tiny_clip(tmp_path / "clip.pt")
    cfg = toy_trainer_cfg("MaPLe", "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", clip_file, tmp_path,
                          tmp_path / "out", "TRAINER.MAPLE.PROMPT_DEPTH", 2,
                          "TRAINER.MAPLE.PREC", "bf16")
    trainer = build_trainer(cfg)
    model = trainer.model
    assert trainer.precision == "bf16" and WEIGHT_DTYPES["bf16"] == torch.bfloat16
    assert model.image_encoder.conv1.weight.dtype == torch.bfloat16
    assert model.text_encoder.text_projection.dtype == torch.bfloat16
    before = {k: v.clone() for k, v in model.prompt_learner.state_dict().items()}
    trainer.train()
    after = model.prompt_learner.state_dict()
    assert all(v.dtype == torch.float32 for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for state in trainer.optim.state.values():
        assert all(v.dtype == torch.float32 for v in state.values() if v.dim() > 0)
