"""Zero-shot CLIP, the baseline of the CoOp papers: evaluation only (run with --eval-only).

`ZeroshotCLIP` classifies with one hand-written template per dataset (CoOp's choice, e.g. EuroSAT
"a centered satellite photo of {}."); `ZeroshotCLIP2` averages the normalised text features of
CoOp's seven selected ImageNet templates and, for datasets other than ImageNet, the dataset's own
template (as upstream does). The class text features are computed once, when the trainer is
built; each test batch then costs one image encoding.
"""
import torch
from torch import nn
from yacs.config import CfgNode as CN

from dassl.config import ConfigError
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.utils import UserError
from trainers.prompting import (TEXT_CHUNK_SIZE, check_input_size, clip_logits, load_clip,
                                normalize, prompt_classname, tokenize)

# One template per dataset (CoOp's CUSTOM_TEMPLATES), keyed by DATASET.NAME.
DATASET_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
    "UserDataset": "a photo of a {}.",
}
# For a dataset without an entry above (e.g. one a user registered).
GENERIC_TEMPLATE = "a photo of a {}."

# CoOp's selection from CLIP's 80 ImageNet templates, used for prompt ensembling.
IMAGENET_TEMPLATES_SELECT = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


def extend_cfg(cfg):
    cfg.TRAINER.ZEROSHOTCLIP = CN()
    cfg.TRAINER.ZEROSHOTCLIP.PREC = "fp16"  # upstream evaluates CLIP in fp16 (GPU); fp32 on CPU
    # "" = the dataset's template (DATASET_TEMPLATES); else your own, e.g. "a photo of a {}, a bird"
    # (ZeroshotCLIP2 adds it to its ensemble on datasets other than ImageNet)
    cfg.TRAINER.ZEROSHOTCLIP.TEMPLATE = ""
    cfg.TRAINER.ZEROSHOTCLIP2 = CN()
    cfg.TRAINER.ZEROSHOTCLIP2.PREC = "fp16"


def dataset_template(dataset_name, template=""):
    """The template of a dataset, or `template` when given; it must hold one "{}"."""
    if not template:
        template = DATASET_TEMPLATES.get(dataset_name)
    if template is None:
        print(f"Note: no zero-shot template for dataset {dataset_name}; using "
              f'"{GENERIC_TEMPLATE}" (set TRAINER.ZEROSHOTCLIP.TEMPLATE to choose one)')
        template = GENERIC_TEMPLATE
    if template.count("{}") != 1:
        raise ConfigError(f'template "{template}" must contain "{{}}" exactly once, where the '
                         "class name goes (TRAINER.ZEROSHOTCLIP.TEMPLATE)")
    return template


def class_texts(template, classnames):
    return [template.format(prompt_classname(name)) for name in classnames]


@torch.no_grad()
def encode_texts(clip_model, texts, device):
    """Normalised CLIP text features [len(texts), embed_dim], encoded in chunks."""
    tokens = tokenize(texts, clip_model).to(device)
    return normalize(torch.cat([clip_model.encode_text(chunk)
                                for chunk in tokens.split(TEXT_CHUNK_SIZE)]))


def ensemble_text_features(clip_model, templates, classnames, device):
    """Normalised mean of each template's normalised class text features [C, embed_dim]."""
    total = sum(encode_texts(clip_model, class_texts(template, classnames), device)
                for template in templates)
    return normalize(total)


class ZeroshotClassifier(nn.Module):
    """CLIP with fixed class text features: logits = exp(logit_scale) * cosine."""

    def __init__(self, clip_model, text_features):
        super().__init__()
        self.clip_model = clip_model
        self.register_buffer("text_features", text_features)

    def forward(self, images):
        image_features = normalize(self.clip_model.encode_image(images))
        return clip_logits(image_features, self.text_features, self.clip_model.logit_scale)


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(TrainerX):
    """Zero-shot CLIP with the dataset's template. No model is registered: there is nothing to
    train, save or load."""

    def templates(self):
        cfg = self.cfg
        return [dataset_template(cfg.DATASET.NAME, cfg.TRAINER.ZEROSHOTCLIP.TEMPLATE)]

    def build_model(self):
        cfg = self.cfg
        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME}, precision: {self.precision})")
        clip_model = load_clip(cfg.MODEL.BACKBONE.NAME, self.precision,
                               cfg.MODEL.CUT_TEXT_AT_EOT).to(self.device)
        check_input_size(cfg, clip_model)
        templates = self.templates()
        classnames = self.dm.dataset.classnames
        if len(templates) == 1:
            print(f"Prompts: {class_texts(templates[0], classnames)}")
        else:
            print(f"Prompt ensembling (n={len(templates)}): {templates}")
        text_features = ensemble_text_features(clip_model, templates, classnames, self.device)
        self.model = ZeroshotClassifier(clip_model, text_features)

    def model_inference(self, images):
        with self.autocast():
            return self.model(images)

    def train(self):
        raise UserError(f"{type(self).__name__} has nothing to train: run train.py with "
                           "--eval-only")


@TRAINER_REGISTRY.register()
class ZeroshotCLIP2(ZeroshotCLIP):
    """Zero-shot CLIP with prompt ensembling over IMAGENET_TEMPLATES_SELECT, plus the dataset's
    own template on datasets other than ImageNet (upstream's choice)."""

    def templates(self):
        if self.cfg.DATASET.NAME == "ImageNet":
            return list(IMAGENET_TEMPLATES_SELECT)
        return [*IMAGENET_TEMPLATES_SELECT, *super().templates()]
