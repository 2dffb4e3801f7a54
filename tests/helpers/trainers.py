"""Tiny CLIP models, configs and probes for the trainer tests.

Widths differ between the text (32) and vision (48) towers and the embedding (24), so a prompt
dimension taken from the wrong tower fails loudly; three layers per tower leave room to check
prompt depths below the number of layers.
"""
import torch

from dassl.config import get_cfg_default
from tests.helpers.clip_files import make_vit_state_dict, tiny_clip_model, write_clip_file

TINY_SIZES = dict(embed_dim=24, image_resolution=32, vision_layers=3, vision_width=48,
                  vision_patch_size=16, transformer_width=32, transformer_layers=3)
CLASSNAMES = ["annual crop", "forest", "herbaceous_vegetation", "highway", "river"]


def tiny_clip(seed=0):
    """A tiny ViT CLIP (fp32, eval mode)."""
    return tiny_clip_model("vit", seed=seed, **TINY_SIZES)


def write_tiny_clip(path, seed=0):
    """A tiny ViT CLIP file (OpenAI format) usable as MODEL.BACKBONE.NAME."""
    return write_clip_file(path, make_vit_state_dict(seed=seed, **TINY_SIZES))


def trainer_cfg(trainer, **opts):
    """The default config extended with every trainer's keys, TRAINER.NAME set, then `opts`
    ("TRAINER.MAPLE.PROMPT_DEPTH": 2, ...) merged."""
    import trainers

    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    cfg.TRAINER.NAME = trainer
    cfg.INPUT.SIZE = (TINY_SIZES["image_resolution"],) * 2
    cfg.merge_from_list([item for pair in opts.items() for item in pair])
    return cfg


def images(n=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    size = TINY_SIZES["image_resolution"]
    return torch.randn(n, 3, size, size, generator=generator)


def record_block_inputs(blocks):
    """Forward pre-hooks on `blocks` that record the hidden state entering each block, and
    forward hooks that record what it returns. Returns (inputs, outputs, handles): dicts from
    block index to the last tensors seen, and the hook handles to remove."""
    inputs, outputs, handles = {}, {}, []
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(
            lambda module, args, i=i: inputs.__setitem__(i, args[0].detach().clone())))
        handles.append(block.register_forward_hook(
            lambda module, args, out, i=i: outputs.__setitem__(i, out.detach().clone())))
    return inputs, outputs, handles
