"""CLIP built from OpenAI's state dicts. Both `import clip; clip.load(...)` and
`from clip import clip; clip.load(...)` work, as with OpenAI's package."""
from .clip import _MODELS, _download, available_models, build_model, image_transform, load, tokenize
from .model import CLIP

__all__ = ["CLIP", "available_models", "build_model", "image_transform", "load", "tokenize",
           "_MODELS", "_download"]
