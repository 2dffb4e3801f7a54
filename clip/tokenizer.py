"""OpenAI CLIP tokenization, on the byte-level BPE and vocabulary that ship with open_clip_torch."""
import importlib
import importlib.util
import os
import sys
from functools import lru_cache

import torch

DEFAULT_CONTEXT_LENGTH = 77


@lru_cache(maxsize=1)
def get_tokenizer():
    """The shared tokenizer (reading the vocabulary takes about a second, so it is built once).
    open_clip is imported here, not with the package: importing it takes seconds."""
    return open_clip_tokenizer_module().SimpleTokenizer()


def open_clip_tokenizer_module():
    """open_clip's tokenizer module, loaded from its file on its own where it can be (it imports
    no other part of open_clip): importing it through the package runs open_clip/__init__.py,
    which imports open_clip's models, timm and huggingface_hub, about 0.6 s of a run's start-up
    that the tokenizer does not use. Any failure falls back to the ordinary import."""
    if "open_clip.tokenizer" in sys.modules:
        return sys.modules["open_clip.tokenizer"]
    try:
        package = importlib.util.find_spec("open_clip")
        path = os.path.join(package.submodule_search_locations[0], "tokenizer.py")
        spec = importlib.util.spec_from_file_location(f"{__name__}._open_clip_tokenizer", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except Exception:  # noqa: BLE001 - a layout this does not know: the package import
        return importlib.import_module("open_clip.tokenizer")


def tokenize(texts, context_length=DEFAULT_CONTEXT_LENGTH, truncate=False):
    """Token ids of `texts` (a string or a list of strings) as a LongTensor [N, context_length].

    Each row is <start-of-text>, the BPE ids, <end-of-text>, then zeros. A text that does not fit
    raises RuntimeError, unless `truncate` is set: then it is cut and its last id is <end-of-text>.
    """
    if isinstance(texts, str):
        texts = [texts]
    tokenizer = get_tokenizer()
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [tokenizer.sot_token_id] + tokenizer.encode(text) + [tokenizer.eot_token_id]
        if len(ids) > context_length:
            if not truncate:
                raise RuntimeError(
                    f"Input {text!r} is too long for context length {context_length} "
                    f"({len(ids)} tokens); shorten it or pass truncate=True")
            ids = ids[:context_length - 1] + [tokenizer.eot_token_id]
        result[row, :len(ids)] = torch.tensor(ids)
    return result
