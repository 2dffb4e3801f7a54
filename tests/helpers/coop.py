"""Tiny CLIP, configs and independent references for the CoOp / CoCoOp / zero-shot tests.

The CLIP is the trainer tests' tiny ViT (text width 32, vision width 48) with a 64-wide embedding,
so that CoCoOp's meta-net (hidden width embed_dim // 16) has more than one hidden unit.
"""
import torch
import torch.nn.functional as F

import clip
from tests.helpers.clip_files import make_vit_state_dict, tiny_clip_model, write_clip_file
from tests.helpers.trainers import TINY_SIZES

COOP_SIZES = dict(TINY_SIZES, embed_dim=64)
TEXT_WIDTH = COOP_SIZES["transformer_width"]


def coop_clip(seed=0):
    """The tiny CLIP (fp32, eval mode)."""
    return tiny_clip_model("vit", seed=seed, **COOP_SIZES)


def write_coop_clip(path, seed=0):
    """The tiny CLIP as an OpenAI-format file, usable as MODEL.BACKBONE.NAME."""
    return write_clip_file(path, make_vit_state_dict(seed=seed, **COOP_SIZES))


@torch.no_grad()
def zero_shot_logits(clip_model, images, texts):
    """CLIP's zero-shot logits computed with the plain model: exp(logit_scale) * cosine between
    each image and each text."""
    image_features = F.normalize(clip_model.encode_image(images).float(), dim=-1)
    text_features = F.normalize(clip_model.encode_text(clip.tokenize(texts)).float(), dim=-1)
    return clip_model.logit_scale.exp() * image_features @ text_features.t()


def upstream_scheduler(params):
    """What upstream Dassl pickles for a constant warm-up before cosine: a dict whose
    `successor` is the CosineAnnealingLR object itself."""
    optimizer = torch.optim.SGD(params, lr=0.002)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=50)
    return {"successor": cosine, "warmup_epoch": 1, "cons_lr": 1e-5, "last_epoch": 50}
