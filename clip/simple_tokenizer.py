"""Import path that trainers written for OpenAI's CLIP use (`from clip.simple_tokenizer import
SimpleTokenizer`); the tokenizer itself is open_clip's, see clip/tokenizer.py."""
from open_clip.tokenizer import SimpleTokenizer

__all__ = ["SimpleTokenizer"]
