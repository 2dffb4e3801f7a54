"""clip.tokenize: OpenAI's semantics, checked against open_clip's tokenizer and known ids."""
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
