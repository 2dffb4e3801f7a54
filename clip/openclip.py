"""open_clip's CLIP models (LAION, DataComp, DFN, MetaCLIP, CommonPool weights...) as our CLIP.

A backbone name `<model>/<pretrained>` names what `open_clip.create_model(model, pretrained)`
takes: an open_clip model name (`open_clip.list_models()`, e.g. ViT-B-16, ViT-B-16-quickgelu)
and either one of its pretrained tags (`open_clip.list_pretrained_tags_by_model(model)`, e.g.
`ViT-B-16/laion2b_s34b_b88k`) or the path of a checkpoint file in open_clip's format
(`ViT-B-16//models/open_clip_pytorch_model.bin`: everything after the first "/" is the path).

A tag's weights come through open_clip's own machinery (`open_clip.download_pretrained`: the
Hugging Face Hub and its cache, or open_clip's release address, verified by the SHA-256 in its
name where it has one). The model is our `clip.model.CLIP`, so every trainer, bf16, text
caching and checkpoints work as on OpenAI's weights. Only open_clip models that are OpenAI's
architecture are accepted (`check_supported`); open_clip's state dict for them has OpenAI's key
names (the text tower under `text.` for configs with `custom_text`), its fused in-projection and
a scalar logit scale; what differs is kept on our model: the activation (GELU unless the model
is a "-quickgelu" one), the image tower's heads and the MLP widths. The image size and the
normalisation come from open_clip's configs (`input_settings`).

open_clip is imported only where an open_clip name is used: importing it takes seconds.
"""
import os
import warnings
from typing import NamedTuple

import torch

from .model import CLIP
from .pretrained import DownloadError, ModelFileError, _MODELS

SUPPORTED_FAMILY = ("open_clip's ViT CLIP models with OpenAI's architecture (class token, "
                    "pre-norm blocks, causal text tower read at its end-of-text token, OpenAI's "
                    "tokenizer), e.g. ViT-B-32, ViT-B-16, ViT-L-14, ViT-H-14 and their -quickgelu "
                    "variants")
# The fields of open_clip's tower configs that describe OpenAI's architecture in other sizes;
# every other field must keep open_clip's default.
VISION_SIZE_FIELDS = {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size",
                      "output_tokens"}
TEXT_SIZE_FIELDS = {"context_length", "width", "heads", "layers", "mlp_ratio", "output_tokens"}
MODEL_FIELDS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale",
                "nonscalar_logit_scale", "custom_text"}
# Model config entries that mark another family.
FAMILIES = {"init_logit_bias": "SigLIP", "multimodal_cfg": "CoCa"}
# The vocabulary of OpenAI's tokenizer (clip/tokenizer.py), the only one our text side has.
OPENAI_VOCAB_SIZE = 49408
# Keys of the text tower that CustomTextCLIP keeps under "text.".
TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.",
             "text_projection")
# Buffers open_clip may have saved beside the weights: the causal mask our text tower builds.
MASK_KEYS = ("attn_mask", "text.attn_mask")


class OpenClipName(NamedTuple):
    model: str       # an open_clip model name
    pretrained: str  # a pretrained tag of it, or a checkpoint file


def parse_name(name):
    """The OpenClipName of a backbone name `<model>/<tag or file>` whose model open_clip knows;
    None for any other name (OpenAI's names, local files). open_clip is imported only for names
    of that form that are neither OpenAI's nor an existing file."""
    if not isinstance(name, str) or name in _MODELS or os.path.isfile(os.path.expanduser(name)):
        return None
    model, slash, pretrained = name.partition("/")
    if not (slash and model and pretrained) or model.startswith((".", "~")):
        return None
    import open_clip

    return OpenClipName(model, pretrained) if model in open_clip.list_models() else None


def is_open_clip_name(name):
    return parse_name(name) is not None


