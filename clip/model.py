"""CLIP as plain modules, with OpenAI's attribute names so OpenAI state dicts load strictly.

OpenAI's public surface behaves as OpenAI's: `build_model`, `convert_weights`, `model.dtype`,
`encode_image` / `encode_text` / `forward`, and `model.transformer(x)` /
`model.visual.transformer(x)` on sequence-first input (L, N, D), the text tower applying its
causal mask itself. So a trainer file written for the CoOp codebase (its `TextEncoder`:
`x.permute(1, 0, 2); x = clip_model.transformer(x)`) runs unchanged.

Inside, the blocks are batch-first, (N, L, D), and take the attention mask as a `forward`
argument instead of storing it, so that a prompted encoder can run the same blocks with its own
sequence lengths: our code enters through `Transformer.batch_first(x, attn_mask)` or calls the
blocks directly (trainers/prompting.py). Attention is one fused q/k/v projection and
`scaled_dot_product_attention` (`Attention`), on nn.MultiheadAttention's parameters, so
state-dict keys and values are OpenAI's.
"""
import os
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from dassl.utils.errors import UserError

# OpenAI's head width: every released model has widths that are multiples of it.
HEAD_WIDTH = 64
# Keys the TorchScript archives keep beside the weights; they are not parameters.
NON_PARAMETER_KEYS = ("input_resolution", "context_length", "vocab_size")


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 and cast back, so fp16 activations keep their precision."""

    def forward(self, x):
        if x.dtype == torch.bfloat16 and x.device.type == "cpu":
            # The CPU kernel takes bf16 input with fp32 weights and computes in fp32 itself:
            # the same result, without two casts of the whole sequence (3-10x faster).
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        out = F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)
        return out.to(x.dtype)


class QuickGELU(nn.Module):
    """The GELU approximation the OpenAI models were trained with: x * sigmoid(1.702 x).

    Computed into one new tensor where no graph is built (evaluation, frozen towers), into two
    where autograd keeps the sigmoid for backward; bitwise the values of the expression. Each
    temporary is a fresh [N, L, 4 width] tensor, which on the CPU costs page faults beyond
    glibc's mmap threshold: at a test batch of 50 ViT-B/16 images the expression took 116 ms
    per block in fp32, this 67 ms."""

    def forward(self, x):
        gate = torch.mul(x, 1.702).sigmoid_()
        if torch.is_grad_enabled() and x.requires_grad:
            return x * gate
        return gate.mul_(x)


# The MLP activations of CLIP's blocks, by the name a CLIP model keeps in `activation`: OpenAI's
# models (and open_clip's "-quickgelu" ones) were trained with QuickGELU, open_clip's others with
# the exact GELU.
ACTIVATIONS = {"quick_gelu": QuickGELU, "gelu": nn.GELU}


class Attention(nn.MultiheadAttention):
    """Multi-head self-attention on batch-first input with OpenAI's parameters (`in_proj_weight`,
    `in_proj_bias`, `out_proj.*`: an nn.MultiheadAttention's, so state dicts load as they are).

    Computed as one fused q/k/v `F.linear` and `scaled_dot_product_attention`, not through
    nn.MultiheadAttention's forward: with frozen weights and an input that needs gradients
    (prompts), that forward runs its batch-first input projection and its gradient as batched
    multiplies over an expanded weight. `qkv` (or `qkv_at`) and `project` are the projections
    around the fused attention the block runs, for callers that look at the queries and keys in
    between (BMIP's attention statistic). Calling the module itself is nn.MultiheadAttention's
    forward (kept for reference computations)."""

    def __init__(self, d_model, n_head):
        super().__init__(d_model, n_head, batch_first=True)

    @property
    def head_width(self):
        return self.embed_dim // self.num_heads

    def qkv(self, x):
        """Queries, keys and values of x [N, L, D] (already layer-normed): [3, N, heads, L,
        head_width], one product with the fused projection."""
        n, length, _ = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        return qkv.view(n, length, 3, self.num_heads, self.head_width).permute(2, 0, 3, 1, 4)

    def qkv_at(self, x, rows):
        """Queries of the positions `rows` (`take_rows`) of x [N, L, D] (already layer-normed) and
        keys and values of all positions: [N, heads, R, head_width], [N, heads, L, head_width]
        twice (the same slices of the projection as `qkv`)."""
        n, length, width = x.shape
        q = F.linear(take_rows(x, rows, 1), self.in_proj_weight[:width],
                     self.in_proj_bias[:width])
        kv = F.linear(x, self.in_proj_weight[width:], self.in_proj_bias[width:])
        k, v = kv.view(n, length, 2, self.num_heads, self.head_width).permute(2, 0, 3, 1, 4)
        return q.view(n, -1, self.num_heads, self.head_width).transpose(1, 2), k, v

    def project(self, heads):
        """The output projection of the heads' outputs [N, heads, L, head_width]: [N, L, D]."""
        return self.out_proj(heads.transpose(1, 2).flatten(2))


def slow_bf16_backward(q):
    """Whether attention on `q` would run torch's bf16 CPU attention backward, which is slow on
    many short sequences (a text tower's class prompts: 4x the fp32 computation's time at
    [300, 8, 16, 64], and never faster at image shapes): bf16 on the CPU with gradients."""
    return (q.dtype == torch.bfloat16 and q.device.type == "cpu" and torch.is_grad_enabled()
            and q.requires_grad)


def take_rows(t, rows, dim):
    """The positions `rows` of t along its sequence axis `dim`: a slice of positions, or a
    LongTensor [N] holding one position for each sequence (t's first axis), kept as an axis of
    length 1 (e.g. each class prompt's EOT)."""
    if isinstance(rows, slice):
        return t[(slice(None),) * dim + (rows,)]
    shape = list(t.shape)
    shape[dim] = 1
    index = rows.view(-1, *[1] * (t.dim() - 1)).expand(shape)
    return t.gather(dim, index)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model, n_head, mlp_width=None, activation="quick_gelu"):
        super().__init__()
        mlp_width = mlp_width or d_model * 4
        self.attn = Attention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, mlp_width)),
            ("gelu", ACTIVATIONS[activation]()),
            ("c_proj", nn.Linear(mlp_width, d_model)),
        ]))
        self.ln_2 = LayerNorm(d_model)

    def attention(self, x, attn_mask=None, qkv=None, rows=None):
        """The heads' outputs [N, heads, R, head_width] of the self-attention of x (already
        ln_1-normed) for the queries at `rows` (`take_rows`; None: all positions), under the
        additive float `attn_mask` [L, L] (or None). `qkv`, when given, are x's queries, keys
        and values as `attn.qkv(x)` returns them, computed by the caller (x is not read)."""
        if qkv is None:
            qkv = self.attn.qkv(x) if rows is None else self.attn.qkv_at(x, rows)
        elif rows is not None:
            qkv = (take_rows(qkv[0], rows, 2), qkv[1], qkv[2])
        if attn_mask is not None:
            # Every caller's mask (CLIP's towers, prompted encoders) passes here: one cast, a
            # no-op when the mask already has the dtype and device.
            if isinstance(rows, torch.Tensor):
                attn_mask = attn_mask[rows].view(len(rows), 1, 1, -1)  # [N, heads, 1, L]
            elif rows is not None:
                attn_mask = attn_mask[rows]
            attn_mask = attn_mask.to(dtype=qkv[0].dtype, device=qkv[0].device)
        if slow_bf16_backward(qkv[0]):
            # fp32 attention on the bf16 inputs, its output rounded back to bf16.
            out = F.scaled_dot_product_attention(
                *(t.float() for t in qkv),
                attn_mask=None if attn_mask is None else attn_mask.float())
            return out.to(qkv[0].dtype)
        return F.scaled_dot_product_attention(*qkv, attn_mask=attn_mask)

    def forward(self, x, attn_mask=None, qkv=None, heads=None, rows=None):
        """The block on x [N, L, D]. `qkv`: `attn.qkv(ln_1(x))` when the caller has it already
        (a prompted encoder that looked at the layer's queries and keys), else computed here;
        `heads`: the attention's output per head [N, heads, L, head_width] when the caller has
        computed it (from parts it computed for itself), else computed here. `rows`
        (`take_rows`: a slice, or one position per sequence): only the block's output at those
        positions, [N, R, D], attending to all positions: a tower's last block where one token
        is read out (the image's [CLS], each class prompt's EOT) then costs its key and value
        projections, not the whole block. (CLIP's own towers keep every position, as OpenAI's
        do: feature extractors read the last block's patch tokens; the prompted encoders read
        out only.)"""
        if heads is None:
            normed = self.ln_1(x) if qkv is None else None
            heads = self.attention(normed, attn_mask, qkv, rows)
        elif rows is not None:
            heads = take_rows(heads, rows, 2)
        if rows is not None:
            x = take_rows(x, rows, 1)
        x = x + self.attn.project(heads)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """The blocks of one tower.

    `forward(x)` is OpenAI's entry: x sequence-first (L, N, D); a `causal` tower (CLIP's text
    tower) applies its causal mask itself, as OpenAI's stored mask does. `batch_first(x,
    attn_mask)` is ours: x (N, L, D) and the mask given by the caller.
    """

    def __init__(self, width, layers, heads, causal=False, mlp_width=None, activation="quick_gelu"):
        super().__init__()
        self.width = width
        self.layers = layers
        self.causal = causal
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_width, activation)
                                       for _ in range(layers))

    def forward(self, x):
        mask = causal_mask(x.shape[0]) if self.causal else None
        return self.batch_first(x.transpose(0, 1), mask).transpose(0, 1)

    def batch_first(self, x, attn_mask=None):
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


