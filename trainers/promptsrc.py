"""PromptSRC: self-regulating prompts (Khattak et al., ICCV 2023), over a choice of prompting.

A regulariser around the prompting TRAINER.PROMPTSRC.PROMPTING names (ivlp as published; maple;
bmip for the BMIP paper's Table 4), with the prompting's options in its own section:

    loss = CE(logits, y)
         + TEXT_LOSS_WEIGHT  * L1(text features, frozen CLIP's template-ensemble text features)
         + IMAGE_LOSS_WEIGHT * L1(image features, frozen CLIP's image features)
         + KL(zero-shot logits || prompted logits), summed and divided by the number of logits

(features L2-normalised; the zero-shot logits are frozen CLIP's image features against the
ensemble text features, both scaled by CLIP's logit scale). The ensemble is the mean of CLIP's
unnormalised text features over PromptSRC's 60 ImageNet templates (TEMPLATES clip: CLIP's 80, as
the BMIP authors' PromptSRC+BMIP), normalised, in fp32 as upstream's teacher (under PREC fp16 an
fp32 copy of the text tower computes them), computed once per class
set; the frozen image features once per batch without gradients; both come from the same
encoders with the prompts switched off.

Gaussian prompt aggregation (GPA): after epoch e (1..MAX_EPOCH) the learner's weights are added
with weight N(e; GPA_MEAN, GPA_STD^2), normalised over the epochs; after the last epoch the
learner is replaced by the sum, which is what is saved and evaluated. The running sum is part of
the checkpoint's engine state, so a resumed run aggregates the same epochs.
"""
import copy
import math

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from dassl.config import ConfigError
from dassl.engine import TRAINER_REGISTRY
import clip
from trainers.prompting import clip_logits, learner_state_dict, normalize, rename_by_patterns
from trainers.regularised import Objective, RegularisedTrainer, add_prompting_key
from trainers.zsclip import class_texts

# CLIP's ImageNet prompt-engineering templates, as PromptSRC ensembles them.
IMAGENET_TEMPLATES = (
    "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.",
    "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.",
    "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.", "the plastic {}.",
    "a photo of the cool {}.", "a close-up photo of a {}.", "a black and white photo of the {}.",
    "a painting of the {}.", "a painting of a {}.", "a pixelated photo of the {}.",
    "a sculpture of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.",
    "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.",
    "a close-up photo of the {}.", "the origami {}.", "the {} in a video game.",
    "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.",
    "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.",
    "a cartoon {}.", "art of a {}.", "a sketch of the {}.", "a embroidered {}.",
    "a pixelated photo of a {}.", "itap of the {}.",
)

# CLIP's 80 ImageNet prompt-engineering templates (OpenAI's notebook), in the order of the BMIP
# authors' trainers/imagenet_templates.py, which their PromptSRC+BMIP ensembles.
CLIP_IMAGENET_TEMPLATES = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.",
    "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.",
    "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.", "the plastic {}.",
    "a photo of the cool {}.", "a close-up photo of a {}.", "a black and white photo of the {}.",
    "a painting of the {}.", "a painting of a {}.", "a pixelated photo of the {}.",
    "a sculpture of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.",
    "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.",
    "a close-up photo of the {}.", "a photo of a {}.", "the origami {}.",
    "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.",
    "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.",
    "a cartoon {}.", "art of a {}.", "a sketch of the {}.", "a embroidered {}.",
    "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.",
    "a photo of the small {}.", "a photo of the weird {}.", "the cartoon {}.", "art of the {}.",
    "a drawing of the {}.", "a photo of the large {}.", "a black and white photo of a {}.",
    "the plushie {}.", "a dark photo of a {}.", "itap of a {}.", "graffiti of the {}.",
    "a toy {}.", "itap of my {}.", "a photo of a cool {}.", "a photo of a small {}.",
    "a tattoo of the {}.",
)

