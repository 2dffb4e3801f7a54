"""CoPrompt: consistency-guided prompt learning (Roy & Etemad, ICLR 2024), over a choice of
prompting.

A regulariser around the prompting TRAINER.COPROMPT.PROMPTING names (maple as published; ivlp;
bmip for the BMIP paper's Table 4), with the prompting's options in its own section:

- residual adapters on both encoders' outputs (before normalisation):
  f <- r * adapter(f) + (1 - r) * f, adapter = Linear(D, D/4) ReLU Linear(D/4, D) ReLU (no bias),
  r = 0.1 for images, 0.2 for text; they are part of the learner (keys prompt_learner.adapter_*);
- consistency with the frozen encoders, weighted by W: text features against frozen CLIP's
  features of one LLM description per class, drawn at random each step (the same draw for every
  class, as CoPrompt does); image features against frozen CLIP's features of a second augmented
  view of the batch (DATALOADER.K_TRANSFORMS 2); distance DISTILL cosine (1 - mean cosine
  similarity) or mse;

    loss = CE(logits of view 1, y) + W * (d(text, text targets) + d(image, image targets))

The description features are computed once per class set, the image targets once per batch,
without gradients, from the same encoders with the prompts switched off. The descriptions are
CoPrompt's published files (`python -m datasets.prepare NAME --root $DATA
--coprompt-descriptions`) or a JSON file of your own (TRAINER.COPROMPT.DESCRIPTIONS).
"""
import random

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

import clip
from dassl.config import ConfigError
from dassl.engine import TRAINER_REGISTRY
from datasets.descriptions import default_path, load_descriptions
from trainers.prompting import PromptedCLIP, normalize, rename_by_patterns
from trainers.regularised import Objective, RegularisedTrainer, add_prompting_key

DISTANCES = ("cosine", "mse")

# Upstream CoPrompt keeps its adapters on the CustomCLIP and a full copy of CLIP (model_distill):
# the adapters are ours under the learner; the copy's entries are CLIP's, checked as such.
UPSTREAM_KEYS = [
    (r"adapter_(image|text)\.(.+)", r"prompt_learner.adapter_\1.\2"),
    (r"model_distill\.visual\.(.+)", r"image_encoder.\1"),
    (r"model_distill\.logit_scale", "logit_scale"),
    (r"model_distill\.(.+)", r"text_encoder.\1"),
]
rename_upstream_key = rename_by_patterns(UPSTREAM_KEYS)


def extend_cfg(cfg):
    cfg.TRAINER.COPROMPT = CN()
    add_prompting_key(cfg.TRAINER.COPROMPT, "maple")
    cfg.TRAINER.COPROMPT.PREC = "fp16"  # fp16, fp32, amp
    cfg.TRAINER.COPROMPT.W = 1.0  # weight of the consistency terms (upstream TRAINER.W)
    cfg.TRAINER.COPROMPT.DISTILL = "cosine"  # cosine | mse (upstream TRAINER.DISTILL)
    cfg.TRAINER.COPROMPT.IMAGE_ADAPTER_RATIO = 0.1
    cfg.TRAINER.COPROMPT.TEXT_ADAPTER_RATIO = 0.2
    cfg.TRAINER.COPROMPT.ADAPTER_REDUCTION = 4
    # JSON file: class name -> list of sentences; "" = <DATASET.ROOT>/coprompt_descriptions/<file>
    # as `python -m datasets.prepare NAME --root $DATA --coprompt-descriptions` writes it
    cfg.TRAINER.COPROMPT.DESCRIPTIONS = ""