def backbone_label(name):
    """A short label of a backbone name for tables, from the string alone (nothing imported or
    read): OpenAI's names and open_clip's `<model>/<tag>` as they are, `<model>/<file name>` for
    an open_clip checkpoint file, the file name for a CLIP file."""
    if name in _MODELS:
        return name
    model, slash, rest = name.partition("/")
    if slash and model and not model.startswith((".", "~")):
        return f"{model}/{os.path.basename(rest.rstrip('/'))}"
    return os.path.basename(name.rstrip("/"))


def model_config(model):
    """open_clip's config of `model` (a copy), refused in one line unless `check_supported`."""
    from open_clip.factory import get_model_config

    config = get_model_config(model)
    if config is None:
        raise ModelFileError(f"{model!r} is not an open_clip model (open_clip.list_models())")
    check_supported(model, config)
    return config


def check_supported(model, config):
    """Raise ModelFileError, in one line listing the supported family, when open_clip's `model`
    (its config `config`) is not OpenAI's CLIP architecture in another size."""
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    reason = None
    vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
    odd_model = sorted(set(config) - MODEL_FIELDS)
    if odd_model:
        family = next((FAMILIES[key] for key in odd_model if key in FAMILIES), None)
        reason = (f"a {family} model: " if family else "") + f"its config has {', '.join(odd_model)}"
    elif config.get("custom_text") and "hf_model_name" in text:
        reason = "its text tower is a Hugging Face model"
    elif vision.get("timm_model_name"):
        reason = f"its image tower is timm's {vision['timm_model_name']}"
    elif isinstance(vision.get("layers"), (list, tuple)):
        reason = "its image tower is a ResNet"
    elif text.get("vocab_size", CLIPTextCfg.vocab_size) != OPENAI_VOCAB_SIZE or any(
            text.get(key) for key in ("hf_tokenizer_name", "tokenizer_mode", "tokenizer_kwargs")):
        reason = "it uses another tokenizer"
    else:
        odd = _non_default(vision, CLIPVisionCfg, VISION_SIZE_FIELDS, "vision_cfg")
        odd += _non_default(text, CLIPTextCfg, TEXT_SIZE_FIELDS | {"vocab_size"}, "text_cfg")
        size = vision.get("image_size", CLIPVisionCfg.image_size)
        if isinstance(size, (list, tuple)) and len(set(size)) != 1:
            odd.append(f"vision_cfg.image_size {list(size)}")
        if odd:
            reason = f"its config sets {', '.join(odd)}"
    if reason:
        raise ModelFileError(f"open_clip model {model} is not supported ({reason}): supported "
                             f"are {SUPPORTED_FAMILY}")


def _non_default(tower, defaults, allowed, prefix):
    return [f"{prefix}.{key}={value!r}" for key, value in tower.items()
            if key not in allowed and value != getattr(defaults, key, object())]


def pretrained_config(spec):
    """open_clip's pretrained config of the tag (a dict: hf_hub / url, mean, std, quick_gelu...),
    or None when spec.pretrained is a file. An unknown tag, or a tag whose weights were trained
    with another activation than the model name's, is refused in one line."""
    import open_clip

    config = open_clip.get_pretrained_cfg(spec.model, spec.pretrained)
    if config:
        quick = bool(model_config(spec.model).get("quick_gelu", False))
        if bool(config.get("quick_gelu", False)) != quick:
            other = (spec.model[:-len("-quickgelu")] if spec.model.endswith("-quickgelu")
                     else f"{spec.model}-quickgelu")
            kind = "QuickGELU" if config.get("quick_gelu") else "GELU"
            raise ModelFileError(f"open_clip's {spec.model}/{spec.pretrained} weights were trained "
                                 f"with {kind}: use {other}/{spec.pretrained}")
        return config
    if os.path.isfile(os.path.expanduser(spec.pretrained)):
        return None
    tags = open_clip.list_pretrained_tags_by_model(spec.model)
    raise ModelFileError(
        f"{spec.model}/{spec.pretrained}: {spec.pretrained!r} is neither a pretrained tag of "
        f"open_clip's {spec.model} ({', '.join(tags) if tags else 'it has none'}) nor an "
        f"existing checkpoint file (write {spec.model}/<path of the file>)")


