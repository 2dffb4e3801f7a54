"""LR schedules per epoch against hand-computed values; optimizers; plain scheduler state."""
import io
import math

import pytest
import torch
import torch.nn as nn

from dassl.config import get_cfg_default
from dassl.optim import build_lr_scheduler, build_optimizer


def _optim_cfg(**values):
    cfg = get_cfg_default()
    cfg.OPTIM.NAME = "sgd"
    cfg.OPTIM.LR = 0.002
    cfg.OPTIM.MAX_EPOCH = 5
    for key, value in values.items():
        cfg.OPTIM[key] = value
    return cfg.OPTIM


def _lrs_per_epoch(optim_cfg, epochs):
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(model, optim_cfg)
    scheduler = build_lr_scheduler(optimizer, optim_cfg)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_with_constant_warmup_matches_hand_computed_lrs():
    # Dassl (MaPLe / CoOp configs): epoch 0 at WARMUP_CONS_LR, then cosine from its start,
    # lr_e = 0.002 * (1 + cos(pi * (e - 1) / 5)) / 2 for e >= 1.
    cfg = _optim_cfg(LR_SCHEDULER="cosine", WARMUP_EPOCH=1, WARMUP_TYPE="constant", WARMUP_CONS_LR=1e-5)
    expected = [1e-5, 0.002, 0.0018090169943749475, 0.0013090169943749475, 0.0006909830056250527]
    assert _lrs_per_epoch(cfg, 5) == pytest.approx(expected, rel=1e-12)


def test_cosine_without_warmup():
    cfg = _optim_cfg(LR_SCHEDULER="cosine")
    expected = [0.002 * (1 + math.cos(math.pi * e / 5)) / 2 for e in range(5)]
    assert _lrs_per_epoch(cfg, 5) == pytest.approx(expected, rel=1e-12)


def test_linear_warmup_matches_hand_computed_lrs():
    # Two warm-up epochs: MIN_LR, then LR * 1/2; then cosine from its start.
    cfg = _optim_cfg(LR_SCHEDULER="cosine", WARMUP_EPOCH=2, WARMUP_TYPE="linear", WARMUP_MIN_LR=1e-5)
    expected = [1e-5, 0.001, 0.002, 0.0018090169943749475, 0.0013090169943749475]
    assert _lrs_per_epoch(cfg, 5) == pytest.approx(expected, rel=1e-12)


def test_single_and_multi_step():
    single = _optim_cfg(LR_SCHEDULER="single_step", STEPSIZE=(2,), GAMMA=0.1)
    assert _lrs_per_epoch(single, 5) == pytest.approx([0.002, 0.002, 0.0002, 0.0002, 0.00002])
    multi = _optim_cfg(LR_SCHEDULER="multi_step", STEPSIZE=(1, 3), GAMMA=0.5)
    assert _lrs_per_epoch(multi, 5) == pytest.approx([0.002, 0.001, 0.001, 0.0005, 0.0005])
    # STEPSIZE -1 (Dassl's default) means one step at MAX_EPOCH
    default = _optim_cfg(LR_SCHEDULER="single_step")
    assert _lrs_per_epoch(default, 5) == pytest.approx([0.002] * 5)


@pytest.mark.parametrize("name, cls", [
    ("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
    ("rmsprop", torch.optim.RMSprop), ("radam", torch.optim.RAdam),
])
def test_optimizers_take_config_values(name, cls):
    optimizer = build_optimizer(nn.Linear(2, 2), _optim_cfg(NAME=name, WEIGHT_DECAY=0.01))
    assert type(optimizer) is cls
    assert optimizer.param_groups[0]["lr"] == 0.002
    assert optimizer.param_groups[0]["weight_decay"] == 0.01


def test_unknown_names_are_rejected_with_choices():
    with pytest.raises(ValueError, match="sgd"):
        build_optimizer(nn.Linear(2, 2), _optim_cfg(NAME="lion"))
    with pytest.raises(ValueError, match="cosine"):
        build_lr_scheduler(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1), _optim_cfg(LR_SCHEDULER="poly"))


def test_warmup_scheduler_state_is_plain_and_restores_the_schedule():
    cfg = _optim_cfg(LR_SCHEDULER="cosine", WARMUP_EPOCH=1, WARMUP_TYPE="constant", WARMUP_CONS_LR=1e-5)
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_lr_scheduler(optimizer, cfg)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    buffer = io.BytesIO()
    torch.save({"scheduler": scheduler.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # plain data only

    fresh_optimizer = build_optimizer(nn.Linear(2, 2), cfg)
    fresh_scheduler = build_lr_scheduler(fresh_optimizer, cfg)
    fresh_optimizer.load_state_dict(saved["optimizer"])
    fresh_scheduler.load_state_dict(saved["scheduler"])
    lrs = []
    for _ in range(3):
        lrs.append(fresh_optimizer.param_groups[0]["lr"])
        fresh_optimizer.step()
        fresh_scheduler.step()
    assert lrs == pytest.approx([0.0018090169943749475, 0.0013090169943749475, 0.0006909830056250527])