class Adapter(nn.Module):
    """CoPrompt's adapter (upstream names: fc.0, fc.2)."""

    def __init__(self, width, reduction):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(width, width // reduction, bias=False), nn.ReLU(),
                                nn.Linear(width // reduction, width, bias=False), nn.ReLU())

    def forward(self, x):
        return self.fc(x)


def residual(adapter, features, ratio):
    features = features.float()
    return ratio * adapter(features) + (1 - ratio) * features


class CoPromptCLIP(PromptedCLIP):
    """PromptedCLIP whose features pass through the learner's residual adapters."""

    def __init__(self, clip_model, prompt_learner, image_ratio, text_ratio):
        super().__init__(clip_model, prompt_learner)
        self.image_ratio, self.text_ratio = image_ratio, text_ratio

    def adapt_image_features(self, features):
        return residual(self.prompt_learner.adapter_image, features, self.image_ratio)

    def adapt_text_features(self, features):
        return residual(self.prompt_learner.adapter_text, features, self.text_ratio)


def add_adapters(learner, embed_dim, reduction):
    """CoPrompt's adapters, held (trained and saved) by the prompting's learner."""
    learner.adapter_image = Adapter(embed_dim, reduction)
    learner.adapter_text = Adapter(embed_dim, reduction)
    return learner


def consistency(features, targets, distance):
    if distance == "cosine":
        return 1 - F.cosine_similarity(features, targets, dim=1, eps=1e-7).mean()
    return F.mse_loss(features, targets)


class CoPromptLoss(Objective):
    """The CoPrompt objective of a CoPromptCLIP, given each class's descriptions."""

    def __init__(self, model, descriptions, weight, distance, rng=random):
        super().__init__(model)
        self.descriptions = descriptions
        self.weight, self.distance, self.rng = weight, distance, rng

    def description_features(self):
        """Per class, frozen CLIP's normalised features of its descriptions [n_c, D]; computed
        once per class set."""
        return self.per_class_set(self._encode_descriptions)

    @torch.no_grad()
    def _encode_descriptions(self):
        tokens = self.model.prompt_learner.tokenized_prompts
        return [normalize(self.model.frozen_text_features(clip.tokenize(
            sentences, context_length=tokens.shape[1], truncate=True).to(tokens.device)))
            for sentences in self.descriptions]

    def text_targets(self):
        """One description per class: the k-th, k drawn at random (k modulo a class's count when
        classes have fewer)."""
        features = self.description_features()
        k = self.rng.randrange(max(len(f) for f in features))
        return torch.stack([f[k % len(f)] for f in features])

    def __call__(self, view, other_view, labels):
        """(total loss, logits, the terms by name)."""
        model = self.model
        # Frozen targets first: their pass's buffers are freed before the graph is built.
        image_targets = model.frozen_image_features(other_view)
        text_targets = self.text_targets()
        text, image, logits = self.prompted(view)
        terms = {
            "ce": F.cross_entropy(logits, labels),
            "consistency_text": self.weight * consistency(text, text_targets, self.distance),
            "consistency_image": self.weight * consistency(image, image_targets, self.distance),
        }
        return sum(terms.values()), logits, terms


@TRAINER_REGISTRY.register()
class CoPrompt(RegularisedTrainer):
    SECTION = "COPROMPT"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        settings = cfg.TRAINER.COPROMPT
        if settings.DISTILL not in DISTANCES:
            raise ConfigError(f"TRAINER.COPROMPT.DISTILL is {settings.DISTILL!r}: choose one of "
                              f"{list(DISTANCES)}")
        if cfg.DATALOADER.K_TRANSFORMS != 2:
            raise ConfigError("CoPrompt compares each image with a second augmented view: set "
                              f"DATALOADER.K_TRANSFORMS 2 (it is {cfg.DATALOADER.K_TRANSFORMS})")

    def build_prompt_learner(self, classnames, clip_model):
        learner = super().build_prompt_learner(classnames, clip_model)
        return add_adapters(learner, clip_model.text_projection.shape[1],
                            self.settings.ADAPTER_REDUCTION)

    def build_custom_clip(self, clip_model, prompt_learner):
        settings = self.settings
        return CoPromptCLIP(clip_model, prompt_learner, settings.IMAGE_ADAPTER_RATIO,
                            settings.TEXT_ADAPTER_RATIO)

    def before_train(self):
        """The descriptions are read for training only (an evaluation needs none)."""
        cfg, settings = self.cfg, self.settings
        path = settings.DESCRIPTIONS or default_path(cfg.DATASET.ROOT, cfg.DATASET.NAME)
        descriptions = load_descriptions(path, self.model.prompt_learner.classnames)
        print(f"CoPrompt: {sum(map(len, descriptions))} class descriptions from {path}")
        self.objective = CoPromptLoss(self.model, descriptions, settings.W, settings.DISTILL)
        super().before_train()

    def rename_checkpoint_key(self, key):
        return super().rename_checkpoint_key(rename_upstream_key(key))

    def parse_batch_train(self, batch):
        view, other_view = batch["img"]
        return view.to(self.device), other_view.to(self.device), batch["label"].to(self.device)