def input_settings(name):
    """The config values {"INPUT.SIZE": ..., "INPUT.PIXEL_MEAN": ..., "INPUT.PIXEL_STD": ...}
    that open_clip's model `name` expects (its image size; the tag's normalisation, OpenAI's for
    a checkpoint file, as open_clip does); {} for a name that is not an open_clip one."""
    spec = parse_name(name)
    if spec is None:
        return {}
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    size = model_config(spec.model)["vision_cfg"].get("image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    pretrained = pretrained_config(spec) or {}
    return {"INPUT.SIZE": (size, size),
            "INPUT.PIXEL_MEAN": list(pretrained.get("mean", OPENAI_DATASET_MEAN)),
            "INPUT.PIXEL_STD": list(pretrained.get("std", OPENAI_DATASET_STD))}


def weights_file(spec, cache_dir=None):
    """Local path of the weights of `spec`, downloaded by open_clip when needed into its cache
    (the Hugging Face cache, or `cache_dir` / ~/.cache/clip for a release address). Without the
    file and the network: DownloadError in one line naming the file and where it is looked for."""
    from open_clip.pretrained import download_pretrained

    config = pretrained_config(spec)
    if config is None:
        return os.path.expanduser(spec.pretrained)
    # A file in the Hugging Face cache is taken without asking the Hub first (offline, each ask
    # retries for about a minute before huggingface_hub falls back to its cache).
    cached = _cached_hf_file(config, cache_dir) if _uses_hf_hub(config) else None
    if cached:
        return cached
    try:
        return download_pretrained(config, cache_dir=cache_dir)
    except Exception as error:  # huggingface_hub's and urllib's errors, a failed checksum
        reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]
        # open_clip's "Failed to download file (...) for ... Last error: <huggingface_hub's>"
        reason = reason.split("Last error: ")[-1].split(". ")[0]
        place = ("copy that cache folder here" if _uses_hf_hub(config)
                 else "put the file there")
        raise DownloadError(f"{spec.model}/{spec.pretrained}: open_clip could not get "
                            f"{_where(config, cache_dir)} ({reason[:200]}); without network "
                            f"access, {place}, or download the file elsewhere and give it as "
                            f"MODEL.BACKBONE.NAME {spec.model}/<path of the file>") from error


def _hf_location(config):
    """(repository, file name) of a pretrained config's Hugging Face entry, as open_clip reads
    `hf_hub` ("org/repo/" for its default file name, or "org/repo/file")."""
    from open_clip.constants import HF_WEIGHTS_NAME

    repo, filename = os.path.split(config["hf_hub"])
    return repo, filename or HF_WEIGHTS_NAME


def _uses_hf_hub(config):
    from open_clip.pretrained import has_hf_hub

    return bool(config.get("hf_hub")) and has_hf_hub()


def _where(config, cache_dir):
    if _uses_hf_hub(config):
        from huggingface_hub.constants import HF_HUB_CACHE

        repo, filename = _hf_location(config)
        folder = os.path.join(cache_dir or HF_HUB_CACHE, "models--" + repo.replace("/", "--"))
        return (f"{filename} of the Hugging Face repository {repo} (cached in {folder}, set by "
                "$HF_HOME)")
    return f"{config['url']} (saved as {_url_target(config, cache_dir)})"


def _url_target(config, cache_dir):
    # open_clip.pretrained.download_pretrained_from_url's file.
    folder = cache_dir or os.path.expanduser("~/.cache/clip")
    return os.path.join(folder, os.path.basename(config["url"]))


def cached_weights_file(name, cache_dir=None):
    """The local weights file an open_clip name stands for, without downloading: the checkpoint
    file, or the tag's file where open_clip's download put it; None when it is not there (or the
    name is not an open_clip one)."""
    spec = parse_name(name)
    if spec is None:
        return None
    config = pretrained_config(spec)
    if config is None:
        return os.path.expanduser(spec.pretrained)
    if "file" in config:
        return config["file"]
    if _uses_hf_hub(config):
        return _cached_hf_file(config, cache_dir)
    target = _url_target(config, cache_dir)
    return target if os.path.isfile(target) else None


