"""MaPLe: multi-modal prompt learning (Khattak et al., CVPR 2023).

Text prompts P_0..P_{J-1} (n_ctx tokens each) enter the first J = PROMPT_DEPTH text layers; the
image prompts of the same layers are their linear projections F_i(P_i) (text width -> vision
width), so the vision branch is conditioned on the language branch. Parameter names are
upstream's, so MaPLe checkpoints (registered as "MultiModalPromptLearner") load as they are.
"""
import copy

from torch import nn
from yacs.config import CfgNode as CN

from dassl.engine import TRAINER_REGISTRY
from trainers.prompting import (LayerPrompts, PromptLearner, PromptTrainer, check_depth,
                                init_context, num_text_layers, num_vision_layers, per_layer,
                                prompt_list, text_width, vision_width)


def extend_cfg(cfg):
    cfg.TRAINER.MAPLE = CN()
    cfg.TRAINER.MAPLE.N_CTX = 2  # prompt tokens per layer
    cfg.TRAINER.MAPLE.CTX_INIT = "a photo of a"  # words initialising the layer-0 text prompts
    cfg.TRAINER.MAPLE.PREC = "fp16"  # fp16, fp32, amp
    cfg.TRAINER.MAPLE.PROMPT_DEPTH = 9  # J: layers 0..J-1 get prompts; 1 = shallow MaPLe


class MultiModalPromptLearner(PromptLearner):
    def __init__(self, cfg, classnames, clip_model):
        maple = cfg.TRAINER.MAPLE
        depth = maple.PROMPT_DEPTH
        check_depth("TRAINER.MAPLE.PROMPT_DEPTH", depth,
                    min(num_text_layers(clip_model), num_vision_layers(clip_model)))
        ctx, prefix = init_context(clip_model, maple.N_CTX, maple.CTX_INIT)
        super().__init__(classnames, clip_model, prefix)
        d_text, d_vision = text_width(clip_model), vision_width(clip_model)
        self.ctx = nn.Parameter(ctx)
        self.proj = nn.Linear(d_text, d_vision)
        self.compound_prompts_text = prompt_list(depth - 1, maple.N_CTX, d_text)
        # Upstream starts every deep projection from one and the same random initialisation.
        projection = nn.Linear(d_text, d_vision)
        self.compound_prompt_projections = nn.ModuleList(
            copy.deepcopy(projection) for _ in range(depth - 1))

    def text_prompts(self):
        return LayerPrompts(self.ctx, per_layer(self.compound_prompts_text))

    def image_prompts(self):
        deep = [project(prompt) for project, prompt
                in zip(self.compound_prompt_projections, self.compound_prompts_text, strict=True)]
        return LayerPrompts(self.proj(self.ctx), per_layer(deep))


@TRAINER_REGISTRY.register()
class MaPLe(PromptTrainer):
    MODEL_NAME = "MultiModalPromptLearner"

    def build_prompt_learner(self, classnames, clip_model):
        return MultiModalPromptLearner(self.cfg, classnames, clip_model)
