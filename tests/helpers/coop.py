"""Tiny CLIP, configs and independent references for the CoOp / CoCoOp / zero-shot tests.

The CLIP is the trainer tests' tiny ViT (text width 32, vision width 48) with a 64-wide embedding,
so that CoCoOp's meta-net (hidden width embed_dim // 16) has more than one hidden unit.
"""
import torch
import torch.nn.functional as F

import clip
from tests.helpers.trainers import TINY_SIZES, tiny_clip, write_tiny_clip

EMBED_DIM = 64
TEXT_WIDTH = TINY_SIZES["transformer_width"]


def coop_clip(seed=0):
    """The tiny CLIP (fp32, eval mode)."""
    return tiny_clip(seed, embed_dim=EMBED_DIM)


def write_coop_clip(path, seed=0):
    """The tiny CLIP as an OpenAI-format file, usable as MODEL.BACKBONE.NAME."""
    return write_tiny_clip(path, seed, embed_dim=EMBED_DIM)


@torch.no_grad()
def zero_shot_logits(clip_model, images, texts):
    """CLIP's zero-shot logits computed with the plain model: exp(logit_scale) * cosine between
    each image and each text."""
    image_features = F.normalize(clip_model.encode_image(images).float(), dim=-1)
    text_features = F.normalize(clip_model.encode_text(clip.tokenize(texts)).float(), dim=-1)
    return clip_model.logit_scale.exp() * image_features @ text_features.t()

