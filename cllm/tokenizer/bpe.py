"""Byte-level BPE tokenizer: the Python face of the C++ core in csrc/bpe/ (cllm._core._bpe).

Token ids: 0..255 are the bytes; merge i makes token 256 + i (the concatenation of its two parts' bytes); the
special tokens come last and are never produced from ordinary text. Text is split into pre-tokens by GPT-2's
pattern (or cl100k's), and merges never cross a pre-token boundary. Files are Hugging Face ``tokenizer.json``.

    tok = Tokenizer.train(["some text", Path("file.txt")], vocab_size=8192)
    ids = tok.encode("hello world")            # special-token text raises unless allowed_special
    tok.decode(ids) == "hello world"
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .._core import _bpe
from ..runtime.atomic import atomic_write
from ..runtime.checks import integer, is_integer
from ..runtime.progress import progress_iter
from ..runtime.threads import resolve_num_threads

__all__ = ["END_OF_TEXT", "FIM_TOKENS", "PATTERNS", "Tokenizer", "byte_to_unicode", "pattern_of"]

PATTERNS = {  # the split patterns, as the regex module (and the HF/tiktoken files) spell them
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "cl100k": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
}
# The same patterns as the tokenizers library's regex engine (Oniguruma) must read them: there "{1,3}+" means "one
# or more of {1,3}", not a possessive {1,3}, which here behaves exactly like a plain {1,3}.
HF_PATTERNS = {name: p.replace(r"\p{N}{1,3}+", r"\p{N}{1,3}") for name, p in PATTERNS.items()}
END_OF_TEXT = "<|endoftext|>"  # the document separator every cllm tokenizer has (GPT-2's spelling)
FIM_TOKENS = ("<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>")  # fill-in-the-middle (StarCoder's)
BATCH_BYTES = 16 << 20  # texts are counted in batches of about this many bytes (streamed, never all in memory)


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of bytes to printable characters, used by byte-level tokenizer.json files."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class Tokenizer:
    """A trained byte-level BPE vocabulary: ``merges`` (pairs of token ids, in rank order), ``special_tokens``."""

    def __init__(self, merges, special_tokens=(END_OF_TEXT,), pattern: str = "gpt2"):
        if pattern not in PATTERNS:
            raise ValueError(f"Tokenizer: pattern must be one of {sorted(PATTERNS)} (got {pattern!r})")
        self.pattern = pattern
        self.merges = [(int(a), int(b)) for a, b in merges]
        self._bytes = [bytes([i]) for i in range(256)]
        for i, (a, b) in enumerate(self.merges):
            if not (0 <= a < 256 + i and 0 <= b < 256 + i):
                raise ValueError(f"Tokenizer: merge {i} = ({a}, {b}) refers to a token not yet defined")
            self._bytes.append(self._bytes[a] + self._bytes[b])
        specials = list(special_tokens)
        if len(set(specials)) != len(specials) or not all(isinstance(s, str) and s for s in specials):
            raise ValueError(f"Tokenizer: special_tokens must be distinct non-empty strings (got {specials!r})")
        self.special_tokens = {s: len(self._bytes) + i for i, s in enumerate(specials)}
        self._special_bytes = {i: s.encode("utf-8") for s, i in self.special_tokens.items()}
        self._special_re = (re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))
                            if specials else None)
        self._encoder = _bpe.Encoder(self.merges, pattern)

    # --- training ------------------------------------------------------------------------------------------

    @classmethod
    def train(cls, texts_or_paths: Iterable, vocab_size: int, *, special_tokens=(END_OF_TEXT,),
              pattern: str = "gpt2", min_frequency: int = 2, num_threads=None, progress: bool = False) -> "Tokenizer":
        """Learn merges until the vocabulary (256 bytes + merges + special tokens) has vocab_size tokens.

        texts_or_paths: str items are texts; os.PathLike items (e.g. pathlib.Path) are UTF-8 text files, read as
        bytes (invalid bytes are kept as they are). A corpus too small to reach vocab_size stops early with a
        warning. Ties between equally frequent pairs are broken as documented in csrc/bpe/train.hpp; the result is
        the same for every thread count.
        """
        specials = list(special_tokens)
        if not is_integer(vocab_size) or vocab_size < 256 + len(specials):
            raise ValueError(f"Tokenizer.train: vocab_size must be an integer >= 256 + {len(specials)} special "
                             f"tokens = {256 + len(specials)} (got {vocab_size!r})")
        integer(min_frequency, "Tokenizer.train: min_frequency", 1)
        if pattern not in PATTERNS:
            raise ValueError(f"Tokenizer.train: pattern must be one of {sorted(PATTERNS)} (got {pattern!r})")
        if isinstance(texts_or_paths, (str, bytes, os.PathLike)):
            raise TypeError("Tokenizer.train: texts_or_paths must be an iterable of texts or paths, "
                            "not a single one (wrap it in a list)")
        nt = resolve_num_threads(num_threads, "Tokenizer.train: num_threads")
        counter = _bpe.WordCounter(pattern)
        batch, size = [], 0
        for item in progress_iter(texts_or_paths, progress, "counting"):
            data = _as_bytes(item)
            batch.append(data)
            size += len(data)
            if size >= BATCH_BYTES:
                counter.add_texts(batch, nt)
                batch, size = [], 0
        if batch:
            counter.add_texts(batch, nt)
        wanted = vocab_size - 256 - len(specials)
        merges = _bpe.train_bpe(counter, wanted, min_frequency, nt)
        if len(merges) < wanted:
            warnings.warn(f"Tokenizer.train: the corpus allows only {len(merges)} merges with min_frequency="
                          f"{min_frequency}; the vocabulary has {256 + len(merges) + len(specials)} tokens, not "
                          f"{vocab_size}", RuntimeWarning, stacklevel=2)
        return cls(merges, specials, pattern)

    # --- encoding and decoding -----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._bytes) + len(self.special_tokens)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token's UTF-8 text)."""
        if 0 <= token_id < len(self._bytes):
            return self._bytes[token_id]
        if token_id in self._special_bytes:
            return self._special_bytes[token_id]
        raise ValueError(f"Tokenizer: token id {token_id!r} is outside [0, {self.vocab_size})")

    def ids_starting_with(self, prefix: bytes) -> list[int]:
        """The ordinary tokens whose bytes start with ``prefix``, in id order (token healing's candidates)."""
        return [i for i, b in enumerate(self._bytes) if b.startswith(prefix)]

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of text, special-token text encoded as ordinary text."""
        return self._encoder.encode(text.encode("utf-8", "surrogatepass")).tolist()

    def encode_bytes(self, data: bytes) -> list[int]:
        """Token ids of any bytes (no special tokens): decode_bytes(encode_bytes(b)) == b."""
        return self._encoder.encode(bytes(data)).tolist()

    def encode(self, text: str, allowed_special=frozenset()) -> list[int]:
        """Token ids of text. Special-token text (e.g. "<|endoftext|>") raises ValueError unless it is in
        allowed_special (a set of special-token strings, or "all"), as tiktoken does."""
        allowed = self._allowed(allowed_special)
        if self._special_re is None:
            return self.encode_ordinary(text)
        ids, start = [], 0
        for m in self._special_re.finditer(text):
            if m.group() not in allowed:
                raise ValueError(f"Tokenizer.encode: text contains the special token {m.group()!r} at offset "
                                 f"{m.start()}; pass allowed_special={{{m.group()!r}}} (or 'all') to encode it as "
                                 "one, or use encode_ordinary")
            ids += self.encode_ordinary(text[start:m.start()])
            ids.append(self.special_tokens[m.group()])
            start = m.end()
        return ids + self.encode_ordinary(text[start:])

    def encode_batch(self, texts: list[str], num_threads=None, allowed_special=frozenset()) -> list[list[int]]:
        """encode() of each text; texts without special tokens are encoded in parallel (OpenMP, GIL released)."""
        nt = resolve_num_threads(num_threads, "Tokenizer.encode_batch: num_threads")
        texts = list(texts)
        specials = tuple(self.special_tokens)  # `in` finds them faster than the regular expression
        plain = [i for i, t in enumerate(texts) if not any(s in t for s in specials)]
        out = [None] * len(texts)
        try:  # str is read in place as UTF-8; a lone surrogate (no UTF-8 form) needs the copy with surrogatepass
            lists = self._encoder.encode_batch_lists([texts[i] for i in plain], nt)
        except UnicodeEncodeError:
            lists = self._encoder.encode_batch_lists([texts[i].encode("utf-8", "surrogatepass") for i in plain], nt)
        for i, ids in zip(plain, lists):
            out[i] = ids
        for i, t in enumerate(texts):
            if out[i] is None:
                out[i] = self.encode(t, allowed_special)
        return out

    def encode_to_array(self, data: bytes) -> np.ndarray:
        """Token ids of bytes as a numpy uint32 array (no special tokens; for bulk tokenizing)."""
        return self._encoder.encode(bytes(data))

    def encode_batch_to_arrays(self, docs, num_threads=None) -> list[np.ndarray]:
        """Token ids of many documents (str or bytes; no special tokens) as numpy uint32 arrays, in parallel:
        the bulk path of ``cllm tokenize``, without the cost of building Python lists."""
        nt = resolve_num_threads(num_threads, "Tokenizer.encode_batch_to_arrays: num_threads")
        data = [d.encode("utf-8", "surrogatepass") if isinstance(d, str) else bytes(d) for d in docs]
        return self._encoder.encode_batch(data, nt)

    def decode_bytes(self, ids) -> bytes:
        """The bytes of a sequence of token ids."""
        try:
            return b"".join(self._bytes[i] if 0 <= i < len(self._bytes) else self._special_bytes[i] for i in ids)
        except (KeyError, IndexError, TypeError):
            bad = next(i for i in ids if not (isinstance(i, (int, np.integer)) and 0 <= i < self.vocab_size))
            raise ValueError(f"Tokenizer.decode: token id {bad!r} is outside [0, {self.vocab_size})") from None

    def decode(self, ids) -> str:
        """The text of a sequence of token ids; bytes that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def _allowed(self, allowed_special) -> set:
        if allowed_special == "all":
            return set(self.special_tokens)
        allowed = set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise ValueError(f"Tokenizer.encode: allowed_special has unknown tokens {sorted(unknown)}; the special "
                             f"tokens are {sorted(self.special_tokens)}")
        return allowed

    # --- files: Hugging Face tokenizer.json ----------------------------------------------------------------

    def to_hf_dict(self) -> dict:
        """This tokenizer as a Hugging Face tokenizer.json document (a byte-level BPE model)."""
        b2u = byte_to_unicode()
        text = lambda b: "".join(b2u[x] for x in b)
        vocab = {text(b): i for i, b in enumerate(self._bytes)}
        if len(vocab) != len(self._bytes):  # two merges that spell the same bytes: tokenizer.json has one id each
            raise ValueError("Tokenizer.save: two tokens have the same bytes; tokenizer.json cannot hold them")
        merges = [f"{text(self._bytes[a])} {text(self._bytes[b])}" for a, b in self.merges]
        if self.pattern == "gpt2":
            pre = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        else:
            pre = {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": HF_PATTERNS[self.pattern]}, "behavior": "Isolated",
                 "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
        return {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True} for s, i in self.special_tokens.items()],
            "normalizer": None, "pre_tokenizer": pre, "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": vocab, "merges": merges},
        }

    def save(self, path) -> None:
        """Write a Hugging Face tokenizer.json (the ``tokenizers`` library loads it and encodes the same)."""
        with atomic_write(path, "w") as f:
            json.dump(self.to_hf_dict(), f, ensure_ascii=False)

    to_hf_json = save

    @classmethod
    def from_hf_dict(cls, doc: dict, source: str = "tokenizer.json") -> "Tokenizer":
        """Read a byte-level BPE tokenizer.json whose ids are bytes first, then merges in order (as cllm writes)."""
        try:
            model = doc["model"]
            vocab, merges = model["vocab"], model["merges"]
            if model.get("type", "BPE") != "BPE":
                raise ValueError(f"model type {model.get('type')!r} is not BPE")
            u2b = {u: b for b, u in byte_to_unicode().items()}
            to_bytes = lambda token: bytes(u2b[c] for c in token)
            by_id = {i: to_bytes(t) for t, i in vocab.items()}
            if any(by_id.get(b) != bytes([b]) for b in range(256)):
                raise ValueError("ids 0..255 must be the single bytes, in order")
            ids = {b: i for i, b in by_id.items()}
            pairs = []
            for n, merge in enumerate(merges):
                left, right = merge.split(" ") if isinstance(merge, str) else merge
                a, b = ids[to_bytes(left)], ids[to_bytes(right)]
                if ids.get(by_id[a] + by_id[b]) != 256 + n:
                    raise ValueError(f"merge {n} ({merge!r}) must make token {256 + n}")
                pairs.append((a, b))
            specials = sorted((t["id"], t["content"]) for t in doc.get("added_tokens", []))
            if [i for i, _ in specials] != list(range(256 + len(pairs), 256 + len(pairs) + len(specials))):
                raise ValueError("special tokens must follow the merges")
            pattern = pattern_of(doc.get("pre_tokenizer"))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"Tokenizer.load: {source} is not a byte-level BPE tokenizer.json that cllm can read: "
                             f"{e}") from None
        return cls(pairs, [s for _, s in specials], pattern)

    @classmethod
    def load(cls, path) -> "Tokenizer":
        """Read a tokenizer.json written by save()."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"Tokenizer.load: cannot read {path}: {e}") from None
        return cls.from_hf_dict(doc, str(path))


def pattern_of(pre_tokenizer) -> str:
    """The split pattern a tokenizer.json pre-tokenizer stands for (those that to_hf_dict writes)."""
    if isinstance(pre_tokenizer, dict) and pre_tokenizer.get("type") == "ByteLevel" and pre_tokenizer.get("use_regex"):
        return "gpt2"
    if isinstance(pre_tokenizer, dict) and pre_tokenizer.get("type") == "Sequence":
        for step in pre_tokenizer.get("pretokenizers", []):
            regex = step.get("pattern", {}).get("Regex") if step.get("type") == "Split" else None
            for name in PATTERNS:
                if regex in (PATTERNS[name], HF_PATTERNS[name]):
                    return name
    raise ValueError(f"pre_tokenizer {json.dumps(pre_tokenizer)[:80]} is not one of cllm's patterns")


def _as_bytes(item) -> bytes:
    if isinstance(item, str):
        return item.encode("utf-8", "surrogatepass")
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, os.PathLike):
        try:
            return Path(item).read_bytes()
        except OSError as e:
            raise ValueError(f"Tokenizer.train: cannot read {os.fspath(item)}: {e.strerror}") from None
    raise TypeError(f"Tokenizer.train: items must be str texts or paths (got {type(item).__name__})")
