"""Import path that trainers written for OpenAI's CLIP use (`from clip.simple_tokenizer import
SimpleTokenizer`); the tokenizer itself is open_clip's, see clip/tokenizer.py. open_clip is
imported when the name is asked for: importing it takes seconds."""

__all__ = ["SimpleTokenizer"]


def __getattr__(name):
    if name == "SimpleTokenizer":
        from open_clip.tokenizer import SimpleTokenizer

        return SimpleTokenizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
