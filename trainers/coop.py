"""CoOp: context optimization (Zhou et al., "Learning to Prompt for Vision-Language Models").

The class prompts are "X X ... X <class>." with the n_ctx placeholder words replaced by learned
context vectors (CTX_INIT: initialised from the embeddings of those words instead). CSC gives every
class its own context; CLASS_TOKEN_POSITION puts the class name after the context (end), between
its two halves (middle) or before it (front).

Checkpoints follow the CoOp codebase, which registers the prompt learner alone as
"prompt_learner": its keys are `ctx` (+ `token_prefix` / `token_suffix`, class-name buffers that
are ignored on load). Ours are written with the same keys and hold the trained parameters only, so
files move both ways between the codebases. CoCoOp (trainers/cocoop.py) shares these rules.
"""
import torch
from torch import nn
from yacs.config import CfgNode as CN

from dassl.config import ConfigError
from dassl.engine import TRAINER_REGISTRY
from trainers.prompting import (LEARNER_PREFIX, LayerPrompts, PromptLearner, PromptTrainer,
                                learner_state_dict, prompt_classname, prompt_words,
                                random_prompts, text_width, tokenize, word_embeddings)

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")


def extend_cfg(cfg):
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16  # number of context vectors
    cfg.TRAINER.COOP.CSC = False  # class-specific contexts
    cfg.TRAINER.COOP.CTX_INIT = ""  # words initialising the context (then N_CTX = their count)
    cfg.TRAINER.COOP.PREC = "fp16"  # fp16, fp32, amp
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"  # end, middle or front


def coop_context(clip_model, n_ctx, ctx_init, n_cls=None):
    """CoOp's initial context and the prompt prefix it stands for: (ctx, prefix).

    With `ctx_init`, the context is the token embeddings of its first w tokens, w = its number of
    words (n_ctx is then not used), one context shared by all classes. Otherwise N(0, 0.02^2)
    vectors standing for n_ctx words "X": [n_ctx, d], or [n_cls, n_ctx, d] when `n_cls` is given
    (class-specific contexts)."""
    ctx_init = prompt_words(ctx_init)
    if ctx_init:
        n_words = len(ctx_init.split())
        return word_embeddings(clip_model, ctx_init, n_words), ctx_init
    width, placeholders = text_width(clip_model), " ".join(["X"] * n_ctx)
    if n_cls is None:
        return random_prompts(n_ctx, width), placeholders
    return random_prompts(n_cls * n_ctx, width).view(n_cls, n_ctx, width), placeholders


def announce_context(n_ctx, prefix, n_ctx_asked, csc_overridden):
    """Log the context as CoOp does, and say which settings CTX_INIT overrides."""
    print(f'Initial context: "{prefix}"')
    print(f"Number of context words (tokens): {n_ctx}")
    if n_ctx != n_ctx_asked:
        print(f"Note: CTX_INIT sets the number of context tokens ({n_ctx}); N_CTX "
              f"{n_ctx_asked} is not used")
    if csc_overridden:
        print("Note: CSC is not used with CTX_INIT: the word-initialised context is shared by "
              "all classes (as in CoOp)")


def name_lengths(classnames, clip_model):
    """Number of tokens of each class name, spelt as in the prompts."""
    tokens = tokenize([prompt_classname(name) for name in classnames], clip_model)
    return (tokens.argmax(dim=-1) - 1).tolist()


def class_token_order(position, n_ctx, n_prefix, lengths, context_length):
    """[n_cls, context_length] source positions that rearrange each tokenized prompt
    "SOS <prefix: n_prefix tokens> <name> . EOT" so that the class name stands at `position`
    relative to the context (the first n_ctx prefix tokens; any further prefix tokens stay with
    them): end keeps the order, front moves the name before the context, middle between its
    first n_ctx // 2 tokens and the rest. EOT keeps its position. (CoOp moves the tokens right
    after the first n_ctx ones instead: the same unless CTX_INIT has words of several tokens.)"""
    context = list(range(1, 1 + n_prefix))
    half = n_ctx // 2
    orders = []
    for length in lengths:
        name = list(range(1 + n_prefix, 1 + n_prefix + length))
        if position == "end":
            body = context + name
        elif position == "front":
            body = name + context
        else:
            body = context[:half] + name + context[half:]
        rest = list(range(1 + n_prefix + length, context_length))
        orders.append([0] + body + rest)
    return torch.tensor(orders)


class CoOpPromptLearner(PromptLearner):
    def __init__(self, cfg, classnames, clip_model):
        coop = cfg.TRAINER.COOP
        if coop.CLASS_TOKEN_POSITION not in CLASS_TOKEN_POSITIONS:
            raise ConfigError(f'TRAINER.COOP.CLASS_TOKEN_POSITION "{coop.CLASS_TOKEN_POSITION}" '
                             f"must be one of {list(CLASS_TOKEN_POSITIONS)}")
        n_cls = len(classnames) if coop.CSC else None
        ctx, prefix = coop_context(clip_model, coop.N_CTX, coop.CTX_INIT, n_cls)
        super().__init__(classnames, clip_model, prefix)
        self.ctx = nn.Parameter(ctx)
        announce_context(self.n_ctx, prefix, coop.N_CTX, coop.CSC and ctx.dim() == 2)
        self.class_token_position = coop.CLASS_TOKEN_POSITION
        order = class_token_order(self.class_token_position, self.n_ctx, self.n_prefix_tokens,
                                  name_lengths(classnames, clip_model), clip_model.context_length)
        # Depends on the class names of the current split: never saved.
        self.register_buffer("token_order", order, persistent=False)

    @property
    def n_ctx(self):
        return self.ctx.shape[-2]

    def text_prompts(self):
        return LayerPrompts(self.ctx)

    def text_embeddings(self, embeddings, rows, prompts):
        """The context written after SOS (as for every learner), then the class name moved to
        CLASS_TOKEN_POSITION."""
        x = super().text_embeddings(embeddings, rows, prompts)
        order = self.token_order[rows].unsqueeze(-1).expand_as(x)
        return x.gather(1, order)


def upstream_learner_key(key):
    """Our name of a key of a learner-only checkpoint (`ctx` -> `prompt_learner.ctx`)."""
    return key if key.startswith(LEARNER_PREFIX) else LEARNER_PREFIX + key


class LearnerOnlyCheckpoints(PromptTrainer):
    """Checkpoints in the CoOp codebase's format: the prompt learner's own keys (`ctx`, ...),
    without the `prompt_learner.` prefix of a whole-model state dict."""

    MODEL_NAME = "prompt_learner"

    def state_dict_to_save(self, name):
        return {key[len(LEARNER_PREFIX):]: value
                for key, value in learner_state_dict(self._models[name]).items()}

    def rename_checkpoint_key(self, key):
        return upstream_learner_key(key)


@TRAINER_REGISTRY.register()
class CoOp(LearnerOnlyCheckpoints):
    def build_prompt_learner(self, classnames, clip_model):
        return CoOpPromptLearner(self.cfg, classnames, clip_model)
