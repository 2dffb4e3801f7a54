"""Tiny CLIP weights in OpenAI's format, for tests.

The key names and shapes come from open_clip's CLIP (which loads the real OpenAI files strictly),
not from our clip/model.py, so loading them with strict=True checks our module names against an
independent source. Every tensor gets seeded random values (BatchNorm statistics too), so a
wrongly wired layer changes the features. Heads are not stored in an OpenAI state dict: a loader
infers them as width // 64, so widths below 64 get one head here and in clip.build_model but
cannot be compared with open_clip.
"""
import math
import warnings

import torch
from open_clip.model import CLIP as OpenClipCLIP
from open_clip.model import CLIPTextCfg, CLIPVisionCfg

from clip.model import build_model

# Attributes the OpenAI TorchScript archives carry beside the weights.
ARCHIVE_ATTRIBUTES = ("input_resolution", "context_length", "vocab_size")


def make_vit_state_dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64,
                        vision_patch_size=8, context_length=77, vocab_size=49408,
                        transformer_width=64, transformer_layers=2, seed=0):
    """OpenAI-format state dict of a ViT CLIP, fp16 like the OpenAI files."""
    vision = CLIPVisionCfg(layers=vision_layers, width=vision_width, patch_size=vision_patch_size,
                           image_size=image_resolution, head_width=min(64, vision_width))
    return _random_state_dict(embed_dim, vision, context_length, vocab_size, transformer_width,
                              transformer_layers, seed)


def make_resnet_state_dict(embed_dim=32, image_resolution=64, vision_layers=(1, 1, 1, 1),
                           vision_width=8, context_length=77, vocab_size=49408,
                           transformer_width=64, transformer_layers=2, seed=0):
    """OpenAI-format state dict of a ModifiedResNet CLIP (attention-pool input is
    vision_width * 32 wide), fp16 like the OpenAI files."""
    vision = CLIPVisionCfg(layers=tuple(vision_layers), width=vision_width,
                           image_size=image_resolution)
    return _random_state_dict(embed_dim, vision, context_length, vocab_size, transformer_width,
                              transformer_layers, seed)


def _random_state_dict(embed_dim, vision_cfg, context_length, vocab_size, transformer_width,
                       transformer_layers, seed):
    text_cfg = CLIPTextCfg(context_length=context_length, vocab_size=vocab_size,
                           width=transformer_width, heads=max(1, transformer_width // 64),
                           layers=transformer_layers)
    shapes = OpenClipCLIP(embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg,
                          quick_gelu=True).state_dict()
    generator = torch.Generator().manual_seed(seed)
    return {key: _random_like(key, tensor, generator).half()
            if tensor.is_floating_point() else tensor.clone()
            for key, tensor in shapes.items()}


def _random_like(key, tensor, generator):
    def randn(std):
        return torch.randn(tensor.shape, generator=generator) * std

    name = key.rsplit(".", 1)[-1]
    if key == "logit_scale":
        return torch.tensor(math.log(1 / 0.07))
    if name == "running_var":
        return 0.5 + torch.rand(tensor.shape, generator=generator)
    if name in ("running_mean", "bias"):
        return randn(0.1)
    if name == "weight" and tensor.dim() == 1:  # LayerNorm and BatchNorm scales
        return 1 + randn(0.1)
    if tensor.dim() >= 2 and "embedding" not in key:
        fan_in = tensor[0].numel() if "weight" in name else tensor.shape[0]
        return randn(fan_in ** -0.5)
    return randn(0.5)  # embeddings: kept of the order of the activations they are added to


def write_clip_file(path, state_dict, torchscript=False):
    """Write `state_dict` as a plain torch.save file, or as a TorchScript archive whose
    .state_dict() has the same keys (plus OpenAI's archive attributes), like the OpenAI .pt files.
    Returns `path`."""
    path = str(path)
    if torchscript:
        with warnings.catch_warnings():
            # TorchScript is deprecated, but it is the format OpenAI's files are in.
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
            torch.jit.save(torch.jit.script(_ParameterTree(state_dict)), path)
    else:
        torch.save(state_dict, path)
    return path


class _ParameterTree(torch.nn.Module):
    """Modules nested along the dotted keys, holding the tensors as parameters and buffers."""

    def __init__(self, state_dict, root=True):
        super().__init__()
        children = {}
        for key, tensor in state_dict.items():
            head, _, rest = key.partition(".")
            if rest:
                children.setdefault(head, {})[rest] = tensor
            elif tensor.is_floating_point():
                parameter = torch.nn.Parameter(tensor.clone(), requires_grad=False)
                self.register_parameter(head, parameter)
            else:
                self.register_buffer(head, tensor.clone())
        for name, sub_dict in children.items():
            self.add_module(name, _ParameterTree(sub_dict, root=False))
        if root:
            for name in ARCHIVE_ATTRIBUTES:
                self.register_buffer(name, torch.tensor(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def tiny_clip_model(kind="vit", seed=0, **sizes):
    """A tiny CLIP (fp32, eval mode) built by clip.build_model; kind is "vit" or "resnet"."""
    makers = {"vit": make_vit_state_dict, "resnet": make_resnet_state_dict}
    if kind not in makers:
        raise ValueError(f"kind must be one of {sorted(makers)}, got {kind!r}")
    return build_model(makers[kind](seed=seed, **sizes))
