"""VPT (deep): learnable vision prompts in the first PROMPT_DEPTH_VISION image layers; the text
side is CLIP's, on the hand-crafted prompts "<CTX_INIT> <class>." (upstream: "a photo of a").

Registered as "prompt_learner" like upstream's VPT trainer, whose checkpoints keep the prompts
inside the forked image encoder (keys mapped by trainers.ivlp.UPSTREAM_KEYS).
"""
from yacs.config import CfgNode as CN

from dassl.config import ConfigError
from dassl.engine import TRAINER_REGISTRY
from trainers.ivlp import rename_upstream_key, vision_prompts
from trainers.prompting import PromptLearner, PromptTrainer, prompt_words


def extend_cfg(cfg):
    cfg.TRAINER.VPT = CN()
    cfg.TRAINER.VPT.N_CTX_VISION = 2  # prompt tokens per image layer
    cfg.TRAINER.VPT.CTX_INIT = "a photo of a"  # words before the class name in the text prompts
    cfg.TRAINER.VPT.PREC = "fp16"  # fp16, fp32, amp
    cfg.TRAINER.VPT.PROMPT_DEPTH_VISION = 1  # image layers 0..depth-1 get prompts; 1 = shallow


class VisionPromptLearner(PromptLearner):
    fixed_text = True

    def __init__(self, cfg, classnames, clip_model):
        vpt = cfg.TRAINER.VPT
        if vpt.PROMPT_DEPTH_VISION < 1 or vpt.N_CTX_VISION < 1:
            raise ConfigError("TRAINER.VPT.PROMPT_DEPTH_VISION and N_CTX_VISION must be >= 1 "
                             "(VPT learns vision prompts only)")
        super().__init__(classnames, clip_model, prompt_words(vpt.CTX_INIT))
        self.vision = vision_prompts(clip_model, vpt.N_CTX_VISION, vpt.PROMPT_DEPTH_VISION,
                                     "TRAINER.VPT.PROMPT_DEPTH_VISION")

    def image_prompts(self):
        return self.vision.layer_prompts()


@TRAINER_REGISTRY.register()
class VPT(PromptTrainer):
    MODEL_NAME = "prompt_learner"

    def build_prompt_learner(self, classnames, clip_model):
        return VisionPromptLearner(self.cfg, classnames, clip_model)

    def rename_checkpoint_key(self, key):
        return rename_upstream_key(key)