def causal_mask(length):
    """The text tower's causal mask (length, length): -inf above the diagonal, 0 elsewhere."""
    return torch.full((length, length), float("-inf")).triu_(1)


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution, patch_size, width, layers, heads, output_dim,
                 mlp_width=None, activation="quick_gelu"):
        super().__init__()
        self.input_resolution = input_resolution
        self.patch_size = patch_size
        self.width = width
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        num_patches = (input_resolution // patch_size) ** 2
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(num_patches + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_width=mlp_width,
                                       activation=activation)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def embed(self, images):
        """Images -> tokens ([CLS] + patches, positions added, ln_pre), (N, 1 + P, width)."""
        x = self.conv1(images.to(self.conv1.weight.dtype))
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.ln_pre(x)

    def head(self, x):
        """Tokens after the blocks -> image feature read at the [CLS] token, (N, output_dim)."""
        return self.ln_post(x[:, 0, :]) @ self.proj

    def forward(self, images):
        return self.head(self.transformer.batch_first(self.embed(images)))


class Bottleneck(nn.Module):
    """ResNet bottleneck whose strides are average pools (anti-aliasing), not strided convs."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            # Key names "-1", "0", "1" are OpenAI's.
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    """Pools a feature map with one attention query: the map's mean, attending to all positions."""

    def __init__(self, spacial_dim, embed_dim, num_heads, output_dim=None):
        super().__init__()
        self.positional_embedding = nn.Parameter(
            torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads

    def split_heads(self, x):
        n, length, dim = x.shape
        return x.view(n, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(self, x):
        x = x.flatten(2).transpose(1, 2)                        # (N, HW, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # (N, 1 + HW, C)
        x = x + self.positional_embedding.to(x.dtype)
        q = self.split_heads(self.q_proj(x[:, :1]))
        k = self.split_heads(self.k_proj(x))
        v = self.split_heads(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v)          # (N, heads, 1, C / heads)
        out = out.transpose(1, 2).flatten(2)
        return self.c_proj(out).squeeze(1)


class ModifiedResNet(nn.Module):
    """OpenAI's ResNet: three-convolution stem, anti-aliased strides, attention pooling."""

    def __init__(self, layers, output_dim, heads, input_resolution=224, width=64):
        super().__init__()
        self.output_dim = output_dim
        self.input_resolution = input_resolution
        self.width = width
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)

        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)

        embed_dim = width * 32  # the ResNet feature dimension
        self.attnpool = AttentionPool2d(input_resolution // 32, embed_dim, heads, output_dim)

    def _make_layer(self, planes, blocks, stride=1):
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stem(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        return self.avgpool(x)

    def forward(self, images):
        x = self.stem(images.to(self.conv1.weight.dtype))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


def text_length(eot, context_length, cut_at_eot=True):
    """How many leading positions of a batch of token sequences the text tower must run: up to
    the last of their end-of-text positions `eot` [N] (`cut_at_eot`), else all
    `context_length`."""
    if not cut_at_eot or eot.numel() == 0:
        return context_length
    return int(eot.max()) + 1


class CLIP(nn.Module):
    """OpenAI's CLIP. The keyword arguments after the OpenAI ones describe open_clip's members of
    the family (clip/openclip.py): `activation` ("quick_gelu", OpenAI's, or "gelu"; kept as the
    model's attribute), the image tower's heads (default width // 64) and both towers' MLP
    widths (default 4 x width)."""

    # Run the text tower on sequences cut after the batch's last EOT token (same features, far
    # less work for short prompts); False runs all context_length positions.
    cut_at_eot = True

    def __init__(self, embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
                 context_length, vocab_size, transformer_width, transformer_heads,
                 transformer_layers, vision_heads=None, vision_mlp_width=None,
                 transformer_mlp_width=None, activation="quick_gelu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.activation = activation
        if isinstance(vision_layers, (tuple, list)):
            self.visual = ModifiedResNet(
                layers=vision_layers, output_dim=embed_dim, heads=_num_heads(vision_width * 32),
                input_resolution=image_resolution, width=vision_width)
        else:
            self.visual = VisionTransformer(
                input_resolution=image_resolution, patch_size=vision_patch_size, width=vision_width,
                layers=vision_layers, heads=vision_heads or _num_heads(vision_width),
                output_dim=embed_dim, mlp_width=vision_mlp_width, activation=activation)
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads,
                                       causal=True, mlp_width=transformer_mlp_width,
                                       activation=activation)
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * torch.log(torch.tensor(1 / 0.07)))
        self.initialize_parameters()

    def initialize_parameters(self):
        """OpenAI's initialisation, so a model built from scratch (in tests) behaves sensibly."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.visual, ModifiedResNet):
            pool = self.visual.attnpool
            std = pool.c_proj.in_features ** -0.5
            for linear in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.init.normal_(linear.weight, std=std)
            for module in self.visual.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)
        width, layers = self.transformer.width, self.transformer.layers
        proj_std = width ** -0.5 * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width ** -0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    def build_attention_mask(self):
        """Causal mask for the text transformer: -inf above the diagonal, 0 elsewhere."""
        return causal_mask(self.context_length)

    @property
    def dtype(self):
        return self.visual.conv1.weight.dtype

    def encode_image(self, images):
        return self.visual(images.to(self.dtype))

    def embed_text(self, tokens):
        """Token ids -> token embeddings (N, L, width), positions not yet added."""
        return self.token_embedding(tokens).to(self.dtype)

    def text_head(self, x, tokens):
        """Sequence after the blocks -> text feature, read at each sequence's end-of-text token
        (the highest id in the sequence)."""
        x = self.ln_final(x)
        eot = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return eot @ self.text_projection

    def encode_text(self, tokens):
        """Text features of token ids [N, context_length]. With `cut_at_eot` (the default) the
        blocks run only up to the batch's last end-of-text token (`text_length`), positions and
        causal mask cut to match: under the causal mask the tokens after a sequence's EOT cannot
        change its feature, so the features are the full-length ones."""
        x = self.embed_text(tokens)
        length = text_length(tokens.argmax(dim=-1), x.shape[1], self.cut_at_eot)
        x = x[:, :length] + self.positional_embedding[:length].to(self.dtype)
        x = self.transformer.batch_first(x, causal_mask(length))
        return self.text_head(x, tokens)

    def forward(self, images, tokens):
        image_features = F.normalize(self.encode_image(images), dim=-1)
        text_features = F.normalize(self.encode_text(tokens), dim=-1)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


def _num_heads(width):
    # OpenAI's rule is width // 64; narrower (test-sized) models get one head instead of none.
    return max(1, width // HEAD_WIDTH)


def convert_weights_to(model, dtype):
    """Cast what OpenAI keeps in fp16 (convolutions, linear and attention weights, projections)
    to `dtype` (torch.float16, or torch.bfloat16 for PREC bf16); LayerNorms stay fp32, as in
    OpenAI's models."""

    def cast(module):
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            module.weight.data = module.weight.data.to(dtype)
            if module.bias is not None:
                module.bias.data = module.bias.data.to(dtype)
        if isinstance(module, nn.MultiheadAttention):
            for name in ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight",
                         "v_proj_weight", "bias_k", "bias_v"):
                tensor = getattr(module, name)
                if tensor is not None:
                    tensor.data = tensor.data.to(dtype)
        for name in ("text_projection", "proj"):
            tensor = getattr(module, name, None)
            if isinstance(tensor, torch.Tensor):
                tensor.data = tensor.data.to(dtype)

    model.apply(cast)
    return model


def convert_weights_to_fp16(model):
    """`convert_weights_to(model, torch.float16)`: OpenAI's fp16 CLIP."""
    return convert_weights_to(model, torch.float16)


# OpenAI's name (`from clip.model import convert_weights`), used by trainer files written for it.
convert_weights = convert_weights_to_fp16


def _count_blocks(state_dict, prefix):
    """Number of distinct block indices under `prefix` (e.g. "transformer.resblocks")."""
    depth = prefix.count(".") + 1
    return len({key.split(".")[depth] for key in state_dict if key.startswith(prefix + ".")})


def architecture_from_state_dict(state_dict):
    """The CLIP constructor arguments implied by the shapes of an OpenAI state dict."""
    if "visual.proj" in state_dict:
        conv1 = state_dict["visual.conv1.weight"]
        patch_size = conv1.shape[-1]
        grid_size = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = dict(
            vision_width=conv1.shape[0],
            vision_layers=_count_blocks(state_dict, "visual.transformer.resblocks"),
            vision_patch_size=patch_size,
            image_resolution=patch_size * grid_size,
        )
    elif "visual.attnpool.positional_embedding" in state_dict:
        positions = state_dict["visual.attnpool.positional_embedding"].shape[0]
        output_width = round((positions - 1) ** 0.5)
        if output_width ** 2 + 1 != positions:
            raise ValueError(f"visual.attnpool.positional_embedding has {positions} rows, "
                             "not a square grid plus one: not an OpenAI CLIP ResNet state dict")
        vision = dict(
            vision_width=state_dict["visual.layer1.0.conv1.weight"].shape[0],
            vision_layers=tuple(_count_blocks(state_dict, f"visual.layer{i}")
                                for i in (1, 2, 3, 4)),
            vision_patch_size=None,
            image_resolution=output_width * 32,
        )
    else:
        raise ValueError("not an OpenAI CLIP state dict: it has neither visual.proj (ViT) nor "
                         "visual.attnpool.* (ResNet); keys start with "
                         f"{sorted(state_dict)[:5]}")
    transformer_width = state_dict["ln_final.weight"].shape[0]
    return dict(
        embed_dim=state_dict["text_projection"].shape[1],
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        transformer_width=transformer_width,
        transformer_heads=_num_heads(transformer_width),
        transformer_layers=_count_blocks(state_dict, "transformer.resblocks"),
        **vision,
    )


class DesignDetailsError(UserError, TypeError):
    """A trainer file asked for the MaPLe codebase's CLIP (`design_details`)."""


def build_model(state_dict, design_details=None, *, weight_dtype=None):
    """Build CLIP from an OpenAI state dict: architecture from the shapes, weights loaded strictly.

    Returns the model in fp32 and eval mode; casting to fp16 is the caller's choice, or
    `weight_dtype` (torch.float16 / torch.bfloat16) loads the weights `convert_weights_to` casts
    straight into that type (the same values as casting the fp32 model).
    `design_details` is the MaPLe codebase's argument (its CLIP carries the prompts inside its
    blocks): this CLIP has no such variant, so a file that passes one is refused in one line.

    The modules are initialised at random before the weights replace every value, as OpenAI's
    and the authors' code do: the draws advance the global random generator exactly as there,
    so a seed gives the prompt learner built next the authors' initial values.
    """
    if design_details is not None:
        caller = os.path.relpath(sys._getframe(1).f_code.co_filename)
        trainer = design_details.get("trainer") if isinstance(design_details, dict) else None
        raise DesignDetailsError(
            f"{caller} calls clip.build_model(state_dict, design_details) (trainer {trainer!r}): "
            "it needs the MaPLe codebase's modified CLIP, which this project does not have. MaPLe, "
            "IVLP, VPT and BMIP are built in (--trainer MaPLe ...); a method of that family is "
            "written here as a prompt learner (trainers/prompting.py)")
    weights = {k: v for k, v in state_dict.items() if k not in NON_PARAMETER_KEYS}
    model = CLIP(**architecture_from_state_dict(weights))
    if weight_dtype is not None:
        convert_weights_to(model, weight_dtype)
    model.load_state_dict(weights, strict=True)
    return (model if weight_dtype is not None else model.float()).eval()
