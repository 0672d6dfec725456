"""Validation: how well a model predicts held-out text, and how well it completes held-out lines of code.

``evaluate`` reads token shards (the val_*.bin of a ``cllm tokenize`` output folder) or text files, cuts the token
stream into windows of context_length + 1 tokens that overlap by one (each token after the first is predicted once,
from the tokens before it in its window) and reports the mean loss (nats per token), perplexity, top-1 and top-5
next-token accuracy (the target's logit among the k largest; a tie counts for the target) and bits per byte: the
total loss in bits over the UTF-8 bytes of the predicted tokens, which does not depend on the tokenizer. Special
tokens (the document separator) are predicted and counted in the loss but have no bytes. For reference, the bits per
byte of ``xz -9e`` and ``gzip -9`` (Python's lzma and gzip) on the same bytes: what the model adds over a compressor.

``complete`` takes N line starts at random (seeded) in source files, has the model complete each line greedily from
all the code before it (the window sliding as in generation) and scores the line without its leading and trailing
whitespace: exact-match rate and mean character similarity (difflib's ratio).
"""

from __future__ import annotations

import gzip
import json
import lzma
import math
import time
from pathlib import Path

import numpy as np

from .. import kernels as K
from ..tokenizer import END_OF_TEXT as EOT
from ..tokenizer import Tokenizer
from ..tokenizer.shards import read_shard

__all__ = ["evaluate"]


def evaluate(model, data, *, max_tokens: int | None = None, batch_size: int = 8) -> dict:
    """Metrics of ``model`` on ``data``: a folder holding val_*.bin token shards, or text files (paths to files, or
    folders whose files are read recursively; a .jsonl file holds one {"text": ...} document per line). At most
    max_tokens tokens are predicted (all by default); batch_size windows go through the model at a time."""
    for name, value in (("max_tokens", max_tokens), ("batch_size", batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"evaluate: {name} must be an integer >= 1 (got {value!r})")
    start = time.perf_counter()
    tokens, tok, source = _eval_tokens(model, data)
    if max_tokens is not None:
        tokens = tokens[:max_tokens + 1]
    if tokens.size < 2:
        raise ValueError(f"evaluate: {source} holds {tokens.size} token(s); at least 2 are needed")
    if int(tokens.max()) >= model.config.vocab_size:
        raise ValueError(f"evaluate: {source} holds token id {int(tokens.max())}, outside the model's vocabulary "
                         f"of {model.config.vocab_size}")
    nll, top1, top5 = _score(model, tokens, batch_size)
    targets = tokens[1:]
    specials = np.array(sorted(tok.special_tokens.values()), dtype=targets.dtype)
    text = tok.decode_bytes(targets[~np.isin(targets, specials)].tolist())
    n, n_bytes = targets.size, len(text)
    return {
        "data": source, "tokens": int(n), "bytes": n_bytes, "loss": nll / n, "perplexity": math.exp(nll / n),
        "bits_per_token": nll / n / math.log(2), "bits_per_byte": nll / math.log(2) / n_bytes if n_bytes else None,
        "top1": top1 / n, "top5": top5 / n,
        "xz_bits_per_byte": 8 * len(lzma.compress(text, preset=9 | lzma.PRESET_EXTREME)) / n_bytes if n_bytes else None,
        "gzip_bits_per_byte": 8 * len(gzip.compress(text, compresslevel=9)) / n_bytes if n_bytes else None,
        "seconds": time.perf_counter() - start,
    }


def _score(model, tokens: np.ndarray, batch_size: int) -> tuple[float, int, int]:
    """(total loss in nats, top-1 hits, top-5 hits) over tokens[1:], window by window."""
    T, V = model.config.context_length, model.config.vocab_size
    starts = np.arange(0, tokens.size - 1, T)
    nll, top1, top5 = 0.0, 0, 0
    for i in range(0, starts.size, batch_size):
        group = starts[i:i + batch_size]
        length = min(T, tokens.size - 1 - group[-1])  # only the stream's last window is shorter
        full = group[group + T < tokens.size] if length < T else group
        for rows, n in ((full, T), (group[full.size:], length)):
            if not rows.size:
                continue
            windows = np.stack([tokens[s:s + n + 1] for s in rows]).astype(np.int32)
            logits = model.forward(windows[:, :-1]).reshape(-1, V)
            targets = np.ascontiguousarray(windows[:, 1:].reshape(-1))
            target_logit = logits[np.arange(targets.size), targets]
            rank = (logits > target_logit[:, None]).sum(axis=1)  # logits above the target's
            top1 += int((rank < 1).sum())
            top5 += int((rank < 5).sum())
            nll += float(K.crossentropy(logits, targets, write_grad=False).sum(dtype=np.float64))
    return nll, top1, top5


def _eval_tokens(model, data) -> tuple[np.ndarray, Tokenizer, str]:
    """(token stream, tokenizer that decodes it, a description) of the data ``evaluate`` takes."""
    paths = [Path(data)] if isinstance(data, (str, Path)) else [Path(p) for p in data]
    if not paths:
        raise ValueError("evaluate: data must name a token folder or text files")
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise ValueError(f"evaluate: data {missing[0]} does not exist")
    if len(paths) == 1 and paths[0].is_dir() and sorted(paths[0].glob("val_*.bin")):
        return _shard_tokens(model, paths[0])
    tok = model.tokenizer
    if tok is None:
        raise ValueError("evaluate: the model has no tokenizer to encode text files with")
    eot = [tok.special_tokens[EOT]] if EOT in tok.special_tokens else []
    ids = []
    for doc in _documents(paths):
        ids += tok.encode_bytes(doc) + eot
    return np.array(ids, dtype=np.int64), tok, ", ".join(map(str, paths))


def _shard_tokens(model, folder: Path) -> tuple[np.ndarray, Tokenizer, str]:
    """The val shards of a ``cllm tokenize`` folder, with the tokenizer they were made with (which must be the
    model's, if the model has one)."""
    shards = sorted(folder.glob("val_*.bin"))
    tok_path = folder / "tokenizer.json"
    tok = Tokenizer.load(tok_path) if tok_path.exists() else model.tokenizer
    if tok is None:
        raise ValueError(f"evaluate: {folder} has no tokenizer.json and the model has no tokenizer")
    own = model.tokenizer
    if own is not None and (own.merges != tok.merges or own.special_tokens != tok.special_tokens):
        raise ValueError(f"evaluate: the tokens in {folder} were made with another tokenizer than the model's")
    tokens = np.concatenate([np.asarray(read_shard(p), dtype=np.int64) for p in shards])
    return tokens, tok, f"{folder} ({len(shards)} val shard{'s' * (len(shards) > 1)})"


def _documents(paths: list[Path]):
    """The bytes of each document: a file, or each "text" of a .jsonl file; folders are read recursively."""
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")) \
            if path.is_dir() else [path]
        for f in files:
            if f.suffix != ".jsonl":
                yield f.read_bytes()
                continue
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        yield json.loads(line)["text"].encode("utf-8", "surrogatepass")
                    except (ValueError, KeyError, TypeError, AttributeError):
                        raise ValueError(f"evaluate: {f} line {n} is not a JSON object with a \"text\" string")