# TRAINER.PROMPTSRC.TEMPLATES: the ensemble of the text targets.
TEMPLATE_SETS = {"promptsrc": IMAGENET_TEMPLATES, "clip": CLIP_IMAGENET_TEMPLATES}

# Upstream PromptSRC saves its frozen image encoder inside the learner: CLIP's own weights.
UPSTREAM_KEYS = [(r"prompt_learner\.ZS_image_encoder\.(.+)", r"image_encoder.\1")]
rename_upstream_key = rename_by_patterns(UPSTREAM_KEYS)


def extend_cfg(cfg):
    cfg.TRAINER.PROMPTSRC = CN()
    add_prompting_key(cfg.TRAINER.PROMPTSRC, "ivlp")
    cfg.TRAINER.PROMPTSRC.PREC = "fp16"  # fp16, fp32, amp
    cfg.TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT = 25  # ints as upstream, so its configs load
    cfg.TRAINER.PROMPTSRC.IMAGE_LOSS_WEIGHT = 10
    cfg.TRAINER.PROMPTSRC.GPA_MEAN = 15  # epoch (1-based) of the Gaussian's peak
    cfg.TRAINER.PROMPTSRC.GPA_STD = 1
    # promptsrc: PromptSRC's 60 ImageNet templates; clip: CLIP's 80 (the BMIP authors' PromptSRC+BMIP)
    cfg.TRAINER.PROMPTSRC.TEMPLATES = "promptsrc"


# ---------------------------------------------------------------------------------------------
# The losses
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def ensemble_text_targets(model, templates=IMAGENET_TEMPLATES):
    """Frozen CLIP's text targets [C, embed_dim] for the model's classes: the mean over
    `templates` of the unnormalised features, normalised. In fp32 whatever CLIP's precision, as
    upstream's teacher (an fp32 copy of CLIP) computes them."""
    learner = model.prompt_learner
    device, context_length = learner.tokenized_prompts.device, learner.tokenized_prompts.shape[1]
    total = 0
    with torch.autocast(device_type=device.type, enabled=False):
        encode = fp32_frozen_text_features(model)
        for template in templates:
            texts = class_texts(template, learner.classnames)
            tokens = clip.tokenize(texts, context_length=context_length).to(device)
            total = total + encode(tokens).float()
    return normalize(total / len(templates))


def fp32_frozen_text_features(model):
    """`model.frozen_text_features`, through an fp32 copy of CLIP's text tower (made here, freed
    with the function) when CLIP is stored in half precision."""
    if model.text_encoder.dtype == torch.float32:
        return model.frozen_text_features
    encoder = copy.deepcopy(model.text_encoder).float()
    return lambda tokens: torch.cat([encoder(chunk) for chunk in tokens.split(model.text_chunk_size)])


def logits_kl(logits, target_logits):
    """KL(softmax(target) || softmax(logits)) summed, divided by the number of logits (as
    PromptSRC computes it)."""
    return F.kl_div(F.log_softmax(logits.float(), dim=1), F.log_softmax(target_logits.float(), dim=1),
                    reduction="sum", log_target=True) / logits.numel()


class PromptSRCLoss(Objective):
    """The PromptSRC objective of a PromptedCLIP; text targets cached per class set."""

    def __init__(self, model, text_weight, image_weight, templates=IMAGENET_TEMPLATES):
        super().__init__(model)
        self.text_weight, self.image_weight = text_weight, image_weight
        self.templates = templates

    def text_targets(self):
        return self.per_class_set(lambda: ensemble_text_targets(self.model, self.templates))

    def __call__(self, images, labels):
        """(total loss, logits, the terms by name)."""
        model = self.model
        # Frozen targets first: their pass's buffers are freed before the graph is built.
        image_targets = model.frozen_image_features(images)
        text_targets = self.text_targets()
        text, image, logits = self.prompted(images)
        zero_shot_logits = clip_logits(image_targets, text_targets, model.logit_scale)
        terms = {
            "ce": F.cross_entropy(logits, labels),
            "scl_text": F.l1_loss(text, text_targets) * self.text_weight,
            "scl_image": F.l1_loss(image, image_targets) * self.image_weight,
            "scl_logits": logits_kl(logits, zero_shot_logits),
        }
        return sum(terms.values()), logits, terms


