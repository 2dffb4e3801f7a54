"""IVLP: independent deep vision and language prompts (the baseline of the MaPLe paper).

Text prompts enter the first PROMPT_DEPTH_TEXT text layers and vision prompts the first
PROMPT_DEPTH_VISION image layers, with no coupling between them. PROMPT_DEPTH_VISION 0 is deep
language prompting only (config vit_b16_c2_ep5_batch4_4ctx_language_only.yaml). Upstream keeps the
deep prompts inside its forked CLIP blocks; `UPSTREAM_KEYS` maps those checkpoint keys to ours.
"""
from yacs.config import CfgNode as CN

from dassl.config import ConfigError
from dassl.engine import TRAINER_REGISTRY
from trainers.prompting import (LayerwisePrompts, PromptLearner, PromptTrainer, check_depth,
                                init_context, num_text_layers, num_vision_layers, random_prompts,
                                rename_by_patterns, vision_width)


def extend_cfg(cfg):
    cfg.TRAINER.IVLP = CN()
    cfg.TRAINER.IVLP.N_CTX_VISION = 2  # prompt tokens per image layer
    cfg.TRAINER.IVLP.N_CTX_TEXT = 2  # prompt tokens per text layer
    cfg.TRAINER.IVLP.CTX_INIT = "a photo of a"  # words initialising the layer-0 text prompts
    cfg.TRAINER.IVLP.PREC = "fp16"  # fp16, fp32, amp
    cfg.TRAINER.IVLP.PROMPT_DEPTH_VISION = 9  # image layers 0..depth-1 get prompts; 0: none
    cfg.TRAINER.IVLP.PROMPT_DEPTH_TEXT = 9  # text layers 0..depth-1 get prompts (>= 1)


def _deep_key(part):
    return lambda match: f"prompt_learner.{part}.deep.{int(match[1]) - 1}"


# Upstream key -> ours. Upstream's per-block prompt of block i (i >= 1) is our deep[i - 1].
UPSTREAM_KEYS = [
    (r"prompt_learner\.ctx", "prompt_learner.text.ctx"),
    (r"text_encoder\.transformer\.resblocks\.(\d+)\.VPT_shallow", _deep_key("text")),
    (r"image_encoder\.VPT", "prompt_learner.vision.ctx"),
    (r"image_encoder\.transformer\.resblocks\.(\d+)\.VPT_shallow", _deep_key("vision")),
]
rename_upstream_key = rename_by_patterns(UPSTREAM_KEYS)


def vision_prompts(clip_model, n_ctx, depth, depth_key):
    """LayerwisePrompts for the first `depth` image layers, or None when depth or n_ctx is 0."""
    if depth == 0 or n_ctx == 0:
        return None
    width = vision_width(clip_model)  # first: it says when the backbone is not a ViT
    check_depth(depth_key, depth, num_vision_layers(clip_model))
    return LayerwisePrompts(random_prompts(n_ctx, width), depth)


class VLPromptLearner(PromptLearner):
    def __init__(self, cfg, classnames, clip_model):
        ivlp = cfg.TRAINER.IVLP
        if ivlp.PROMPT_DEPTH_TEXT < 1:
            raise ConfigError("TRAINER.IVLP.PROMPT_DEPTH_TEXT must be >= 1; for vision prompts "
                             "only, use the VPT trainer")
        check_depth("TRAINER.IVLP.PROMPT_DEPTH_TEXT", ivlp.PROMPT_DEPTH_TEXT,
                    num_text_layers(clip_model))
        ctx, prefix = init_context(clip_model, ivlp.N_CTX_TEXT, ivlp.CTX_INIT)
        super().__init__(classnames, clip_model, prefix)
        self.text = LayerwisePrompts(ctx, ivlp.PROMPT_DEPTH_TEXT)
        self.vision = vision_prompts(clip_model, ivlp.N_CTX_VISION, ivlp.PROMPT_DEPTH_VISION,
                                     "TRAINER.IVLP.PROMPT_DEPTH_VISION")

    def text_prompts(self):
        return self.text.layer_prompts()

    def image_prompts(self):
        return None if self.vision is None else self.vision.layer_prompts()


@TRAINER_REGISTRY.register()
class IVLP(PromptTrainer):
    MODEL_NAME = "VLPromptLearner"

    def build_prompt_learner(self, classnames, clip_model):
        return VLPromptLearner(self.cfg, classnames, clip_model)

    def rename_checkpoint_key(self, key):
        return rename_upstream_key(key)
