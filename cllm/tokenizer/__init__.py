"""Stage 3: the byte-level BPE ``Tokenizer`` (tokenizer.json), token shards, and the tokenize stage."""

from .bpe import END_OF_TEXT, FIM_TOKENS, PATTERNS, Tokenizer

__all__ = ["END_OF_TEXT", "FIM_TOKENS", "PATTERNS", "Tokenizer"]
