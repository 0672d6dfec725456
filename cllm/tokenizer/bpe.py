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

__all__ = ["END_OF_TEXT", "FIM_TOKENS", "PATTERNS", "Tokenizer", "read_hf_tokenizer"]

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
    def from_hf_dict(cls, doc: dict, source: str = "tokenizer.json", *, renumber: bool = False) -> "Tokenizer":
        """Read a byte-level BPE tokenizer.json document. Its ids must be cllm's own (the bytes, then the merges'
        results in order, then the special tokens: what ``save`` writes), or, with ``renumber``, may be in any
        order and are renumbered so (``read_hf_tokenizer`` also gives the file's id of each token)."""
        tokenizer, ids = read_hf_tokenizer(doc, source)
        if not renumber and ids != list(range(len(ids))):
            first = next(i for i, x in enumerate(ids) if i != x)
            raise ValueError(f"Tokenizer.load: {source} numbers its tokens in another order than cllm's (bytes, "
                             f"merges, special tokens; token {first} is its id {ids[first]}): renumber=True reads it")
        return tokenizer

    @classmethod
    def load(cls, path, *, renumber: bool = False) -> "Tokenizer":
        """Read a tokenizer.json written by save() (or, with ``renumber``, any byte-level BPE one: see
        ``from_hf_dict``)."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"Tokenizer.load: cannot read {path}: {e}") from None
        return cls.from_hf_dict(doc, str(path), renumber=renumber)


def read_hf_tokenizer(doc, source: str = "tokenizer.json") -> tuple[Tokenizer, list[int]]:
    """(tokenizer, ids) of any byte-level BPE tokenizer.json document: the tokenizer in cllm's order (the 256
    bytes, each merge's result in rank order, the added tokens as special tokens), and ids[i] = the file's id of
    cllm's token i. Anything that would not encode as the file does is a ValueError naming it: another model
    type, a normalizer, byte fallback, a split pattern that is not one of PATTERNS, a vocabulary entry that is
    neither a byte nor a merge's result."""
    fail = lambda what: ValueError(f"Tokenizer.load: {source} is not a byte-level BPE tokenizer.json that cllm can "
                                   f"read: {what}")
    model = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(model, dict) or model.get("type", "BPE") != "BPE":
        raise fail(f"model type {model.get('type') if isinstance(model, dict) else model!r} (cllm has byte-level "
                   f"BPE only)")
    for name, allowed in (("byte_fallback", (False, None)), ("ignore_merges", (False, None)),
                          ("continuing_subword_prefix", (None, "")), ("end_of_word_suffix", (None, "")),
                          ("dropout", (None, 0))):
        if model.get(name) not in allowed:
            raise fail(f"model.{name} = {model.get(name)!r} (cllm's BPE has {allowed[0]!r})")
    if doc.get("normalizer") is not None:
        raise fail(f"a normalizer ({json.dumps(doc['normalizer'])[:60]}) changes the text before it is split")
    if (doc.get("decoder") or {}).get("type", "ByteLevel") != "ByteLevel":
        raise fail(f"decoder {doc['decoder'].get('type')!r} (byte-level BPE decodes with ByteLevel)")
    try:
        pattern = pattern_of(doc.get("pre_tokenizer"))
    except ValueError as e:
        raise fail(str(e)) from None
    u2b = {u: b for b, u in byte_to_unicode().items()}
    to_bytes = lambda text: bytes(u2b[c] for c in text)
    try:
        added = sorted((int(t["id"]), str(t["content"])) for t in doc.get("added_tokens", []))
        specials = {i for i, _ in added}
        vocab = {int(i): to_bytes(t) for t, i in model["vocab"].items() if int(i) not in specials}
        merges = [m.split(" ") if isinstance(m, str) else list(m) for m in model["merges"]]
    except KeyError as e:
        raise fail(f"{e} is missing, or is not GPT-2's byte-to-unicode spelling of bytes") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise fail(f"vocab, merges or added_tokens malformed ({e})") from None
    by_bytes = {b: i for i, b in vocab.items()}
    if len(by_bytes) != len(vocab):
        raise fail("two vocabulary entries spell the same bytes")
    ids = [by_bytes.get(bytes([b])) for b in range(256)]
    if None in ids:
        raise fail(f"the byte {ids.index(None):#04x} has no token (every byte needs one)")
    ours = {hf: i for i, hf in enumerate(ids)}
    pairs = []
    for n, merge in enumerate(merges):
        try:
            left, right = (to_bytes(part) for part in merge)
            a, b, made = by_bytes[left], by_bytes[right], by_bytes[left + right]
        except (KeyError, ValueError):
            raise fail(f"merge {n} {merge!r} names or makes a token that is not in the vocabulary") from None
        if made in ours or a not in ours or b not in ours:
            raise fail(f"merge {n} {merge!r} makes a token made before it, or uses one made after it")
        ours[made] = len(ids)
        ids.append(made)
        pairs.append((ours[a], ours[b]))
    unreachable = sorted(set(vocab) - set(ours))
    if unreachable:
        raise fail(f"{len(unreachable)} vocabulary entries (the first: id {unreachable[0]}) are neither bytes nor "
                   f"a merge's result")
    return Tokenizer(pairs, [s for _, s in added], pattern), ids + [i for i, _ in added]


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