def _cached_hf_file(config, cache_dir):
    """The Hugging Face cache's copy of the file open_clip would download for `config`, asked
    through open_clip's own `hf_hub_download` without the network; None when not cached."""
    from open_clip import pretrained as open_clip_pretrained

    repo, filename = _hf_location(config)
    # The files open_clip's download_pretrained_from_hf tries, in its order.
    for candidate in [*open_clip_pretrained._get_safe_alternatives(filename), filename]:
        try:
            return open_clip_pretrained.hf_hub_download(
                repo_id=repo, filename=candidate, cache_dir=cache_dir, local_files_only=True)
        except Exception:  # not in the cache
            continue
    return None


def read_weights(path):
    """open_clip's state dict in `path`, read by open_clip (safetensors, torch.save with
    weights_only=True, a training checkpoint's "state_dict" with its "module." prefix)."""
    from open_clip.factory import load_state_dict

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TorchScript archive")
            return load_state_dict(path, weights_only=True)
    except Exception as error:
        if "TorchScript" in str(error):
            raise ModelFileError(
                f"{path} is a TorchScript archive (OpenAI's format), not an open_clip checkpoint: "
                "give OpenAI's weights by their name (e.g. ViT-B/16) or as the path alone") from error
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelFileError(f"open_clip checkpoint {path} could not be read: {first_line}") from error


def convert_state_dict(state_dict):
    """Our CLIP's state dict from open_clip's: the text tower's keys out of "text." (configs with
    custom_text), the stored causal masks dropped (our text tower builds its own), the logit
    scale a scalar. Every other key is OpenAI's already, q/k/v fused in `in_proj_*`."""
    converted = {}
    for key, value in state_dict.items():
        if key in MASK_KEYS:
            continue
        if key.startswith("text.") and key[len("text."):].startswith(TEXT_KEYS):
            key = key[len("text."):]
        converted[key] = value
    if "logit_scale" in converted:
        converted["logit_scale"] = converted["logit_scale"].reshape(())
    return converted


def architecture(config):
    """Our CLIP's constructor arguments for open_clip's (supported) model config."""
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    vision, text = CLIPVisionCfg(**config["vision_cfg"]), CLIPTextCfg(**config["text_cfg"])
    size = vision.image_size[0] if isinstance(vision.image_size, (list, tuple)) else vision.image_size
    return dict(
        embed_dim=config["embed_dim"], image_resolution=size, vision_layers=vision.layers,
        vision_width=vision.width, vision_patch_size=vision.patch_size,
        vision_heads=vision.width // vision.head_width,
        vision_mlp_width=int(vision.width * vision.mlp_ratio),
        context_length=text.context_length, vocab_size=text.vocab_size,
        transformer_width=text.width, transformer_heads=text.heads,
        transformer_layers=text.layers, transformer_mlp_width=int(text.width * text.mlp_ratio),
        activation="quick_gelu" if config.get("quick_gelu") else "gelu")


def build_model(model, state_dict, source=None):
    """Our CLIP (fp32, eval mode) for open_clip's `model` holding open_clip's `state_dict`,
    loaded strictly; a mismatch is one line naming `source` (the file)."""
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        clip_model = CLIP(**architecture(model_config(model)))
    try:
        clip_model.load_state_dict(convert_state_dict(state_dict), strict=True, assign=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split("\n\t")[1:2]) or str(error).splitlines()[0]
        raise ModelFileError(f"{source or 'the state dict'} does not hold the weights of open_clip's "
                             f"{model}: {detail.strip()}") from error
    return clip_model.float().eval()


def load(name, cache_dir=None):
    """Our CLIP (fp32, eval mode, on the CPU) for the open_clip name `name`."""
    spec = parse_name(name)
    if spec is None:
        raise ModelFileError(f"{name!r} is not an open_clip name <model>/<pretrained tag or file>")
    model_config(spec.model)  # an unsupported model is refused before any download
    path = weights_file(spec, cache_dir)
    return build_model(spec.model, read_weights(path), path)
