"""The prompt-learning core: every prompting method is a prompt learner plugged into this module.

CLIP's blocks are never forked. The prompted encoders run CLIP's own blocks and, before a block
that has prompts, write the tokens the method supplies for that layer at the prompt positions:

- text: right after SOS (positions 1..n), over placeholder words of the class prompts;
- image: after the patch tokens (the last n positions), appended before ``ln_pre`` as MaPLe does.

Usage (a new method = a prompt learner + a small trainer)::

    from trainers.prompting import (LayerPrompts, PromptLearner, PromptTrainer, init_context,
                                    per_layer)

    class MyPromptLearner(PromptLearner):
        def __init__(self, cfg, classnames, clip_model):
            ctx, prefix = init_context(clip_model, n_ctx=2, ctx_init="a photo of a")
            super().__init__(classnames, clip_model, prompt_prefix=prefix)
            self.ctx = nn.Parameter(ctx)                   # fp32 master weights
            self.deep = nn.ParameterList(...)              # deep[j] is written before block j + 1

        def text_prompts(self):                            # None: plain CLIP text encoder
            return LayerPrompts(first=self.ctx, deep=per_layer(self.deep))

        def image_prompts(self):                           # None: plain CLIP image encoder
            return None

    @TRAINER_REGISTRY.register()
    class MyMethod(PromptTrainer):
        MODEL_NAME = "prompt_learner"                      # registered name = checkpoint folder

        def build_prompt_learner(self, classnames, clip_model):
            return MyPromptLearner(self.cfg, classnames, clip_model)

The pieces:

- ``LayerPrompts(first, deep)``: ``first`` is the layer-0 tokens, [n, d] shared or [B, n, d] one
  set per sequence; ``deep(layer: LayerInput) -> Tensor | None`` is called before every block
  i >= 1 with the hidden state entering it (``layer.x``, [B, L, d]), the block itself (its
  ``ln_1`` / ``attn`` for methods that look at attention), ``layer.n_prompts``, the block's
  ``attn_mask`` and, on the text side, each row's EOT position (``layer.qkv()``: the block's
  queries, keys and values of ``layer.x``, computed once and reused by the block); it returns [n, d] or [B, n, d]
  tokens for the prompt positions, or None to let the tokens already there flow on. The number of
  prompt tokens n is set by ``first`` and stays the same in every layer (a method that uses 2b
  tokens, e.g. two sets side by side, supplies 2b from layer 0 on and tokenizes 2b placeholders).
- ``PromptLearner``: base class of a method's learnable part; holds the tokenized class prompts
  (``tokenized_prompts``, built from ``prompt_prefix + " " + classname + "."``); the n text
  prompt tokens overwrite the first n tokens of the prefix, so the prefix needs >= n words.
  ``text_embeddings(embeddings, rows, prompts)`` builds the text encoder's layer-0 input for a
  chunk of class rows (default: ``prompts.first`` written after SOS); a learner that arranges
  its tokens otherwise overrides it (CoOp moves the class name before or inside the context).
  Everything a learner holds is trained and saved; nothing of CLIP may be stored in it (read
  CLIP's sub-modules from ``LayerInput.block`` or pass what you need at call time).
- Helpers: ``load_clip``, ``tokenize``, ``init_context`` (MaPLe / IVLP CTX_INIT rule),
  ``prompt_classname`` / ``prompt_words`` (how class names and CTX_INIT are spelt in prompts),
  ``word_embeddings`` (token embeddings of CTX_INIT words), ``random_prompts``, ``prompt_list``,
  ``LayerwisePrompts`` (independent per-layer tokens), ``per_layer``,
  ``text_width`` / ``vision_width`` / ``num_text_layers`` / ``num_vision_layers`` (all sizes
  come from the loaded CLIP), ``check_depth``, ``normalize`` (fp32 L2-normalised features),
  ``learner_state_dict`` / ``LEARNER_PREFIX`` (the learner's checkpoint entries and their key
  prefix), ``rename_by_patterns`` (upstream key maps).
- ``PromptedCLIP(clip_model, prompt_learner)``: the model a trainer registers. CLIP stays frozen
  and in eval mode (``train()`` never flips its BatchNorm); ``forward(images)`` returns logits =
  exp(logit_scale) * cosine. Text features are encoded in chunks of ``text_chunk_size`` classes
  and, when the text side does not depend on the image, cached during an evaluation
  (``eval()`` + ``torch.no_grad()``); any ``train()`` / ``eval()`` call or checkpoint load drops
  the cache. A method whose text depends on the image (CoCoOp) overrides ``forward``.
  The text tower runs the class prompts cut after the last EOT token of the chunk (positions
  and causal mask cut to match; the same features): ``MODEL.CUT_TEXT_AT_EOT`` False runs all
  77 positions. The towers compute their last block only where it is read out, the image's
  [CLS] and each class prompt's EOT (queries, attention, projection and MLP of those rows; keys
  and values of all).
  ``frozen_image_features(images)`` / ``frozen_text_features(tokens)`` run the same encoders with
  the prompts switched off, without gradients: frozen CLIP's features, the targets of regularised
  methods (trainers/regularised.py), without a second CLIP. ``adapt_image_features`` /
  ``adapt_text_features`` (identity) see the encoders' unnormalised outputs before they are
  normalised: a subclass adds modules there (CoPrompt's adapters).
  ``set_grad_checkpointing()`` (``MODEL.GRAD_CHECKPOINTING``) runs each CLIP block of the
  prompted towers under ``torch.utils.checkpoint`` in training, with its deep-prompt callback and
  the write of its prompts: backward runs the callback again on the same input (a callback must
  be a function of its input and parameters), except for what it keeps with ``LayerInput.reuse``.
  ``text_checkpoint_classes`` (``MODEL.TEXT_CHECKPOINT_CLASSES``, default 256) does so for the
  text tower alone when there are more classes than that (negative: never).
- ``PromptTrainer(TrainerX)``: ``build_model`` (load CLIP from ``MODEL.BACKBONE.NAME`` at the
  engine's ``self.precision``, build the learner, freeze CLIP, register ``MODEL_NAME``),
  ``forward_backward`` (cross-entropy under ``self.autocast()``), ``model_inference``, and the
  checkpoint rules: ``state_dict_to_save`` keeps the learner's entries only;
  ``load_state_dict_into`` renames upstream keys (``rename_checkpoint_key``), ignores upstream
  frozen-CLIP entries (``image_encoder.*``, ``text_encoder.*``, ``logit_scale``) after checking
  their shapes against the loaded CLIP, and is strict on the learner's entries: a checkpoint that
  does not fit raises ``CheckpointMismatchError`` naming the keys and shapes.

Precision: learner parameters (and the optimizer) are fp32 in every mode; their tokens are cast
to CLIP's dtype where they are written, and features are normalised and compared in fp32. CLIP's
frozen weights are fp16 for PREC fp16 (CUDA), bf16 for PREC bf16 (CPU or CUDA; also what fp16
and amp configs run on a CPU with native bf16), fp32 otherwise (amp runs fp32 weights under the
engine's autocast, on CUDA only).
"""
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

