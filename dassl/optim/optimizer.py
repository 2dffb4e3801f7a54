"""Optimizers named by ``OPTIM.NAME``."""
import warnings

import torch
import torch.nn as nn

from dassl.config import ConfigError

AVAILABLE_OPTIMIZERS = ("adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw")


def _staged_param_groups(model, optim_cfg):
    """New layers at OPTIM.LR, the rest at LR * BASE_LR_MULT (fine-tuning pre-trained layers)."""
    if not isinstance(model, nn.Module):
        raise TypeError("OPTIM.STAGED_LR needs an nn.Module, not an iterable of parameters")
    new_layers = optim_cfg.NEW_LAYERS
    if not new_layers:
        raise ConfigError("OPTIM.STAGED_LR is True but OPTIM.NEW_LAYERS is empty")
    if isinstance(new_layers, str):
        new_layers = [new_layers]
    if isinstance(model, nn.DataParallel):
        model = model.module
    base_params, new_params = [], []
    for name, module in model.named_children():
        target = new_params if name in new_layers else base_params
        target.extend(module.parameters())
    return [
        {"params": base_params, "lr": optim_cfg.LR * optim_cfg.BASE_LR_MULT},
        {"params": new_params},
    ]


def build_optimizer(model, optim_cfg, param_groups=None):
    """Build the optimizer of ``optim_cfg`` (``cfg.OPTIM``) for a module or an iterable of
    parameters (or explicit ``param_groups``)."""
    name = optim_cfg.NAME
    if name not in AVAILABLE_OPTIMIZERS:
        raise ConfigError(f'OPTIM.NAME "{name}" is not supported; choose one of {list(AVAILABLE_OPTIMIZERS)}')
    if param_groups is not None and optim_cfg.STAGED_LR:
        warnings.warn("OPTIM.STAGED_LR is ignored because param_groups were given explicitly", stacklevel=2)
    if param_groups is None:
        if optim_cfg.STAGED_LR:
            param_groups = _staged_param_groups(model, optim_cfg)
        elif isinstance(model, nn.Module):
            param_groups = model.parameters()
        else:
            param_groups = model

    lr, weight_decay = optim_cfg.LR, optim_cfg.WEIGHT_DECAY
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    if name in ("adam", "amsgrad"):
        return torch.optim.Adam(
            param_groups, lr=lr, weight_decay=weight_decay, betas=betas, amsgrad=name == "amsgrad"
        )
    if name == "sgd":
        return torch.optim.SGD(
            param_groups,
            lr=lr,
            momentum=optim_cfg.MOMENTUM,
            weight_decay=weight_decay,
            dampening=optim_cfg.SGD_DAMPNING,
            nesterov=optim_cfg.SGD_NESTEROV,
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(
            param_groups,
            lr=lr,
            momentum=optim_cfg.MOMENTUM,
            weight_decay=weight_decay,
            alpha=optim_cfg.RMSPROP_ALPHA,
        )
    if name == "radam":
        return torch.optim.RAdam(param_groups, lr=lr, weight_decay=weight_decay, betas=betas)
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay, betas=betas)
