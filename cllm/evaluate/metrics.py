"""Validation: how well a model predicts held-out text (``evaluate``), and the two measures the trainer's validation
shares with it (``held_out_sample``, ``bits_per_byte``).

``evaluate`` reads token shards (the val_*.bin of a ``cllm tokenize`` output folder) or text files, cuts the token
stream into windows of context_length + 1 tokens that overlap by one (each token after the first is predicted once,
from the tokens before it in its window) and reports the mean loss (nats per token), perplexity, top-1 and top-5
next-token accuracy (the target's logit among the k largest; a tie counts for the target) and bits per byte: the
total loss in bits over the UTF-8 bytes of the predicted tokens, which does not depend on the tokenizer. Special
tokens (the document separator) are predicted and counted in the loss but have no bytes. With ``max_tokens``, the
windows scored are spread evenly over the whole stream (its beginning is not a fair sample: the first documents of
a corpus are often of one kind), as are the trainer's. For reference, the bits per byte of ``xz -9e`` and
``gzip -9`` (Python's lzma and gzip) on the same bytes: what the model adds over a compressor.
"""

from __future__ import annotations

import gzip
import lzma
import math
import time
from pathlib import Path

import numpy as np

from ..corpus.preprocess.shards import read_documents
from ..runtime import checks
from ..tokenizer import END_OF_TEXT as EOT
from ..tokenizer import Tokenizer
from ..tokenizer.shards import read_shard

__all__ = ["bits_per_byte", "evaluate", "held_out_sample"]


def evaluate(model, data, *, max_tokens: int | None = None, batch_size: int = 8) -> dict:
    """Metrics of ``model`` on ``data``: a folder holding val_*.bin token shards, or text files (paths to files, or
    folders whose files are read recursively; a .jsonl file holds one {"text": ...} document per line). At most
    max_tokens tokens are predicted (all by default), in windows spread over the whole stream; batch_size windows go
    through the model at a time."""
    checks.integer(max_tokens, "evaluate: max_tokens", 1, optional=True)
    checks.integer(batch_size, "evaluate: batch_size", 1)
    start = time.perf_counter()
    tokens, tok, source = _eval_tokens(model, data)
    if tokens.size < 2:
        raise ValueError(f"evaluate: {source} holds {tokens.size} token(s); at least 2 are needed")
    if int(tokens.max()) >= model.config.vocab_size:
        raise ValueError(f"evaluate: {source} holds token id {int(tokens.max())}, outside the model's vocabulary "
                         f"of {model.config.vocab_size}")
    windows = _windows(tokens.size, model.config.context_length, max_tokens)
    nll, top1, top5 = _score(model, tokens, windows, batch_size)
    targets = np.concatenate([tokens[s + 1:s + 1 + n] for s, n in windows])
    specials = np.array(sorted(tok.special_tokens.values()), dtype=targets.dtype)
    text = tok.decode_bytes(targets[~np.isin(targets, specials)].tolist())
    n, n_bytes = targets.size, len(text)
    return {
        "data": source, "tokens": int(n), "bytes": n_bytes, "loss": nll / n, "perplexity": math.exp(nll / n),
        "bits_per_token": nll / n / math.log(2), "bits_per_byte": bits_per_byte(nll, n_bytes),
        "top1": top1 / n, "top5": top5 / n,
        "xz_bits_per_byte": 8 * len(lzma.compress(text, preset=9 | lzma.PRESET_EXTREME)) / n_bytes if n_bytes else None,
        "gzip_bits_per_byte": 8 * len(gzip.compress(text, compresslevel=9)) / n_bytes if n_bytes else None,
        "seconds": time.perf_counter() - start,
    }


def bits_per_byte(nats: float, n_bytes: int) -> float | None:
    """A total loss in nats as bits per byte of the text predicted (``n_bytes`` UTF-8 bytes); None without bytes."""
    return nats / math.log(2) / n_bytes if n_bytes else None


def held_out_sample(count: int, n: int) -> np.ndarray:
    """``n`` of the window indices 0..count-1, evenly spaced from the first (all of them when n >= count): a
    sample of the whole held-out stream, not of its beginning."""
    if n >= count:
        return np.arange(count)
    return np.arange(n) * count // n


def _windows(size: int, T: int, max_tokens: int | None) -> list[tuple[int, int]]:
    """(start, targets) of the windows scored over a stream of ``size`` tokens: all of them, every one T targets but
    the stream's last; with max_tokens, a held-out sample of the full windows whose last one is cut to make
    max_tokens targets (or every window, the last cut, when the full ones hold fewer)."""
    starts = range(0, size - 1, T)
    windows = [(s, min(T, size - 1 - s)) for s in starts]
    if max_tokens is None or max_tokens >= size - 1:
        return windows
    full, k = (size - 1) // T, -(-max_tokens // T)
    if k <= full:
        windows = [windows[i] for i in held_out_sample(full, k)]
    last, _ = windows[k - 1]  # k windows either way: when k > full, the full ones and the stream's short last one
    return windows[:k - 1] + [(last, max_tokens - (k - 1) * T)]


def _score(model, tokens: np.ndarray, windows: list[tuple[int, int]], batch_size: int) -> tuple[float, int, int]:
    """(total loss in nats, top-1 hits, top-5 hits) over the windows' targets, batch_size windows of one length at
    a time."""
    nll, top1, top5 = 0.0, 0, 0
    for length in sorted({n for _, n in windows}, reverse=True):
        starts = [s for s, n in windows if n == length]
        for i in range(0, len(starts), batch_size):
            rows = np.stack([tokens[s:s + length + 1] for s in starts[i:i + batch_size]]).astype(np.int32)
            losses, ranks = model.token_losses(rows[:, :-1], rows[:, 1:], ranks=True)
            nll += float(losses.sum(dtype=np.float64))
            top1 += int((ranks < 1).sum())
            top5 += int((ranks < 5).sum())
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
            if f.suffix == ".jsonl":
                yield from read_documents(f)
            else:
                yield f.read_bytes()