import clip
from clip.model import VisionTransformer, slow_bf16_backward, text_length
from dassl.config import ConfigError
from dassl.engine import TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import UserError, load_checkpoint

# Standard deviation of randomly initialised prompt tokens (CoOp, VPT, MaPLe, IVLP all use it).
PROMPT_INIT_STD = 0.02
# MaPLe / IVLP initialise the context from CTX_INIT only for at most this many tokens; beyond it
# they fall back to random vectors (kept so that their configs mean the same here).
MAX_WORD_INIT_TOKENS = 4
# Prefixes of the frozen CLIP entries in upstream full-model checkpoints; their values are CLIP's.
UPSTREAM_FROZEN_PREFIXES = ("image_encoder.", "text_encoder.", "logit_scale")
# The image tower's read-out position ([CLS]): the only output of its last block used.
CLS = slice(0, 1)
# Buffers of upstream learners that depend on the class names of the split they were saved on.
UPSTREAM_CLASSNAME_BUFFERS = ("prompt_learner.token_prefix", "prompt_learner.token_suffix")
LEARNER_PREFIX = "prompt_learner."
# Class prompts encoded at once (PromptedCLIP, CoCoOp, zero-shot CLIP): bounds memory for
# datasets with many classes.
TEXT_CHUNK_SIZE = 256
# In training, the text tower's blocks are recomputed in backward above this many classes
# (MODEL.TEXT_CHECKPOINT_CLASSES): the class prompts' activations dominate a step's memory there.
TEXT_CHECKPOINT_CLASSES = 256


def extend_cfg(cfg):
    # Recompute each CLIP block in backward instead of keeping its activations: less memory with
    # many classes (every class prompt runs through the text tower), about one more forward pass.
    cfg.MODEL.GRAD_CHECKPOINTING = False
    # The same for the text tower alone, when training with more classes than this (ImageNet):
    # the same results, the class prompts' activations kept per block input only, about one more
    # forward pass of the text tower. 0: always; a negative value: never.
    cfg.MODEL.TEXT_CHECKPOINT_CLASSES = TEXT_CHECKPOINT_CLASSES
    # Run the text tower on the class prompts cut after their last EOT token, not at CLIP's 77
    # positions: the same features (causal mask), a fraction of the work. False: full length
    # (for speed comparisons).
    cfg.MODEL.CUT_TEXT_AT_EOT = True


# ---------------------------------------------------------------------------------------------
# CLIP loading and the class prompts
# ---------------------------------------------------------------------------------------------

# Frozen CLIP weights stored in half precision for these PREC values (amp keeps them fp32).
WEIGHT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def load_clip(backbone_name, precision="fp32", cut_text_at_eot=True):
    """CLIP from an OpenAI model name or a local file, on CPU, in eval mode; `cut_text_at_eot`
    (MODEL.CUT_TEXT_AT_EOT) sets its `cut_at_eot`, which the prompted text encoder copies.

    `precision` is the engine's resolved one (fp16 | bf16 | fp32 | amp; fp16 and amp never on
    CPU): weights are stored in fp16 for "fp16", in bf16 for "bf16", in fp32 otherwise."""
    # Eval mode on CPU; fp32, or the weights convert_weights_to casts loaded in half precision.
    model, _ = clip.load(backbone_name, device="cpu", weight_dtype=WEIGHT_DTYPES.get(precision))
    model.cut_at_eot = cut_text_at_eot
    return model


def input_size_problem(cfg, clip_model):
    """What to change when INPUT.SIZE does not fit CLIP's positional embeddings, else None."""
    resolution = clip_model.visual.input_resolution
    if tuple(cfg.INPUT.SIZE) != (resolution, resolution):
        return (f"INPUT.SIZE {tuple(cfg.INPUT.SIZE)} does not match the input resolution of CLIP "
                f"{cfg.MODEL.BACKBONE.NAME!r} ({resolution}): "
                f"set INPUT.SIZE ({resolution}, {resolution})")
    return None


def check_input_size(cfg, clip_model):
    """CLIP's positional embeddings fix the image size: fail early with the key to change."""
    problem = input_size_problem(cfg, clip_model)
    if problem:
        raise ConfigError(problem)


def text_width(clip_model):
    return clip_model.ln_final.weight.shape[0]


def vision_transformer(clip_model):
    """CLIP's image tower; image prompts need a ViT backbone."""
    if not isinstance(clip_model.visual, VisionTransformer):
        raise ConfigError("image prompts need a ViT CLIP backbone (MODEL.BACKBONE.NAME, e.g. ViT-B/16), "
                         f"not a {type(clip_model.visual).__name__} one")
    return clip_model.visual


def vision_width(clip_model):
    """Width of the image transformer's tokens."""
    return vision_transformer(clip_model).width


def num_text_layers(clip_model):
    return len(clip_model.transformer.resblocks)


def num_vision_layers(clip_model):
    return len(vision_transformer(clip_model).transformer.resblocks)


class DoesNotFit(ConfigError):
    """A setting that does not fit the CLIP backbone's shape (a prompt depth): said together
    with the image size, so that every key to change is named at once."""


def check_depth(name, depth, max_depth, minimum=1):
    """A prompt depth must fit the encoder it prompts."""
    if not minimum <= depth <= max_depth:
        raise DoesNotFit(f"{name} is {depth}: it must be between {minimum} and {max_depth} "
                         "(the number of layers of the CLIP encoder it prompts)")


def tokenize(texts, clip_model):
    """CLIP's tokens of ``texts``; a prompt longer than the text encoder takes is a ConfigError
    naming what to shorten (context tokens, class names)."""
    try:
        return clip.tokenize(texts, context_length=clip_model.context_length)
    except RuntimeError as error:
        found = re.match(r"Input (.*) is too long for context length \d+ \((\d+) tokens\)", str(error), re.S)
        if not found:
            raise
        prompt = re.sub(r"\b(\w+)( \1){3,}\b", lambda run: f"{run.group(1)} x{len(run.group().split())}",
                        found.group(1))
        raise ConfigError(f"the prompt {prompt} has {found.group(2)} tokens, more than the "
                          f"{clip_model.context_length} that CLIP's text encoder takes: lower the number of "
                          "context tokens (TRAINER.<METHOD>.N_CTX) or shorten the class names") from error