# ---------------------------------------------------------------------------------------------
# Gaussian prompt aggregation
# ---------------------------------------------------------------------------------------------

def gpa_weights(n_epochs, mean, std):
    """Weight of epochs 1..n_epochs: N(e; mean, std^2) normalised to sum 1."""
    if std <= 0:
        raise ConfigError(f"TRAINER.PROMPTSRC.GPA_STD is {std}: it must be > 0")
    density = [math.exp(-0.5 * ((epoch - mean) / std) ** 2) for epoch in range(1, n_epochs + 1)]
    total = sum(density)
    if total == 0:
        raise ConfigError(f"TRAINER.PROMPTSRC.GPA_MEAN {mean} / GPA_STD {std} give every one of "
                          f"the {n_epochs} epochs weight 0: put the mean within a few STD of them")
    return [value / total for value in density]


class GaussianPromptAggregation:
    """Running sum of weight_e * the learner's floating-point entries after each epoch."""

    def __init__(self, weights):
        self.weights = weights
        self.total = None

    def add(self, epoch, state):
        """Add the learner `state` after epoch `epoch` (0-based)."""
        weight = self.weights[epoch]
        weighted = {key: value.detach().float() * weight for key, value in state.items()
                    if value.is_floating_point()}
        if self.total is None:
            self.total = weighted
        else:
            for key, value in weighted.items():  # a resumed total may sit on the CPU
                self.total[key] = self.total[key].to(value.device) + value

    def load_into(self, model):
        """Replace the learner's entries by the aggregate."""
        entries = learner_state_dict(model)
        with torch.no_grad():
            for key, value in self.total.items():
                entries[key].copy_(value.to(entries[key].dtype))
        model.clear_text_cache()


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------

@TRAINER_REGISTRY.register()
class PromptSRC(RegularisedTrainer):
    SECTION = "PROMPTSRC"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        if cfg.TRAINER.PROMPTSRC.TEMPLATES not in TEMPLATE_SETS:
            raise ConfigError(f"TRAINER.PROMPTSRC.TEMPLATES is {cfg.TRAINER.PROMPTSRC.TEMPLATES!r}: "
                              f"choose one of {list(TEMPLATE_SETS)}")
        if cfg.TRAIN.EARLY_STOPPING or cfg.TEST.FINAL_MODEL == "best_val":
            raise ConfigError("PromptSRC's final model is the Gaussian aggregate of all its "
                              "epochs: turn TRAIN.EARLY_STOPPING off and set TEST.FINAL_MODEL "
                              "last_step")

    def build_model(self):
        super().build_model()
        settings = self.settings
        self.objective = PromptSRCLoss(self.model, settings.TEXT_LOSS_WEIGHT,
                                       settings.IMAGE_LOSS_WEIGHT, TEMPLATE_SETS[settings.TEMPLATES])
        self.gpa = GaussianPromptAggregation(
            gpa_weights(self.cfg.OPTIM.MAX_EPOCH, settings.GPA_MEAN, settings.GPA_STD))

    def rename_checkpoint_key(self, key):
        return super().rename_checkpoint_key(rename_upstream_key(key))

    def after_epoch(self):
        """Add this epoch's learner to the aggregate; after the last epoch the learner becomes
        the aggregate (before it is saved)."""
        self.gpa.add(self.epoch, learner_state_dict(self.model))
        if self.epoch + 1 == self.max_epoch:
            print("Gaussian prompt aggregation: the final model is the weighted sum over epochs")
            self.gpa.load_into(self.model)
        super().after_epoch()

    def _engine_state(self, rolling=False):
        state = super()._engine_state(rolling)
        state["gpa_total"] = self.gpa.total
        return state

    def _restore_loop_state(self, state):
        super()._restore_loop_state(state)
        self.gpa.total = state.get("gpa_total")
