"""OpenAI's `clip` API: `load` a model with its preprocessing, `tokenize` text.

Trainers written for OpenAI's package use `clip._MODELS`, `clip._download` and `clip.build_model`
directly (CoOp's `load_clip_to_cpu`), so those names are exported here too; the model behaves as
OpenAI's to such code (see clip/model.py).
"""
import warnings

import torch

from . import openclip
from .model import build_model, convert_weights_to, convert_weights_to_fp16
from .pretrained import (_MODELS, ModelFileError, _download, available_models, model_file,
                         read_state_dict)
from .tokenizer import tokenize

__all__ = ["available_models", "load", "tokenize", "build_model", "_MODELS", "_download"]

# The statistics of CLIP's training images, per RGB channel.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def load(name_or_path, device="cpu", jit=False, download_root=None, weight_dtype=None):
    """(model, preprocess) for an OpenAI model name (see `available_models()`), an open_clip name
    `<model>/<pretrained tag or checkpoint file>` (clip/openclip.py, e.g.
    ViT-B-16/laion2b_s34b_b88k) or a local file (TorchScript archive or torch.save state dict).

    The model is in eval mode, fp16 on CUDA and fp32 elsewhere; `weight_dtype` (not OpenAI's)
    loads the weights `convert_weights_to` casts in that type instead (`build_model`).
    `preprocess` turns a PIL image into the normalised tensor the model expects. `jit` is
    accepted for compatibility: the model is always built from the weights, never run as
    OpenAI's TorchScript graph.
    """
    if jit:
        warnings.warn("clip.load(jit=True) is not supported: building the model from the "
                      "archive's weights instead (same results)", stacklevel=2)
    device = torch.device(device)
    if openclip.is_open_clip_name(name_or_path):
        model = openclip.load(name_or_path, download_root).to(device)
        if weight_dtype is not None:
            convert_weights_to(model, weight_dtype)
        settings = openclip.input_settings(name_or_path)
        normalisation = (settings["INPUT.PIXEL_MEAN"], settings["INPUT.PIXEL_STD"])
    else:
        path = model_file(name_or_path, download_root)
        try:
            model = build_model(read_state_dict(path), weight_dtype=weight_dtype).to(device)
        except ValueError as error:  # the shapes do not describe a CLIP model
            raise ModelFileError(f"CLIP file {path}: {error}") from error
        normalisation = (CLIP_MEAN, CLIP_STD)
    if device.type == "cuda" and weight_dtype is None:
        convert_weights_to_fp16(model)
    return model, image_transform(model.visual.input_resolution, *normalisation)


def image_transform(n_px, mean=CLIP_MEAN, std=CLIP_STD):
    """OpenAI's preprocessing: shorter side to n_px (bicubic), centre crop, RGB, normalise (by
    default with the statistics of OpenAI's training images)."""
    # torchvision is imported here, not with the package: it takes seconds to import.
    from torchvision import transforms as T

    return T.Compose([
        T.Resize(n_px, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(n_px),
        _convert_image_to_rgb,
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def _convert_image_to_rgb(image):
    # A module-level function, not a lambda, so DataLoader workers can pickle the transform.
    return image.convert("RGB")