def prompt_classname(classname):
    """A class name as prompts spell it: underscores read as spaces (as upstream does)."""
    return classname.replace("_", " ")


def prompt_words(ctx_init):
    """CTX_INIT as prompt words: underscores read as spaces, outer spaces dropped."""
    return ctx_init.replace("_", " ").strip()


def class_prompts(prompt_prefix, classnames):
    """The text of each class prompt: "<prefix> <class name>." (`prompt_classname`)."""
    names = [prompt_classname(name) for name in classnames]
    return [f"{prompt_prefix} {name}." if prompt_prefix else f"{name}." for name in names]


def random_prompts(n_tokens, width):
    """[n_tokens, width] fp32 tokens drawn from N(0, PROMPT_INIT_STD^2)."""
    return nn.init.normal_(torch.empty(n_tokens, width), std=PROMPT_INIT_STD)


def word_embeddings(clip_model, words, n_tokens):
    """Token embeddings (fp32) of the first n_tokens tokens of `words`."""
    tokens = tokenize(words, clip_model)
    n_words = int(tokens[0].argmax()) - 1  # tokens between SOS and EOT
    if n_words < n_tokens:
        raise ConfigError(f"CTX_INIT {words!r} has {n_words} tokens, fewer than the {n_tokens} "
                         "context tokens asked for: give more words or set CTX_INIT to \"\"")
    with torch.no_grad():
        embedding = clip_model.token_embedding(tokens).float()
    return embedding[0, 1:1 + n_tokens].clone()


def init_context(clip_model, n_ctx, ctx_init):
    """Initial text context and the prompt prefix it stands for (MaPLe / IVLP rule).

    With CTX_INIT and n_ctx <= 4, the context is the embeddings of the first n_ctx tokens of
    CTX_INIT and the class prompts are "<CTX_INIT> <class>.", whose first n_ctx tokens the context
    replaces (so "a photo of a" with n_ctx 2 learns "a photo" and keeps "of a"). Otherwise the
    context is random and stands for n_ctx placeholder words "X".
    """
    ctx_init = prompt_words(ctx_init)
    if ctx_init and n_ctx <= MAX_WORD_INIT_TOKENS:
        return word_embeddings(clip_model, ctx_init, n_ctx), ctx_init
    return random_prompts(n_ctx, text_width(clip_model)), " ".join(["X"] * n_ctx)


def prompt_list(count, n_tokens, width):
    """`count` independent random prompts of [n_tokens, width] (deep prompts, one per layer)."""
    return nn.ParameterList(nn.Parameter(random_prompts(n_tokens, width)) for _ in range(count))


# ---------------------------------------------------------------------------------------------
# What a method writes into an encoder
# ---------------------------------------------------------------------------------------------

def _flash_attention(q, k, v):
    """Output [B, heads, Lq, head_width] and log-sum-exp of the scaled scores [B, heads, Lq]
    (fp32) of torch's fused CPU attention, the kernel scaled_dot_product_attention runs."""
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)


def _converted(t, dtype):
    """t in `dtype`, laid out in memory as t is (t itself when it has the dtype): converted
    in one pass over t's memory in order. A permuted view's own `.to` walks its strides: 5x
    slower for a block's q/k/v [3, B, heads, L, head_width] of ViT-B/16 shapes."""
    if t.dtype == dtype:
        return t
    order = sorted(range(t.dim()), key=lambda d: -t.stride(d))
    in_memory = t.permute(order)
    if not in_memory.is_contiguous():
        return t.to(dtype)
    inverse = sorted(range(t.dim()), key=order.__getitem__)
    return in_memory.to(dtype).permute(inverse)


class ContextAttention:
    """The attention of one block's context (the positions before the prompt: CLS and patches)
    over the context keys alone: its output [B, heads, Lc, head_width] and the log-sum-exp of
    each query's scores [B, heads, Lc] (fp32), one fused CPU attention call (computed without
    gradients: the block's come from `attend`).
    The softmax over the context plus any prompt keys follows from them exactly (a softmax split
    in two parts), without scoring the context again: a callback reads the weights the context
    gives the prompt keys entering the block (`prompt_weights`), and the block then attends over
    the context and the prompts written for it (`attend`): the context is scored once.

    `qkv` [3, B, heads, L, head_width] are the block's queries, keys and values (`attn.qkv`),
    context first, then the n_prompts = L - `n_context` prompt positions; the attention runs in
    `dtype` (default: theirs). `self.qkv` holds them detached in that dtype: a converted copy,
    or else the block's own tensor, whose prompt rows `attend` then overwrites."""

    def __init__(self, qkv, n_context, dtype=None):
        self.n_context = n_context
        with torch.no_grad():
            self.qkv = _converted(qkv.detach(), dtype or qkv.dtype)
            q, k, v = (t[:, :, :n_context] for t in self.qkv)
            self.out, self.lse = _flash_attention(q, k, v)
            # The context queries in fp32, contiguous, for every prompt_weights call: q is a
            # strided view into the fused projection, which a batched product would copy (and
            # convert) again at each call.
            self.queries = q.float().contiguous()
        self.scale = q.shape[-1] ** -0.5

    @torch.no_grad()
    def prompt_weights(self, k):
        """Softmax weights [B, heads, Lc, n] (fp32) that the context queries give the prompt
        keys k [B, heads, n, head_width] among the context keys and these, and the log-sum-exp
        of the context queries' scores over all of them [B, heads, Lc]."""
        # k q^T transposed: one product per head with the few prompt keys as rows, which the
        # CPU's batched GEMM runs about 3x faster than q k^T's two-column result at ViT shapes.
        scores = (k.float() @ self.queries.transpose(-1, -2)).transpose(-1, -2) * self.scale
        lse = torch.logaddexp(self.lse, torch.logsumexp(scores, dim=-1))
        return torch.exp(scores - lse.unsqueeze(-1)), lse

    def attend(self, qkv, prompt_qkv=None):
        """Attention output [B, heads, L, head_width] of the block's `qkv` (what this was built
        from) with the prompt positions' rows replaced by `prompt_qkv` [3, B, heads, n,
        head_width] (None: kept): scaled_dot_product_attention's output, in qkv's dtype,
        differentiable in both (the fused kernel's gradient, from the output and log-sum-exp
        assembled here; none reaches the replaced rows of qkv)."""
        return _CompletedAttention.apply(qkv, prompt_qkv, self)


class _CompletedAttention(torch.autograd.Function):
    """ContextAttention.attend: the context queries over the prompt keys added to the context's
    part, the prompt queries over all keys; backward by the fused kernel's own.

    The new prompt rows are written into `context.qkv` here, outside autograd, and the gradient
    is assembled for qkv and prompt_qkv directly, in their dtype and in qkv's layout (the fused
    projection's output): recording the write, the dtype conversion and the split into q, k, v
    would cost a copy of the whole gradient each in backward."""

    @staticmethod
    def forward(ctx, qkv, prompt_qkv, context):
        n_context = context.n_context
        if prompt_qkv is not None:
            context.qkv[..., n_context:, :] = prompt_qkv
        q, k, v = context.qkv
        batch, heads, length, width = q.shape
        weights, lse = context.prompt_weights(k[:, :, n_context:])
        # The layout scaled_dot_product_attention returns ([B, L, heads, width] in memory), so
        # that the output projection reads it without a copy.
        out = v.new_empty(batch, length, heads, width).transpose(1, 2)
        rescale = torch.exp(context.lse - lse).unsqueeze(-1)
        in_place = out.dtype == torch.float32  # else merged in fp32, then written
        merged = (torch.mul(context.out, rescale, out=out[:, :, :n_context]) if in_place
                  else torch.mul(context.out, rescale))  # computed in fp32
        for j in range(length - n_context):  # + weights @ v_prompt, one prompt key at a time
            merged.addcmul_(weights[..., j:j + 1], v[:, :, n_context + j:n_context + j + 1])
        if not in_place:
            out[:, :, :n_context] = merged
        prompt_out, prompt_lse = _flash_attention(q[:, :, n_context:], k, v)
        out[:, :, n_context:] = prompt_out
        lse = torch.cat([lse, prompt_lse], dim=2)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.n_context = n_context
        ctx.qkv_layout = qkv.shape, qkv.stride(), qkv.dtype
        ctx.replaced = prompt_qkv is not None  # projected like qkv: same dtype
        return out.to(qkv.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        grads = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_out.to(out.dtype), q, k, v, out, lse, 0.0, False)
        shape, stride, dtype = ctx.qkv_layout
        grad_qkv = torch.empty_strided(shape, stride, dtype=dtype, device=out.device)
        for part, grad in zip(grad_qkv, grads):
            part.copy_(grad)
        grad_prompt = None
        if ctx.replaced:
            replaced = grad_qkv[..., ctx.n_context:, :]
            grad_prompt = replaced.clone()
            replaced.zero_()
        return grad_qkv, grad_prompt, None


@dataclass
class LayerInput:
    """What a deep-prompt callback sees before block `index` runs."""
    index: int                          # block index i (>= 1)
    x: Optional[torch.Tensor]           # hidden state entering block i, [B, L, d] (None
                                        # only in the encoder's template of the layer)
    block: nn.Module                    # CLIP's block i (ln_1, attn, ln_2, mlp)
    n_prompts: int                      # number of prompt tokens in x
    attn_mask: Optional[torch.Tensor]   # the mask block i runs with (text: causal), or None
    eot: Optional[torch.Tensor] = None  # text: EOT position of each row of x; image: None
    computed_qkv: Optional[torch.Tensor] = field(default=None, repr=False)
    computed_context: Optional[ContextAttention] = field(default=None, repr=False)
    # What `reuse` kept, shared by the first pass over the layer and its recomputation.
    kept: dict = field(default_factory=dict, repr=False)

    def reuse(self, name, compute):
        """compute(), a value without gradients (a statistic of the layer's input), computed on
        the first pass over the layer and kept: a checkpointed block recomputed in backward runs
        the callback again on the same input and gets the kept value instead of computing it
        again. What the block reuses (`qkv`, `context_attention`) must still be asked for on
        every pass: the recomputation has to run the same operations as the first pass."""
        if name not in self.kept:
            value = compute()
            if value.requires_grad:
                raise ValueError(f"LayerInput.reuse({name!r}): the value needs gradients; only "
                                 "values without them can be kept across a recomputation")
            self.kept[name] = value
        return self.kept[name]

    def qkv(self):
        """Queries, keys and values [3, B, heads, L, head_width] that block i's attention
        computes from x (`attn.qkv(ln_1(x))`), computed once, with the autograd mode of the
        encoder: the encoder reuses them for block i, recomputing only the prompt positions when
        the callback writes new prompts, in place in this tensor or in `context_attention`'s
        copy of it (use them detached, e.g. under no_grad, and before returning: a graph that
        kept them would fail in backward)."""
        if self.computed_qkv is None:
            self.computed_qkv = self.block.attn.qkv(self.block.ln_1(self.x))
        return self.computed_qkv

    def context_attention(self):
        """`ContextAttention` of block i of the image tower (prompts at the end; context: CLS
        and patches), computed once and completed by the block; None where it does not apply:
        on the text tower (its causal mask) and off the CPU (the fused kernel it calls). In
        fp32 where CLIP's blocks attend in fp32 (bf16 training on the CPU, see
        slow_bf16_backward): the layer's q/k/v converted once."""
        if self.computed_context is None and self._context_applies():
            qkv = self.qkv()
            dtype = torch.float32 if slow_bf16_backward(qkv[0]) else qkv.dtype
            self.computed_context = ContextAttention(qkv, self.x.shape[1] - self.n_prompts,
                                                     dtype)
        return self.computed_context

    def _context_applies(self):
        return (self.attn_mask is None and self.eot is None and self.x.device.type == "cpu"
                and self.n_prompts > 0)


DeepPrompts = Callable[[LayerInput], Optional[torch.Tensor]]


@dataclass
class LayerPrompts:
    """The prompts of one encoder: layer-0 tokens and, optionally, a deep-prompt callback."""
    first: torch.Tensor
    deep: Optional[DeepPrompts] = None

    @property
    def n_prompts(self):
        return self.first.shape[-2]


def per_layer(prompts):
    """Deep prompts given as fixed tensors: prompts[j] is written before block j + 1; from block
    len(prompts) + 1 on, the prompt tokens flow on (MaPLe's / IVLP's layout, depth = len + 1)."""
    prompts = list(prompts)

    def deep(layer):
        j = layer.index - 1
        return prompts[j] if j < len(prompts) else None

    return deep


class LayerwisePrompts(nn.Module):
    """Independent learnable tokens for the first `depth` layers of one encoder (VPT-deep, IVLP):
    `ctx` is written before layer 0, `deep[j]` before layer j + 1."""

    def __init__(self, first, depth):
        super().__init__()
        self.ctx = nn.Parameter(first)
        self.deep = prompt_list(depth - 1, *first.shape)

    def layer_prompts(self):
        return LayerPrompts(self.ctx, per_layer(self.deep))


def _as_rows(tokens, n_rows, n_prompts, dtype):
    """[n, d] or [n_rows, n, d] tokens -> [n_rows, n, d] in `dtype`, with the shapes checked."""
    if tokens.shape[-2] != n_prompts:
        raise ValueError(f"{tokens.shape[-2]} prompt tokens supplied where the sequence has "
                         f"{n_prompts} prompt positions: a method keeps n fixed across layers")
    if tokens.dim() == 2:
        tokens = tokens.unsqueeze(0).expand(n_rows, -1, -1)
    elif tokens.dim() != 3 or tokens.shape[0] != n_rows:
        raise ValueError(f"prompt tokens of shape {tuple(tokens.shape)} for {n_rows} sequences: "
                         "expected [n, d] (shared) or [B, n, d] (one set per sequence)")
    return tokens.to(dtype)


def write_after_sos(x, tokens, n_prompts):
    """x with positions 1..n_prompts replaced by `tokens` (text prompts)."""
    tokens = _as_rows(tokens, x.shape[0], n_prompts, x.dtype)
    return torch.cat([x[:, :1], tokens, x[:, 1 + n_prompts:]], dim=1)


def write_at_end(x, tokens, n_prompts):
    """x with its last n_prompts positions replaced by `tokens` (image prompts)."""
    tokens = _as_rows(tokens, x.shape[0], n_prompts, x.dtype)
    return torch.cat([x[:, :x.shape[1] - n_prompts], tokens], dim=1)


def append(x, tokens):
    """x with `tokens` appended after its last position (layer-0 image prompts)."""
    n_prompts = tokens.shape[-2]
    return torch.cat([x, _as_rows(tokens, x.shape[0], n_prompts, x.dtype)], dim=1)


# ---------------------------------------------------------------------------------------------
# Prompted encoders: CLIP's own modules, run block by block
# ---------------------------------------------------------------------------------------------

def run_prompted_layer(layer, x, checkpointed, deep, write, positions, rows=None):
    """Block `layer.block` of a prompted encoder on x, after its deep-prompt callback `deep`
    (None: the block alone) saw `layer` (a LayerInput whose x is then set to x). `checkpointed`
    and grad enabled: the callback, the write of its tokens and the block run under one
    `torch.utils.checkpoint`, so that backward recomputes all of it (nothing of the layer is kept
    for backward but its input x; the q/k/v the callback computed are reused by the block on
    both passes), except the values the callback keeps with `LayerInput.reuse`."""
    kept = {}

    def run(x):
        prompted = tokens = None
        if deep is not None:
            prompted = dataclasses.replace(layer, x=x, kept=kept)
            tokens = deep(prompted)
        return run_prompted_block(layer.block, x, prompted, tokens, write, positions, rows=rows,
                                  attn_mask=layer.attn_mask)

    if checkpointed and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(run, x, use_reentrant=False)
    return run(x)


def run_prompted_block(block, x, layer, tokens, write, positions, rows=None, **kwargs):
    """Block i of a prompted encoder after its deep-prompt callback saw `layer` (or None when
    the block has no callback) and returned `tokens` (or None): the tokens are written at the
    prompt `positions` (a slice) with `write`; q, k, v the callback had computed
    (`LayerInput.qkv`) are reused, those of the prompt positions recomputed from the new tokens
    and written over the old ones in place (with gradients too: autograd's in-place write
    clones the gradient once in backward, where a concatenation would copy q/k/v forward and
    pad the gradient with zeros backward). When the callback computed the context's attention
    (`LayerInput.context_attention`), the block's attention is completed from it, which writes
    the new rows itself. `rows` (a slice, or None): only the block's output at those positions
    is computed (the block's `rows`)."""
    qkv = None if layer is None else layer.computed_qkv
    context = None if layer is None else layer.computed_context
    new_qkv = None
    if tokens is not None:
        rows_written = _as_rows(tokens, x.shape[0], layer.n_prompts, x.dtype)
        x = write(x, rows_written, layer.n_prompts)
        if qkv is not None:
            new_qkv = block.attn.qkv(block.ln_1(rows_written))
            if context is None:
                qkv[..., positions, :] = new_qkv
    if context is not None:
        if qkv is None:  # not kept by the callback: projected here, the prompt rows with it
            qkv = block.attn.qkv(block.ln_1(x))
            new_qkv = qkv[..., positions, :]
        heads = context.attend(qkv, new_qkv)
        return block(x, heads=heads, rows=rows, **kwargs)
    return block(x, qkv=qkv, rows=rows, **kwargs)


class PromptedTextEncoder(nn.Module):
    """CLIP's text tower (same attribute names as upstream's TextEncoder, so checkpoint keys
    `text_encoder.*` name the same tensors)."""

    grad_checkpointing = False  # set by PromptedCLIP (training only)

    def __init__(self, clip_model):
        super().__init__()
        self.cut_at_eot = clip_model.cut_at_eot
        self.token_embedding = clip_model.token_embedding
        self.positional_embedding = clip_model.positional_embedding
        self.transformer = clip_model.transformer
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.register_buffer("attn_mask", clip_model.build_attention_mask(), persistent=False)

    @property
    def dtype(self):
        return self.text_projection.dtype

    def embed(self, tokens):
        """Token embeddings [B, L, d] in CLIP's dtype, positions not yet added."""
        return self.token_embedding(tokens).to(self.dtype)

    def forward(self, tokens, prompts=None):
        """Text features [B, embed_dim] of token ids [B, L]; `prompts` (LayerPrompts or None)
        are written after SOS over the placeholder tokens."""
        x = self.embed(tokens)
        eot = tokens.argmax(dim=-1)
        if prompts is None:
            return self.encode_embeddings(x, eot)
        x = write_after_sos(x, prompts.first, prompts.n_prompts)
        return self.encode_embeddings(x, eot, prompts.deep, prompts.n_prompts)

    def encode_embeddings(self, x, eot, deep=None, n_prompts=0):
        """Text features from input embeddings x [B, L, d] (layer-0 prompts already in place,
        positions not added) read at the EOT positions `eot` [B] (the input of a learner's
        `text_embeddings`). With `cut_at_eot` the blocks (and deep-prompt callbacks) see the
        sequences cut after the last EOT of the batch (`clip.model.text_length`)."""
        length = text_length(eot, x.shape[1], self.cut_at_eot)
        x = x[:, :length] + self.positional_embedding[:length].to(x.dtype)
        mask = self.attn_mask[:length, :length].to(x.dtype)
        positions = slice(1, 1 + n_prompts)
        last = len(self.transformer.resblocks) - 1
        for i, block in enumerate(self.transformer.resblocks):
            layer = LayerInput(i, None, block, n_prompts, mask, eot)
            # The last block's output is read at each row's EOT only.
            x = run_prompted_layer(layer, x, self.grad_checkpointing, deep if i > 0 else None,
                                   write_after_sos, positions, rows=eot if i == last else None)
        return self.ln_final(x[:, 0]) @ self.text_projection


class PromptedImageEncoder(nn.Module):
    """CLIP's ViT image tower (same attribute names as CLIP's `visual`, so upstream checkpoint
    keys `image_encoder.*` name the same tensors)."""

    grad_checkpointing = False  # set by PromptedCLIP (training only)

    def __init__(self, visual):
        super().__init__()
        self.conv1 = visual.conv1
        self.class_embedding = visual.class_embedding
        self.positional_embedding = visual.positional_embedding
        self.ln_pre = visual.ln_pre
        self.transformer = visual.transformer
        self.ln_post = visual.ln_post
        self.proj = visual.proj

    @property
    def dtype(self):
        return self.conv1.weight.dtype

    def embed_patches(self, images):
        """[CLS] + patch tokens with positions added, before ln_pre: [N, 1 + P, width]."""
        x = self.conv1(images.to(self.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)

    def forward(self, images, prompts=None):
        """Image features [N, embed_dim]; `prompts` (LayerPrompts or None) are appended after the
        patch tokens before ln_pre (so ln_pre normalises them too, as in MaPLe / VPT)."""
        x = self.embed_patches(images)
        n_prompts, deep = 0, None
        if prompts is not None:
            x = append(x, prompts.first)
            n_prompts, deep = prompts.n_prompts, prompts.deep
        x = self.ln_pre(x)
        positions = slice(x.shape[1] - n_prompts, x.shape[1])
        last = len(self.transformer.resblocks) - 1
        for i, block in enumerate(self.transformer.resblocks):
            layer = LayerInput(i, None, block, n_prompts, None)
            # The last block's output is read at [CLS] only.
            x = run_prompted_layer(layer, x, self.grad_checkpointing, deep if i > 0 else None,
                                   write_at_end, positions, rows=CLS if i == last else None)
        return self.ln_post(x[:, 0]) @ self.proj


class UnpromptedImageEncoder(nn.Module):
    """CLIP's image tower as is (ResNet backbones), for methods without image prompts."""

    def __init__(self, visual):
        super().__init__()
        self.visual = visual

    def forward(self, images, prompts=None):
        if prompts is not None:
            raise ConfigError("image prompts need a ViT CLIP backbone, not "
                             f"{type(self.visual).__name__}: choose e.g. ViT-B/16")
        return self.visual(images)


def build_image_encoder(visual):
    if isinstance(visual, VisionTransformer):
        return PromptedImageEncoder(visual)
    return UnpromptedImageEncoder(visual)


# ---------------------------------------------------------------------------------------------
# Prompt learner and the prompted CLIP
# ---------------------------------------------------------------------------------------------

class PromptLearner(nn.Module):
    """Base of a method's learnable part. Subclasses add parameters and override
    `text_prompts()` / `image_prompts()`; all their parameters and persistent buffers are trained
    and checkpointed, so CLIP modules must never be stored on a learner."""

    # True when the text side has nothing trainable (e.g. VPT): its features are then cached
    # while training too (recomputed after each train()/eval() call).
    fixed_text = False

    def __init__(self, classnames, clip_model, prompt_prefix):
        super().__init__()
        self.classnames = list(classnames)
        self.prompt_prefix = prompt_prefix
        # Text prompts are written over the prefix's tokens, never over the class names.
        self.n_prefix_tokens = int(tokenize(prompt_prefix, clip_model)[0].argmax()) - 1
        tokens = tokenize(class_prompts(prompt_prefix, self.classnames), clip_model)
        # Depends on the class names of the current split: never saved (persistent=False).
        self.register_buffer("tokenized_prompts", tokens, persistent=False)

    @property
    def n_cls(self):
        return len(self.classnames)

    def text_prompts(self):
        """LayerPrompts for the text encoder, or None for CLIP's text encoder as is."""
        return None

    def image_prompts(self):
        """LayerPrompts for the image encoder, or None for CLIP's image encoder as is."""
        return None

    def text_embeddings(self, embeddings, rows, prompts):
        """Layer-0 input of the text encoder for the class prompts `rows` (a slice of the
        classes) from their token embeddings [B, L, d]: the layer-0 tokens of `prompts` (this
        learner's `text_prompts()`, or None), all classes' [n, d] or the rows' own of
        [n_cls, n, d], written after SOS. An override may arrange the tokens otherwise, keeping
        each row's EOT where its tokenized prompt has it."""
        if prompts is None:
            return embeddings
        first = prompts.first
        if first.dim() == 3 and first.shape[0] == self.n_cls:
            first = first[rows]
        return write_after_sos(embeddings, first, prompts.n_prompts)


def normalize(features):
    """L2-normalised features in fp32 (cosine similarities are computed in fp32)."""
    return F.normalize(features.float(), dim=-1)


def clip_logits(image_features, text_features, logit_scale):
    """exp(logit_scale) * cosine similarity, [N_images, N_classes], from normalised features."""
    return logit_scale.float().exp() * image_features @ text_features.t()


class PromptedCLIP(nn.Module):
    """Frozen CLIP + a prompt learner: the model each prompting trainer registers.

    Attribute names follow upstream's CustomCLIP (prompt_learner, image_encoder, text_encoder,
    logit_scale), so upstream full-model checkpoint keys name the same tensors."""

    text_chunk_size = TEXT_CHUNK_SIZE
    grad_checkpointing = False
    text_checkpoint_classes = TEXT_CHECKPOINT_CLASSES

    def __init__(self, clip_model, prompt_learner):
        super().__init__()
        self.prompt_learner = prompt_learner
        self.image_encoder = build_image_encoder(clip_model.visual)
        self.text_encoder = PromptedTextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self._cached_text_features = None
        for name, param in self.named_parameters():
            param.requires_grad_(name.startswith(LEARNER_PREFIX))
        self.train()

    def train(self, mode=True):
        """Only the prompt learner changes mode: CLIP stays in eval mode (frozen BatchNorm
        statistics of ResNet backbones must not be updated or used in batch mode)."""
        super().train(mode)
        self.image_encoder.eval()
        self.text_encoder.eval()
        self.image_encoder.grad_checkpointing = self.grad_checkpointing and mode
        self.text_encoder.grad_checkpointing = mode and (
            self.grad_checkpointing or 0 <= self.text_checkpoint_classes < self.prompt_learner.n_cls)
        self.clear_text_cache()
        return self

    def set_grad_checkpointing(self, enable=True):
        """Checkpoint CLIP's blocks in training (MODEL.GRAD_CHECKPOINTING); never at eval."""
        self.grad_checkpointing = enable
        self.train(self.training)

    def set_text_checkpoint_classes(self, classes):
        """Checkpoint the text tower's blocks in training above `classes` classes (negative:
        never; MODEL.TEXT_CHECKPOINT_CLASSES)."""
        self.text_checkpoint_classes = classes
        self.train(self.training)

    def clear_text_cache(self):
        self._cached_text_features = None

    def encode_text(self):
        """Normalised text features of all classes [C, embed_dim], encoded in chunks whose
        layer-0 input the learner builds (`PromptLearner.text_embeddings`)."""
        learner, encoder = self.prompt_learner, self.text_encoder
        tokens = learner.tokenized_prompts
        prompts = learner.text_prompts()
        if prompts is not None and prompts.n_prompts > learner.n_prefix_tokens:
            raise ValueError(
                f"{prompts.n_prompts} text prompt tokens, but the prompt prefix "
                f"{learner.prompt_prefix!r} has {learner.n_prefix_tokens} tokens to hold them: "
                "give the learner a prefix with at least as many words (e.g. 'X X X X')")
        deep, n_prompts = (None, 0) if prompts is None else (prompts.deep, prompts.n_prompts)
        chunks = []
        for start in range(0, tokens.shape[0], self.text_chunk_size):
            rows = slice(start, start + self.text_chunk_size)
            x = learner.text_embeddings(encoder.embed(tokens[rows]), rows, prompts)
            eot = tokens[rows].argmax(dim=-1)
            chunks.append(encoder.encode_embeddings(x, eot, deep, n_prompts))
        return normalize(self.adapt_text_features(torch.cat(chunks)))

    def text_features(self):
        """Normalised text features, computed once per evaluation (eval mode, no grad) or once
        per mode change when the text side is fixed."""
        if self._cached_text_features is not None:
            return self._cached_text_features
        if self.prompt_learner.fixed_text:
            with torch.no_grad():
                self._cached_text_features = self.encode_text()
            return self._cached_text_features
        features = self.encode_text()
        if not self.training and not torch.is_grad_enabled():
            self._cached_text_features = features
        return features

    def image_features(self, images):
        prompts = self.prompt_learner.image_prompts()
        return normalize(self.adapt_image_features(self.image_encoder(images, prompts)))

    # What a method does to the encoders' unnormalised outputs before they are normalised and
    # compared (CoPrompt's residual adapters); nothing by default.
    def adapt_image_features(self, features):
        return features

    def adapt_text_features(self, features):
        return features

    def forward(self, images):
        return clip_logits(self.image_features(images), self.text_features(), self.logit_scale)

    # Frozen CLIP from the same encoders with the prompts switched off (no second CLIP): the
    # targets of regularised methods (PromptSRC, CoPrompt). No gradients.
    @torch.no_grad()
    def frozen_image_features(self, images):
        """CLIP's own normalised image features [N, embed_dim]."""
        return normalize(self.image_encoder(images))

    @torch.no_grad()
    def frozen_text_features(self, tokens):
        """CLIP's own text features [N, embed_dim] of token ids [N, L] (not normalised),
        encoded `text_chunk_size` rows at a time."""
        return torch.cat([self.text_encoder(chunk) for chunk in tokens.split(self.text_chunk_size)])


# ---------------------------------------------------------------------------------------------
# Checkpoints: learner entries only; upstream formats accepted, strictly
# ---------------------------------------------------------------------------------------------

class CheckpointMismatchError(UserError, RuntimeError):
    """A checkpoint does not fit the model built from the config."""


def learner_state_dict(model):
    """What our checkpoints hold: the prompt learner's entries (keys `prompt_learner.*`)."""
    return {key: value for key, value in model.state_dict().items()
            if key.startswith(LEARNER_PREFIX)}


def _shape(tensor):
    return "×".join(str(size) for size in tensor.shape) or "scalar"


# How many keys of each kind a mismatch message names before "and N more".
LISTED_KEYS = 10


def _listing(items):
    items = sorted(items)
    more = len(items) - LISTED_KEYS
    return ", ".join(items[:LISTED_KEYS]) + (f" and {more} more" if more > 0 else "")


def _looks_like_another_method(learner_keys, checkpoint_keys):
    # Less than half of the two key sets in common: not a variant (other N_CTX or depth) of this
    # method's checkpoint, but one of another method (MaPLe's loaded into BMIP, CoOp's into CoCoOp).
    union = set(learner_keys) | set(checkpoint_keys)
    return len(set(learner_keys) & set(checkpoint_keys)) < len(union) / 2


def _describe_mismatch(missing, unexpected, wrong_shapes, wrong_clip, another_method, method):
    lines = [f"checkpoint has {key} {got}, model expects {expected}"
             for key, got, expected in wrong_shapes[:LISTED_KEYS]]
    if len(wrong_shapes) > LISTED_KEYS:
        lines.append(f"and {len(wrong_shapes) - LISTED_KEYS} more entries of other shapes")
    if missing:
        lines.append(f"checkpoint lacks {_listing(missing)}")
    if unexpected:
        lines.append(f"checkpoint has entries the model does not: {_listing(unexpected)}")
    for key, got, expected in wrong_clip[:LISTED_KEYS]:
        lines.append(f"checkpoint's frozen CLIP has {key} {got}, the loaded CLIP has {expected} "
                     "(another backbone: check MODEL.BACKBONE.NAME)")
    if len(wrong_clip) > LISTED_KEYS:
        lines.append(f"and {len(wrong_clip) - LISTED_KEYS} more frozen CLIP entries that differ")
    header = ("checkpoint does not fit the model built from the config (check N_CTX, the prompt "
              "depths and the backbone against the run that wrote it):")
    if another_method:
        owner = f"{method}'s" if method else "this model's"
        header = (f"this checkpoint's prompt keys do not look like {owner}: was it trained with "
                  f"another method (check --trainer)?\n{header}")
    return header + "\n  " + "\n  ".join(lines)


def load_learner_state(model, state_dict, rename=lambda key: key, method=""):
    """Load a checkpoint's learner entries into `model` (a PromptedCLIP), strictly.

    `rename` maps upstream key names to ours (None: an upstream entry our model has no use for,
    skipped by name); `method` (the trainer's name) is named in the error
    when the checkpoint seems to come from another method. Ignored explicitly: upstream
    frozen-CLIP entries (their shapes are checked against the loaded CLIP, their values are
    CLIP's) and the class-name buffers token_prefix / token_suffix. Every learner entry must be present with its
    shape; anything else raises CheckpointMismatchError. Values are cast to the model's dtypes
    (upstream entries are often fp16)."""
    expected = learner_state_dict(model)
    model_entries = model.state_dict()
    loaded, unexpected, wrong_shapes, wrong_clip = {}, [], [], []
    for key, value in state_dict.items():
        key = rename(key)
        if key is None or key in UPSTREAM_CLASSNAME_BUFFERS:
            continue
        if key in expected:
            if value.shape != expected[key].shape:
                wrong_shapes.append((key, _shape(value), _shape(expected[key])))
            loaded[key] = value
        elif key.startswith(UPSTREAM_FROZEN_PREFIXES):
            frozen = model_entries.get(key)
            if frozen is None or frozen.shape != value.shape:
                ours = "none" if frozen is None else _shape(frozen)
                wrong_clip.append((key, _shape(value), ours))
        else:
            unexpected.append(key)
    missing = set(expected) - set(loaded)
    if missing or unexpected or wrong_shapes or wrong_clip:
        another_method = _looks_like_another_method(expected, [*loaded, *unexpected])
        raise CheckpointMismatchError(_describe_mismatch(
            missing, unexpected, wrong_shapes, wrong_clip, another_method, method))
    with torch.no_grad():
        for key, value in loaded.items():
            expected[key].copy_(value.to(dtype=expected[key].dtype, device=expected[key].device))
    model.clear_text_cache()


def rename_by_patterns(patterns):
    """A key-renaming function from (regex, replacement) pairs; the first full match wins.
    A replacement is a string template or a function of the match."""
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in patterns]

    def rename(key):
        for pattern, replacement in compiled:
            match = pattern.fullmatch(key)
            if match:
                return replacement(match) if callable(replacement) else match.expand(replacement)
        return key

    return rename


# ---------------------------------------------------------------------------------------------
# The trainer every prompting method derives from
# ---------------------------------------------------------------------------------------------

class PromptTrainer(TrainerX):
    """TrainerX for prompt learning on a frozen CLIP. Subclasses set MODEL_NAME and implement
    `build_prompt_learner`; they may override `build_custom_clip` and `rename_checkpoint_key`."""

    MODEL_NAME = "prompt_learner"  # registered model name = checkpoint folder name

    def build_prompt_learner(self, classnames, clip_model):
        raise NotImplementedError

    def build_custom_clip(self, clip_model, prompt_learner):
        return PromptedCLIP(clip_model, prompt_learner)

    def rename_checkpoint_key(self, key):
        """Our name for a key of an upstream checkpoint (identity when the names agree)."""
        return key

    def build_model(self):
        cfg = self.cfg
        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME}, precision: {self.precision})")
        clip_model = load_clip(cfg.MODEL.BACKBONE.NAME, self.precision, cfg.MODEL.CUT_TEXT_AT_EOT)
        # The learner first: a backbone it cannot prompt at all is the error to report; what
        # the backbone's shape does not fit (prompt depths, image size) is said at once.
        problems = []
        try:
            learner = self.build_prompt_learner(self.dm.dataset.classnames, clip_model)
        except DoesNotFit as error:
            problems.append(str(error))
        problems += filter(None, [input_size_problem(cfg, clip_model)])
        if len(problems) > 1:
            raise ConfigError(f"CLIP {cfg.MODEL.BACKBONE.NAME!r} does not fit this config; "
                              f"change all of these: {'; '.join(problems)}")
        if problems:
            raise ConfigError(problems[0])
        self.model = self.build_custom_clip(clip_model, learner)
        if cfg.MODEL.GRAD_CHECKPOINTING:
            print("Gradient checkpointing: CLIP's blocks are recomputed in backward")
            self.model.set_grad_checkpointing()
        self.model.set_text_checkpoint_classes(cfg.MODEL.TEXT_CHECKPOINT_CLASSES)
        if self.model.text_encoder.grad_checkpointing and not cfg.MODEL.GRAD_CHECKPOINTING:
            print(f"{learner.n_cls} classes: the text tower's blocks are recomputed in backward "
                  f"(MODEL.TEXT_CHECKPOINT_CLASSES {cfg.MODEL.TEXT_CHECKPOINT_CLASSES})")
        if cfg.MODEL.INIT_WEIGHTS:
            checkpoint = load_checkpoint(cfg.MODEL.INIT_WEIGHTS)
            state_dict = checkpoint.get("state_dict", checkpoint)
            load_learner_state(self.model, state_dict, self.rename_checkpoint_key,
                               cfg.TRAINER.NAME)
        self.model.to(self.device)
        if not cfg.RUN.EVAL_ONLY:
            trainable = [name for name, p in self.model.named_parameters() if p.requires_grad]
            print(f"Parameters to be updated ({sum(p.numel() for p in learner.parameters()):,}): "
                  f"{', '.join(trainable)}")
        self.optim = build_optimizer(self.model.prompt_learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(self.MODEL_NAME, self.model, self.optim, self.sched)

    def forward_backward(self, batch):
        images, labels = self.parse_batch_train(batch)
        with self.autocast():
            logits = self.model(images)
            loss = F.cross_entropy(logits, labels)
        self.model_backward_and_update(loss)
        summary = {"loss": loss.item(), "acc": compute_accuracy(logits, labels)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def model_inference(self, images):
        with self.autocast():
            return self.model(images)

    def state_dict_to_save(self, name):
        return learner_state_dict(self._models[name])

    def load_state_dict_into(self, name, state_dict, epoch=None):
        load_learner_state(self._models[name], state_dict, self.rename_checkpoint_key,
                           self.cfg.TRAINER.NAME)
