"""BMIP: bi-directional modality interaction prompts (Lv et al., IJCAI 2025), as docs/BMIP.md
describes it; the decisions where the paper is silent are listed in BMIPPromptLearner's docstring.

Deep language prompts P_i and deep vision prompts P_v_i (one independent set per layer) enter the
first J = PROMPT_DEPTH layers of both towers. Before layer i (1 <= i <= J-1) each tower mixes its
own prompts with the other tower's, projected to its width:

    A_v = attention that layer i gives from the image's CLS and patch queries to each prompt key
    A_l = attention that layer i gives from the text queries that see the prompt to each prompt key
    w_v = sigmoid(L_v_i(A_v))            w_l = sigmoid(L_l_i(A_l))              (one per token)
    P_v'_i = w_v * P_v_i + (1 - w_v) * F_v(P_i)
    P'_i   = w_l * P_i   + (1 - w_l) * F_l(P_v_i)

(the sigmoid is the authors' code's; the paper's eqs. (10)-(11) write w = L(A): WEIGHT_ACT none).

A is read from the queries and keys that layer i's own attention computes from the hidden state
entering the layer (the prompt positions still hold the previous layer's outputs), detached.
They are computed once (`LayerInput.qkv`): the layer's attention reuses them, recomputing only
the b prompt positions after the replacement. A needs only the b prompt columns of the
attention weights. On the CPU the image side reads them from the attention of the CLS and
patch positions over their own keys (`LayerInput.context_attention`: output and log-sum-exp),
which the block then completes with the new prompt keys, so the patches are scored once for
both; elsewhere (and on the text side) one fused attention over one-hot "values" picks those
columns, without a full attention matrix (`attention_to_prompts`). Same values either way.

The registered model is "MultiModalPromptLearner" (as in MaPLe's and the authors' code); our
checkpoints hold the learner's trainable parameters only (keys `prompt_learner.*`).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from dassl.config import ConfigError
from dassl.engine import TRAINER_REGISTRY
from trainers.prompting import (LayerPrompts, PromptLearner, PromptTrainer, check_depth,
                                init_context, num_text_layers, num_vision_layers, prompt_list,
                                rename_by_patterns, text_width, vision_width)

AGGREGATIONS = ("weighted", "add", "attention", "joint")
ATTN_POOLS = ("per_sample", "authors")
DEEP_VISION_INITS = ("independent", "same", "uniform")
WEIGHT_ACTS = ("sigmoid", "none")


def extend_cfg(cfg):
    cfg.TRAINER.BMIP = CN()
    cfg.TRAINER.BMIP.N_CTX = 2  # b: prompt tokens per layer (joint: 2b)
    cfg.TRAINER.BMIP.CTX_INIT = "a photo of a"  # words initialising the layer-0 text prompts
    cfg.TRAINER.BMIP.PREC = "fp16"  # fp16, fp32, amp
    cfg.TRAINER.BMIP.PROMPT_DEPTH = 9  # J: layers 0..J-1 of both towers get prompts
    cfg.TRAINER.BMIP.SHARE_PROJECTIONS = True  # one F_v, F_l pair for all layers, else per layer
    # With SHARE_PROJECTIONS True, False here gives that one direction a head per layer (the
    # authors' SHARE_PARAMETER_TEXT for F_v, the projection half of SHARE_PARAMETER_VISUAL for F_l)
    cfg.TRAINER.BMIP.SHARE_TO_VISION = True
    cfg.TRAINER.BMIP.SHARE_TO_TEXT = True
    cfg.TRAINER.BMIP.AGGREGATION = "weighted"  # weighted | add | attention | joint
    cfg.TRAINER.BMIP.ATTN_POOL = "per_sample"  # per_sample | authors (reproduces their code)
    # independent: each layer's deep vision prompts drawn apart; same: all layers start from one
    # draw, as the authors' SHARE_PARAMETER_VISUAL default does; uniform: each layer from
    # U(+-sqrt(6 / (3 * 16 + vision width))), as their SHARE_PARAMETER_VISUAL False
    # (see BMIPPromptLearner)
    cfg.TRAINER.BMIP.DEEP_VISION_INIT = "independent"
    # w = sigmoid(L(A)) as the authors' code computes it; none: w = L(A), the paper's eqs. (10)-(11)
    cfg.TRAINER.BMIP.WEIGHT_ACT = "sigmoid"


def check_options(bmip):
    """Reject unknown AGGREGATION / ATTN_POOL / DEEP_VISION_INIT / WEIGHT_ACT values with the
    accepted ones."""
    for key, value, choices in (("AGGREGATION", bmip.AGGREGATION, AGGREGATIONS),
                                ("ATTN_POOL", bmip.ATTN_POOL, ATTN_POOLS),
                                ("DEEP_VISION_INIT", bmip.DEEP_VISION_INIT, DEEP_VISION_INITS),
                                ("WEIGHT_ACT", bmip.WEIGHT_ACT, WEIGHT_ACTS)):
        if value not in choices:
            raise ConfigError(f"TRAINER.BMIP.{key} is {value!r}: choose one of {list(choices)}")


# ---------------------------------------------------------------------------------------------
# The attention statistic A
# ---------------------------------------------------------------------------------------------

def _keys_to_score(queries, prompt_keys, length, attn_mask):
    """How many leading positions to project: the queries, the prompt keys and every key the
    queries can see. Under a causal mask the keys after the last query are hidden, so they need
    no projection."""
    if attn_mask is None:
        return length
    visible = torch.isfinite(attn_mask[queries, :length]).any(dim=0)
    return max(int(visible.nonzero().max()) + 1, prompt_keys.stop, queries.stop)


@torch.no_grad()
def attention_to_prompts(q, k, queries, prompt_keys, attn_mask=None):
    """Head-averaged attention weights [B, n_queries, n_prompt_keys] that queries `q` give keys
    `k` (both [B, heads, L, head_width], as a block's `attn.qkv` returns them) from the positions
    `queries` (a slice) to the positions `prompt_keys` (a slice), under the additive float
    `attn_mask` [L, L].

    Equal to the matching entries of nn.MultiheadAttention's averaged weights, without a full
    attention matrix: the weights of query i to prompt key p are its attention output over the
    "values" that are 1 at p and 0 elsewhere, so one fused `scaled_dot_product_attention` over
    one-hot values (padded to the head width, which its fast kernels need) gives every prompt
    column at once. In fp32. Detached (no graph is built)."""
    n_keys = _keys_to_score(queries, prompt_keys, k.shape[2], attn_mask)
    n_prompt_keys = prompt_keys.stop - prompt_keys.start
    batch, heads, _, head_width = q.shape
    with torch.autocast(device_type=q.device.type, enabled=False):
        picker = torch.zeros(n_keys, max(head_width, n_prompt_keys), device=q.device)
        picker[prompt_keys, :n_prompt_keys] = torch.eye(n_prompt_keys, device=q.device)
        mask = None if attn_mask is None else attn_mask[queries, :n_keys].float()
        weights = F.scaled_dot_product_attention(
            q[:, :, queries].float(), k[:, :, :n_keys].float(),
            picker.expand(batch, heads, -1, -1), attn_mask=mask)
    return weights[..., :n_prompt_keys].mean(dim=1)


def layer_attention_to_prompts(layer, queries, prompt_keys):
    """`attention_to_prompts` of the queries and keys block i computes anyway
    (`LayerInput.qkv`, which the encoder then reuses for the block), computed once per layer
    input (`LayerInput.reuse`: not again when a checkpointed block is recomputed)."""
    q, k, _ = layer.qkv()
    name = ("attention to prompts", queries.start, queries.stop, prompt_keys.start,
            prompt_keys.stop)
    return layer.reuse(name, lambda: attention_to_prompts(q, k, queries, prompt_keys,
                                                          layer.attn_mask))


def image_attention(layer):
    """A_v [N, n]: attention from each image's CLS and patch queries to its n prompt keys (the
    last n positions), averaged over heads and queries. On the CPU, read from the context's
    attention that the block then completes (`LayerInput.context_attention`): the patches are
    scored once, not twice."""
    length, n = layer.x.shape[1], layer.n_prompts
    context, prompts = slice(0, length - n), slice(length - n, length)
    parts = layer.context_attention()
    if parts is not None:
        prompt_keys = layer.qkv()[1][:, :, prompts]
        return layer.reuse("context's attention to prompts",
                           lambda: parts.prompt_weights(prompt_keys)[0].mean(dim=(1, 2)))
    return layer_attention_to_prompts(layer, context, prompts).mean(dim=1)


def text_attention(layer):
    """A_l [C, n]: attention from the queries after the prompt (positions n+1..EOT of each class
    row, the ones the causal mask lets see it) to the n prompt keys (positions 1..n), averaged
    over heads and those queries."""
    n = layer.n_prompts
    last = int(layer.eot.max())
    weights = layer_attention_to_prompts(layer, slice(n + 1, last + 1), slice(1, n + 1))
    positions = torch.arange(n + 1, last + 1, device=weights.device)
    sees = (positions[None] <= layer.eot[:, None]).to(weights.dtype)  # [C, queries]
    return (weights * sees[..., None]).sum(dim=1) / sees.sum(dim=1, keepdim=True)


def text_attention_authors(layer):
    """The authors' A_l [n]: the SOS query row (which the causal mask lets see only itself, so
    it is 0), averaged over the class rows."""
    n = layer.n_prompts
    weights = layer_attention_to_prompts(layer, slice(0, 1), slice(1, n + 1))
    return weights[:, 0].mean(dim=0)


# ---------------------------------------------------------------------------------------------
# The prompt learner
# ---------------------------------------------------------------------------------------------

def uniform_init_bound(vision_width):
    """The authors' bound for deep vision prompts without SHARE_PARAMETER_VISUAL: VPT's
    sqrt(6 / (3 * patch area + width)) with their patch "area" written as 16 (0.086 for 768)."""
    return math.sqrt(6.0 / (3 * 16 + vision_width))


def _linear_list(count, d_in, d_out):
    return nn.ModuleList(nn.Linear(d_in, d_out) for _ in range(count))


class BMIPPromptLearner(PromptLearner):
    """P_0 (`ctx`), F_0 (`proj`), P_i (`deep_text`), P_v_i (`deep_vision`), F_v (`to_vision`),
    F_l (`to_text`) and, for AGGREGATION weighted, L_v (`vision_weight_heads`) and L_l
    (`text_weight_heads`); deep index j stands for layer i = j + 1.

    Decisions where the paper is silent (docs/BMIP.md states the method), read from the paper's
    equations (10)-(13) (weights from the attention layer through a learnt 1x1 map; a combination
    of a modality's own prompts and the other modality's projected prompts) and the authors' code:
    - w = sigmoid(L(A)): the sigmoid is the authors' code's (their eqs. (10)-(11) write w = L(A),
      WEIGHT_ACT none); it keeps w in (0, 1), so the mix is convex.
    - The layer-0 vision prompt is F_0(P_0) (`proj` of `ctx`); the paper lists P~_0 among the
      independent prompts, and the authors' code declares one (`ctx_v`, `proj_v`) but never uses it
      in its forward pass: their layer-0 vision prompt is F_0(P_0) too.
    - A of a layer and sequence is the mean over heads and over docs/BMIP.md's queries (image: CLS +
      patches; text: the positions after the prompt up to EOT of each class row); the prompt
      positions are never queries. Scores are computed in fp32 whatever CLIP's precision.
    - L_v_i, L_l_i: one Linear(1, 1) per layer and modality, shared by the b tokens of that layer
      (as in the authors' code), PyTorch's default initialisation; they exist only for
      AGGREGATION weighted. With ATTN_POOL authors the text head of layer J-1 stays in the
      checkpoint (one layout for both modes) but is unused: that mode stops the text replacement
      one layer early.
    - P_i and P_v_i start from N(0, 0.02^2) like every prompt of this codebase (the authors'
      default set-up draws its vision prompts so too); F_0, F_v, F_l are nn.Linear with default
      initialisation; SHARE_PROJECTIONS False gives every layer its own pair F_v^i, F_l^i, and
      SHARE_TO_VISION / SHARE_TO_TEXT False a head per layer for F_v / F_l alone (the authors'
      two switches); F_0 is always separate.
    - AGGREGATION attention: w = sigmoid(cos(local_j, foreign_j)) per prompt token j; nothing is
      detached (w is a function of parameters, not of activations).
    - AGGREGATION joint: 2b prompt tokens in every layer. Layer 0 keeps the input coupling of the
      other variants with 2b tokens: text P_0 (the first 2b words of CTX_INIT when 2b <= 4, else
      random with 2b placeholder words), image F_0(P_0); deep layers write [P_i ; F_l(P_v_i)] and
      [P_v_i ; F_v(P_i)], P_i and P_v_i holding b tokens each.
    - DEEP_VISION_INIT same (the authors' SHARE_PARAMETER_VISUAL default): every P_v_i starts
      from one and the same draw and then trains apart. Their ParameterList holds the same slice
      of one tensor for every layer, but moving the model to the GPU (any `Module.to` that
      converts) gives each entry its own copy, so on the GPU they are one initialisation, not
      one tensor; their checkpoints hold one tensor per layer. DEEP_VISION_INIT uniform (their
      SHARE_PARAMETER_VISUAL False): each P_v_i from U(+-uniform_init_bound(width)).
    - ATTN_POOL authors (the authors' code): the vision A is also averaged over the batch (one w
      per token for all images of a batch); the text A is read from the SOS query row, which the
      causal mask keeps at 0 (so w_l = sigmoid(bias)); text prompts are replaced in layers
      1..J-2 only, for every AGGREGATION.
    """

    def __init__(self, cfg, classnames, clip_model):
        bmip = cfg.TRAINER.BMIP
        depth, n_ctx = bmip.PROMPT_DEPTH, bmip.N_CTX
        check_depth("TRAINER.BMIP.PROMPT_DEPTH", depth,
                    min(num_text_layers(clip_model), num_vision_layers(clip_model)))
        d_text, d_vision = text_width(clip_model), vision_width(clip_model)
        self.aggregation, self.attn_pool = bmip.AGGREGATION, bmip.ATTN_POOL
        self.weight_act = bmip.WEIGHT_ACT
        n_tokens = 2 * n_ctx if self.aggregation == "joint" else n_ctx
        ctx, prefix = init_context(clip_model, n_tokens, bmip.CTX_INIT)
        super().__init__(classnames, clip_model, prefix)

        n_deep = depth - 1
        self.ctx = nn.Parameter(ctx)
        self.proj = nn.Linear(d_text, d_vision)
        self.deep_text = prompt_list(n_deep, n_ctx, d_text)
        self.deep_vision = prompt_list(n_deep, n_ctx, d_vision)
        if bmip.DEEP_VISION_INIT == "same":
            with torch.no_grad():
                for prompt in self.deep_vision[1:]:
                    prompt.copy_(self.deep_vision[0])
        elif bmip.DEEP_VISION_INIT == "uniform":
            bound = uniform_init_bound(d_vision)
            with torch.no_grad():
                for prompt in self.deep_vision:
                    prompt.uniform_(-bound, bound)
        def n_projections(shared):
            return min(n_deep, 1) if bmip.SHARE_PROJECTIONS and shared else n_deep
        self.to_vision = _linear_list(n_projections(bmip.SHARE_TO_VISION), d_text, d_vision)
        self.to_text = _linear_list(n_projections(bmip.SHARE_TO_TEXT), d_vision, d_text)
        if self.aggregation == "weighted":
            self.vision_weight_heads = _linear_list(n_deep, 1, 1)
            self.text_weight_heads = _linear_list(n_deep, 1, 1)
        # The authors' code stops replacing text prompts one layer before the vision side.
        self.n_deep_text = max(n_deep - 1, 0) if self.attn_pool == "authors" else n_deep

    def text_prompts(self):
        return LayerPrompts(self.ctx, self.deep_text_tokens)

    def image_prompts(self):
        return LayerPrompts(self.proj(self.ctx), self.deep_image_tokens)

    def _projection(self, heads, j):
        return heads[0] if len(heads) == 1 else heads[j]

    def foreign_for_image(self, j):
        """F_v(P_i): the language prompts of layer j + 1 in the vision width."""
        return self._projection(self.to_vision, j)(self.deep_text[j])

    def foreign_for_text(self, j):
        """F_l(P_v_i): the vision prompts of layer j + 1 in the language width."""
        return self._projection(self.to_text, j)(self.deep_vision[j])

    def deep_image_tokens(self, layer):
        j = layer.index - 1
        if j >= len(self.deep_vision):
            return None
        return self.aggregate(self.deep_vision[j], self.foreign_for_image(j),
                              lambda: self.image_weights(layer, j))

    def deep_text_tokens(self, layer):
        j = layer.index - 1
        if j >= self.n_deep_text:
            return None
        return self.aggregate(self.deep_text[j], self.foreign_for_text(j),
                              lambda: self.text_weights(layer, j))

    def image_weights(self, layer, j):
        """w_v: [N, n, 1] per image, or [n, 1] shared by the batch (ATTN_POOL authors)."""
        statistic = image_attention(layer)
        if self.attn_pool == "authors":
            statistic = statistic.mean(dim=0)
        return self.activate(self.vision_weight_heads[j](statistic.unsqueeze(-1)))

    def text_weights(self, layer, j):
        """w_l: [C, n, 1] per class sequence, or [n, 1] (ATTN_POOL authors)."""
        if self.attn_pool == "authors":
            statistic = text_attention_authors(layer)
        else:
            statistic = text_attention(layer)
        return self.activate(self.text_weight_heads[j](statistic.unsqueeze(-1)))

    def activate(self, head_output):
        """w from L(A): sigmoid (the authors' code), or L(A) itself (WEIGHT_ACT none)."""
        return torch.sigmoid(head_output) if self.weight_act == "sigmoid" else head_output

    def aggregate(self, local, foreign, weights):
        """The prompts written for one layer from the modality's own prompts `local` [n, d] and
        the other modality's projected ones `foreign` [n, d]; `weights()` gives w (weighted)."""
        if self.aggregation == "joint":
            return torch.cat([local, foreign], dim=-2)
        if self.aggregation == "add":
            return local + foreign
        if self.aggregation == "attention":
            w = torch.sigmoid(F.cosine_similarity(local, foreign, dim=-1)).unsqueeze(-1)
        else:
            w = weights()
        return w * local + (1 - w) * foreign


# ---------------------------------------------------------------------------------------------
# The authors' checkpoints (LAMDASZ-ML/BMIP): their whole CustomCLIP under their own names
# ---------------------------------------------------------------------------------------------

def _skip(match):
    return None


def _weight_head(name, n_deep):
    """Their block i's head -> our heads[i - 1] for the blocks that have one (1 <= i <= J-1);
    the heads of the other blocks exist in their model but are never used."""
    def rename(match):
        i = int(match[1])
        return f"prompt_learner.{name}.{i - 1}.{match[2]}" if 1 <= i <= n_deep else None
    return rename


def authors_key_renamer(cfg):
    """Key names of the authors' BMIP checkpoints -> ours (for TRAINER.BMIP.PROMPT_DEPTH J).

    Theirs: ctx_t (P_0), proj_t (F_0), compound_prompts_text / _visual (P_i / P_v_i),
    single_layer_t / single_layer_v (shared F_v / F_l; compound_prompt_projections_t / _v per
    layer without SHARE_PARAMETER_*), and one pair of Linear(1, 1) heads in every CLIP block:
    learnable_linear1 of image block i is L_v_i, learnable_linear2 of text block i is L_l_i.
    Entries their forward pass never uses map to None (skipped by name): ctx_v, proj_v, the
    exchange layers and the heads of other blocks or of the other tower. Everything else is
    strict (load_learner_state)."""
    n_deep = cfg.TRAINER.BMIP.PROMPT_DEPTH - 1
    learner, resblocks = r"prompt_learner\.", r"transformer\.resblocks\.(\d+)\."
    return rename_by_patterns([
        (learner + r"ctx_t", "prompt_learner.ctx"),
        (learner + r"proj_t\.(weight|bias)", r"prompt_learner.proj.\1"),
        (learner + r"compound_prompts_text\.(\d+)", r"prompt_learner.deep_text.\1"),
        (learner + r"compound_prompts_visual\.(\d+)", r"prompt_learner.deep_vision.\1"),
        (learner + r"single_layer_t\.(weight|bias)", r"prompt_learner.to_vision.0.\1"),
        (learner + r"single_layer_v\.(weight|bias)", r"prompt_learner.to_text.0.\1"),
        (learner + r"compound_prompt_projections_t\.(\d+)\.(weight|bias)",
         r"prompt_learner.to_vision.\1.\2"),
        (learner + r"compound_prompt_projections_v\.(\d+)\.(weight|bias)",
         r"prompt_learner.to_text.\1.\2"),
        (r"image_encoder\." + resblocks + r"learnable_linear1\.(weight|bias)",
         _weight_head("vision_weight_heads", n_deep)),
        (r"text_encoder\." + resblocks + r"learnable_linear2\.(weight|bias)",
         _weight_head("text_weight_heads", n_deep)),
        (r"(image|text)_encoder\." + resblocks + r"learnable_linear[12]\.(weight|bias)", _skip),
        (learner + r"(ctx_v|(proj_v|exchange_layer_[tv]|compound_exchange_[tv])\..+)", _skip),
    ])


@TRAINER_REGISTRY.register()
class BMIP(PromptTrainer):
    MODEL_NAME = "MultiModalPromptLearner"

    def check_cfg(self, cfg):
        """AGGREGATION / ATTN_POOL are checked here, before anything is built (predict.py
        builds its models through this trainer too)."""
        super().check_cfg(cfg)
        check_options(cfg.TRAINER.BMIP)

    @classmethod
    def scores_classes_independently(cls, cfg):
        # ATTN_POOL authors averages the text statistic over all class rows.
        return cfg.TRAINER.BMIP.ATTN_POOL != "authors"

    def build_prompt_learner(self, classnames, clip_model):
        return BMIPPromptLearner(self.cfg, classnames, clip_model)

    def rename_checkpoint_key(self, key):
        return authors_key_renamer(self.cfg)(key)
