"""CoCoOp: conditional context optimization (Zhou et al., CVPR 2022).

CoOp's shared context, shifted for each image by a small meta-net of the image's normalised CLIP
feature: context_i = ctx + meta_net(f_i) (the same shift for every context token). Every image thus
has its own class prompts, so the text side is encoded per image (no cached text features): the
B x C (image, class) prompts of a batch are encoded in chunks of `text_chunk_size` sequences, which
bounds memory with many classes. Checkpoints as CoOp's (trainers/coop.py): keys `ctx`,
`meta_net.linear1.*`, `meta_net.linear2.*`.
"""
from collections import OrderedDict

import torch
from torch import nn
from yacs.config import CfgNode as CN

from dassl.config import ConfigError
from dassl.engine import TRAINER_REGISTRY
from trainers.coop import LearnerOnlyCheckpoints, announce_context, coop_context
from trainers.prompting import LayerPrompts, PromptedCLIP, PromptLearner, normalize, text_width

# The meta-net's hidden layer is this many times narrower than CLIP's embedding (upstream: 16).
META_NET_REDUCTION = 16


def extend_cfg(cfg):
    cfg.TRAINER.COCOOP = CN()
    cfg.TRAINER.COCOOP.N_CTX = 16  # number of context vectors
    cfg.TRAINER.COCOOP.CTX_INIT = ""  # words initialising the context (then N_CTX = their count)
    cfg.TRAINER.COCOOP.PREC = "fp16"  # fp16, fp32, amp


def meta_net(embed_dim, width):
    """CLIP image feature (embed_dim) -> one context shift (width), through a narrow ReLU layer."""
    hidden = embed_dim // META_NET_REDUCTION
    if hidden < 1:
        raise ConfigError(f"CLIP's embedding ({embed_dim}) is too narrow for CoCoOp's meta-net, "
                         f"whose hidden layer is {META_NET_REDUCTION} times narrower")
    return nn.Sequential(OrderedDict([
        ("linear1", nn.Linear(embed_dim, hidden)),
        ("relu", nn.ReLU(inplace=True)),
        ("linear2", nn.Linear(hidden, width)),
    ]))


class CoCoOpPromptLearner(PromptLearner):
    def __init__(self, cfg, classnames, clip_model):
        cocoop = cfg.TRAINER.COCOOP
        ctx, prefix = coop_context(clip_model, cocoop.N_CTX, cocoop.CTX_INIT)
        super().__init__(classnames, clip_model, prefix)
        self.ctx = nn.Parameter(ctx)
        announce_context(ctx.shape[0], prefix, cocoop.N_CTX, csc_overridden=False)
        self.meta_net = meta_net(clip_model.visual.output_dim, text_width(clip_model))

    def conditioned_context(self, image_features):
        """Each image's context [B, n_ctx, d] from its normalised features [B, embed_dim]."""
        shift = self.meta_net(image_features.to(self.ctx.dtype))
        return self.ctx.unsqueeze(0) + shift.unsqueeze(1)


class CoCoOpCLIP(PromptedCLIP):
    def forward(self, images):
        image_features = self.image_features(images)
        contexts = self.prompt_learner.conditioned_context(image_features)
        text_features = self.conditioned_text_features(contexts)
        scale = self.logit_scale.float().exp()
        return scale * torch.einsum("be,bce->bc", image_features, text_features)

    def conditioned_text_features(self, contexts):
        """Normalised text features [B, C, embed_dim] of every class prompt with each image's
        context; the B x C sequences are encoded in chunks (several images per chunk when the
        classes are few, part of one image's classes when they are many)."""
        tokens = self.prompt_learner.tokenized_prompts
        n_images, n_classes = contexts.shape[0], tokens.shape[0]
        pairs = torch.arange(n_images * n_classes, device=tokens.device)
        features = []
        for chunk in pairs.split(self.text_chunk_size):
            image_index, class_index = chunk // n_classes, chunk % n_classes
            prompts = LayerPrompts(contexts[image_index])
            features.append(self.text_encoder(tokens[class_index], prompts))
        return normalize(torch.cat(features)).view(n_images, n_classes, -1)


@TRAINER_REGISTRY.register()
class CoCoOp(LearnerOnlyCheckpoints):
    def build_prompt_learner(self, classnames, clip_model):
        return CoCoOpPromptLearner(self.cfg, classnames, clip_model)

    def build_custom_clip(self, clip_model, prompt_learner):
        return CoCoOpCLIP(clip_model, prompt_learner)
