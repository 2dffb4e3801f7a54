"""Regularised methods over a choice of prompting: a regulariser (extra losses and modules) around
a prompt learner that already exists here, chosen by config.

    TRAINER.<METHOD>.PROMPTING: ivlp | maple | bmip

builds the learner of that prompting (IVLP's VLPromptLearner, MaPLe's or BMIP's) from its own
config section (TRAINER.IVLP / TRAINER.MAPLE / TRAINER.BMIP, with all their options), registers
the model under that prompting's name (its checkpoint folder) and reads upstream checkpoints with
that prompting's key names. A regulariser subclasses `RegularisedTrainer`, sets `SECTION` and
an `objective`: called with what `parse_batch_train` returns, it gives (loss, logits, terms); its frozen-CLIP targets come from the same encoders with
the prompts switched off (`PromptedCLIP.frozen_image_features` / `frozen_text_features`).

To put your own method on top of BMIP: subclass RegularisedTrainer, give it a config section with
PROMPTING (`add_prompting_key`) and your loss weights, and set PROMPTING bmip.
"""
from dataclasses import dataclass
from typing import Callable

from dassl.config import ConfigError
from dassl.metrics import compute_accuracy
from trainers import bmip, ivlp, maple
from trainers.prompting import PromptTrainer, clip_logits


@dataclass(frozen=True)
class Prompting:
    """A prompting a regulariser can run over."""
    learner: type                      # PromptLearner subclass: learner(cfg, classnames, clip)
    model_name: str                    # registered model name = checkpoint folder
    section: str                       # its config section, TRAINER.<section>
    check: Callable = lambda cfg: None  # rejects bad options before anything is built
    renamer: Callable = lambda cfg: (lambda key: key)  # cfg -> upstream checkpoint key -> ours
    # cfg -> whether a class's logit ignores the other classes (SimpleTrainer's classmethod)
    scores_classes_independently: Callable = lambda cfg: True


PROMPTINGS = {
    "ivlp": Prompting(ivlp.VLPromptLearner, ivlp.IVLP.MODEL_NAME, "IVLP",
                      renamer=lambda cfg: ivlp.rename_upstream_key),
    "maple": Prompting(maple.MultiModalPromptLearner, maple.MaPLe.MODEL_NAME, "MAPLE"),
    "bmip": Prompting(bmip.BMIPPromptLearner, bmip.BMIP.MODEL_NAME, "BMIP",
                      check=lambda cfg: bmip.check_options(cfg.TRAINER.BMIP),
                      renamer=bmip.authors_key_renamer,
                      scores_classes_independently=bmip.BMIP.scores_classes_independently),
}


def add_prompting_key(section, default):
    """PROMPTING, the prompting a regulariser runs over, in its config section."""
    section.PROMPTING = default  # ivlp | maple | bmip (options in TRAINER.IVLP / MAPLE / BMIP)


def prompting_of(cfg, section):
    """The Prompting that TRAINER.<section>.PROMPTING names; ConfigError for another value."""
    choice = cfg.TRAINER[section].PROMPTING
    if choice not in PROMPTINGS:
        raise ConfigError(f"TRAINER.{section}.PROMPTING is {choice!r}: choose one of "
                          f"{list(PROMPTINGS)}")
    return PROMPTINGS[choice]


class Objective:
    """Base of a regulariser's objective over a PromptedCLIP `model`: called on a batch, a
    subclass returns (total loss, logits, the terms by name)."""

    def __init__(self, model):
        self.model = model
        self._cached, self._cache_key = None, None

    def per_class_set(self, compute):
        """compute(), once per class set (and device) of the model's learner: frozen targets."""
        learner = self.model.prompt_learner
        key = (tuple(learner.classnames), learner.tokenized_prompts.device)
        if self._cache_key != key:
            self._cached, self._cache_key = compute(), key
        return self._cached

    def prompted(self, images):
        """The prompted model's (text features, image features, logits) of `images`."""
        model = self.model
        text, image = model.text_features(), model.image_features(images)
        return text, image, clip_logits(image, text, model.logit_scale)


class RegularisedTrainer(PromptTrainer):
    """A PromptTrainer whose learner is the prompting TRAINER.<SECTION>.PROMPTING names."""

    SECTION = ""  # the regulariser's config section under TRAINER

    @property
    def settings(self):
        return self.cfg.TRAINER[self.SECTION]

    @property
    def prompting(self):
        return prompting_of(self.cfg, self.SECTION)

    @property
    def MODEL_NAME(self):  # noqa: N802 (the attribute PromptTrainer reads)
        return self.prompting.model_name

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        prompting_of(cfg, self.SECTION).check(cfg)

    @classmethod
    def scores_classes_independently(cls, cfg):
        """As the prompting does (BMIP with ATTN_POOL authors mixes classes)."""
        return prompting_of(cfg, cls.SECTION).scores_classes_independently(cfg)

    def build_prompt_learner(self, classnames, clip_model):
        prompting = self.prompting
        print(f"{self.cfg.TRAINER.NAME} over {prompting.learner.__name__} "
              f"(TRAINER.{self.SECTION}.PROMPTING {self.settings.PROMPTING}, its options in "
              f"TRAINER.{prompting.section})")
        return prompting.learner(self.cfg, classnames, clip_model)

    def rename_checkpoint_key(self, key):
        return self.prompting.renamer(self.cfg)(key)

    def forward_backward(self, batch):
        """One step on `self.objective(*inputs, labels)`; every loss term is logged."""
        *inputs, labels = self.parse_batch_train(batch)
        with self.autocast():
            loss, logits, terms = self.objective(*inputs, labels)
        self.model_backward_and_update(loss)
        summary = {"loss": loss.item(), **{key: value.item() for key, value in terms.items()},
                   "acc": compute_accuracy(logits, labels)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary
