"""clip.tokenize: OpenAI's semantics, checked against open_clip's tokenizer and known ids."""
import os
import subprocess
import sys

import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer

import clip
from clip import clip as clip_module

SOT, EOT = 49406, 49407
TEXTS = [
    "a photo of a cat.",
    "A centered satellite photo of Annual Crop Land.",
    "",
    "   spaces   and\ttabs\n",
    "punctuation: it's (really) well-known!? #1 @user 3.14 ...",
    "unicode: café, naïve, Straße, 東京, emoji 🐈, ﬁ ligature",
    "HTML &amp; entities &lt;b&gt;",
    "numbers 1234567 and mixed4digits",
]


def test_matches_open_clip_tokenizer():
    reference = SimpleTokenizer()(TEXTS, context_length=77)
    ours = clip.tokenize(TEXTS)
    assert ours.dtype == torch.long and ours.shape == (len(TEXTS), 77)
    assert torch.equal(ours, reference)


def test_known_openai_ids():
    # Ids of OpenAI's tokenizer for this prompt (independent of open_clip's code).
    tokens = clip.tokenize("a photo of a cat")
    assert tokens.shape == (1, 77)
    assert tokens[0, :8].tolist() == [SOT, 320, 1125, 539, 320, 2368, EOT, 0]
    assert tokens[0, 8:].eq(0).all()


def test_empty_text_is_start_and_end_only():
    assert clip.tokenize([""])[0, :3].tolist() == [SOT, EOT, 0]


def test_too_long_text_raises_unless_truncated():
    long_text = " ".join(["cat"] * 100)
    with pytest.raises(RuntimeError, match="too long for context length 77"):
        clip.tokenize(long_text)
    truncated = clip.tokenize([long_text, "a cat"], truncate=True)
    assert truncated[0, 0] == SOT and truncated[0, -1] == EOT
    assert truncated[0, 1:-1].eq(truncated[0, 1]).all()  # all "cat"
    assert torch.equal(truncated[1], clip.tokenize("a cat")[0])


def test_text_that_exactly_fits_is_kept():
    fits = " ".join(["cat"] * 75)  # 75 + start + end = 77
    tokens = clip.tokenize(fits)
    assert tokens[0, -1] == EOT and tokens[0, -2] == tokens[0, 1]


def test_custom_context_length_and_both_import_styles():
    assert clip.tokenize("a cat", context_length=10).shape == (1, 10)
    assert torch.equal(clip_module.tokenize("a cat"), clip.tokenize("a cat"))


def test_upstream_simple_tokenizer_import_path():
    from clip.simple_tokenizer import SimpleTokenizer as UpstreamPath
    assert len(UpstreamPath().encode("a photo of a cat")) == 5


def test_the_tokenizer_does_not_import_the_open_clip_package():
    """open_clip/__init__.py imports its models, timm and huggingface_hub (about 0.6 s of a
    run's start-up); the tokenizer needs only open_clip's tokenizer module."""
    code = ("import sys, clip; ids = clip.tokenize('a photo of a cat.'); "
            "print(ids[0, :7].tolist(), 'open_clip' in sys.modules, 'timm' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("]")[1].split() == ["False", "False"]


def test_an_unknown_open_clip_layout_falls_back_to_the_package_import(monkeypatch):
    from clip import tokenizer as tokenizer_module

    monkeypatch.delitem(sys.modules, "open_clip.tokenizer", raising=False)
    monkeypatch.setattr(tokenizer_module.importlib.util, "find_spec", lambda name: None)
    module = tokenizer_module.open_clip_tokenizer_module()
    assert module.__name__ == "open_clip.tokenizer" and hasattr(module, "SimpleTokenizer")
