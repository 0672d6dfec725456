"""Text generation: sampling, the generation loop over a KV cache, streaming text.

Sampling (``Sampling``) turns a row of logits into the distribution the next token is drawn from, in this order (as
Hugging Face's): the repetition penalty of CTRL (the logit of a token already in the sequence, prompt or output, is
divided by the penalty if positive and multiplied by it if not); temperature (0 = greedy: the most probable token,
the lowest id on a tie); top-k (the k most probable tokens, a tie at the k-th going to the lower id); top-p (the
smallest set of most probable tokens whose probability reaches p, at least one). Sequence i of a call draws from the
i-th stream of ``numpy.random.SeedSequence(seed).spawn(n)``: a fixed seed reproduces the output, and a sequence's
draws do not depend on the other prompts of its batch.

Context window: a sequence longer than the model's context is seen through a window of its last tokens whose start
moves forward a quarter of the context at a time (``window_start``), so that the model sees between three quarters
of the context and all of it, and the cache is rebuilt (one prefill of the window) only at each move, not at every
token. ``use_cache=False`` recomputes each step with ``Model.forward`` over exactly the same windows.

Batches: each prompt has a cache slot and positions of its own (no padding, no mask): a row of a batch computes
exactly what its prompt alone would, and each decode step is one pass over the weights for all the rows.

Token healing (``token_healing=True``, text prompts only): a prompt cut where the tokenizer would not cut (an editor's
cursor at the start of a line: the prompt ends in "\\n" and its code goes on with "    def", which training saw as
"\\n   " + " def") ends in a token the model rarely saw followed by what comes next. The prompt's last token is
taken back, and the first token drawn is one whose bytes start with the bytes taken back (the token itself among
them); the text returned starts after those bytes, so that it still continues the prompt as given.
"""

from __future__ import annotations

import codecs
import dataclasses
import math
from collections.abc import Iterator

import numpy as np

from ..runtime.checks import is_integer, is_number
from ..tokenizer import END_OF_TEXT as EOT
from .decoder import Decoder

__all__ = ["Sampling", "generate", "generate_ids", "generate_stream", "window_start"]



def window_start(n_tokens: int, context_length: int) -> int:
    """The first token of the window the model sees when a sequence has n_tokens: 0 while they fit in the context;
    then the smallest multiple of the stride (a quarter of the context) that leaves at most context_length."""
    stride = max(1, context_length // 4)
    return max(0, -(-(n_tokens - context_length) // stride) * stride)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the next token is chosen from the logits; see the module's docstring for the order of the filters."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0

    def __post_init__(self):
        def number(name, ok, expected):
            value = getattr(self, name)
            if not is_number(value) or not math.isfinite(value) or not ok(value):
                raise ValueError(f"generate: {name} must be {expected} (got {value!r})")
            object.__setattr__(self, name, float(value))

        number("temperature", lambda t: t >= 0, "a number >= 0 (0 = greedy)")
        number("repetition_penalty", lambda r: r > 0, "a number > 0 (1 = none)")
        if self.top_p is not None:
            number("top_p", lambda p: 0 < p <= 1, "None or a number in (0, 1]")
        k = self.top_k
        if k is not None and (not is_integer(k) or k < 1):
            raise ValueError(f"generate: top_k must be None or an integer >= 1 (got {k!r})")

    def distribution(self, logits, seen=None) -> tuple[np.ndarray, np.ndarray]:
        """(token ids, their probabilities) the next token is drawn from, in float64, given logits [V] and
        ``seen``, a bool mask [V] of the tokens already in the sequence (for the repetition penalty)."""
        z = self._penalised(logits, seen)
        if self.temperature == 0:
            return np.array([int(np.argmax(z))]), np.ones(1)
        z = z / self.temperature
        ids = np.arange(z.size)
        if self.top_k is not None and self.top_k < z.size:
            ids = _top_k(z, self.top_k)
            z = z[ids]
        p = np.exp(z - z.max())
        p /= p.sum()
        if self.top_p is not None and self.top_p < 1:
            order = np.lexsort((ids, -p))  # most probable first, then the lower id
            cumulative = np.cumsum(p[order])
            n = min(int(np.searchsorted(cumulative, self.top_p * cumulative[-1])) + 1, order.size)
            ids, p = ids[order[:n]], p[order[:n]] / cumulative[n - 1]
        return ids, p

    def sample(self, logits, rng: np.random.Generator, seen=None) -> int:
        """One token drawn from ``distribution(logits, seen)`` with one uniform number from rng (none if greedy)."""
        if self.temperature == 0 and (self.repetition_penalty == 1 or seen is None):
            return int(np.argmax(logits))  # the common greedy case, without a float64 copy
        ids, p = self.distribution(logits, seen)
        if ids.size == 1:
            return int(ids[0])
        cumulative = np.cumsum(p)
        i = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
        return int(ids[min(i, ids.size - 1)])

    def _penalised(self, logits, seen) -> np.ndarray:
        z = np.array(logits, dtype=np.float64)
        if self.repetition_penalty != 1 and seen is not None:
            zs = z[seen]
            z[seen] = np.where(zs > 0, zs / self.repetition_penalty, zs * self.repetition_penalty)
        return z


def _top_k(z: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k largest of z, ascending; among values equal to the k-th largest, the lower ids."""
    kth = np.partition(z, z.size - k)[z.size - k]
    above = np.flatnonzero(z > kth)
    return np.sort(np.concatenate([above, np.flatnonzero(z == kth)[:k - above.size]]))


# --- the generation loop ---------------------------------------------------------------------------------------

class _Sequences:
    """The sequences of one call (prompt + output so far), each with its window, random stream and next logits."""

    def __init__(self, model, prompts: list[list[int]], sampling: Sampling, seed, use_cache: bool, first=None):
        self.model, self.sampling, self.context = model, sampling, model.config.context_length
        self.first = list(first) if first is not None else [None] * len(prompts)  # token ids the first draw may take
        self.tokens = [list(p) for p in prompts]
        self.rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(prompts))]
        self.seen = None
        if sampling.repetition_penalty != 1:
            self.seen = [np.zeros(model.config.vocab_size, bool) for _ in prompts]
            for mask, p in zip(self.seen, prompts):
                mask[p] = True
        self.decoder = Decoder(model, slots=len(prompts)) if use_cache else None
        self.active = list(range(len(prompts)))
        self.starts = [0] * len(prompts)
        self.logits = [self._window_logits(b) for b in self.active]

    def sample(self) -> list[tuple[int, int]]:
        """Draw the next token of every active sequence: [(sequence index, token)]."""
        new = []
        for b in self.active:
            logits = self.logits[b]
            if self.first[b] is not None:  # token healing: only the tokens that extend the bytes taken back
                allowed, self.first[b] = self.first[b], None
                logits = np.full_like(logits, -np.inf)
                logits[allowed] = self.logits[b][allowed]
            token = self.sampling.sample(logits, self.rngs[b], self.seen[b] if self.seen else None)
            self.tokens[b].append(token)
            if self.seen:
                self.seen[b][token] = True
            new.append((b, token))
        return new

    def advance(self, finished=()) -> None:
        """Compute the next logits of the active sequences, but those in ``finished``, which stop here."""
        self.active = [b for b in self.active if b not in finished]
        step = []
        for b in self.active:
            if self.decoder is None or window_start(len(self.tokens[b]), self.context) != self.starts[b]:
                self.logits[b] = self._window_logits(b)
            else:
                step.append(b)
        if step:  # one decode step for all the sequences whose window did not move
            logits = self.decoder.decode(step, [self.tokens[b][-1] for b in step])
            for i, b in enumerate(step):
                self.logits[b] = logits[i]

    def _window_logits(self, b: int) -> np.ndarray:
        """The next logits of sequence b from its whole window: a prefill of its cache slot, or Model.forward."""
        self.starts[b] = window_start(len(self.tokens[b]), self.context)
        window = self.tokens[b][self.starts[b]:]
        if self.decoder is not None:
            return self.decoder.prefill(b, window)
        return self.model.forward(np.array(window, dtype=np.int32)[None])[0, -1]


def generate_ids(model, ids, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, repetition_penalty: float = 1.0, seed: int | None = None,
                 use_cache: bool = True, *, stop=None):
    """The token ids that follow ids (a sequence of token ids -> a list of at most max_new_tokens ids; or a list
    of such sequences, a batch -> a list of lists). Generation of a sequence ends after max_new_tokens, or at a token
    of ``stop`` (an id or a collection of ids), which is not included. See the module's docstring for sampling,
    long sequences and batches; ``use_cache=False`` recomputes each step from scratch, with the same result."""
    V = model.config.vocab_size
    prompts, batched = _prompts(ids, V)
    stop_ids = _stop_ids(stop, V)
    steps = _count(max_new_tokens)
    sampling = Sampling(temperature, top_k, top_p, repetition_penalty)
    _check_seed(seed)
    out = [[] for _ in prompts]
    sequences = _Sequences(model, prompts, sampling, seed, use_cache) if steps else None
    for i in range(steps):
        finished = set()
        for b, token in sequences.sample():
            if token in stop_ids:
                finished.add(b)
            else:
                out[b].append(token)
        if len(finished) == len(sequences.active):
            break
        if i + 1 < steps:
            sequences.advance(finished)
    return out if batched else out[0]


# --- text --------------------------------------------------------------------------------------------------------

class _TextStream:
    """Bytes of one sequence's tokens in, text out: never a piece of a UTF-8 character (an invalid byte sequence
    becomes U+FFFD, as bytes.decode(errors="replace") does), and the text stops before the first stop string
    (text that may be the start of one is held back until it is known not to be). ``done``: no more text comes."""

    def __init__(self, stop_strings: tuple[str, ...]):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = stop_strings
        self._pending = ""
        self.done = False

    def feed(self, data: bytes) -> str:
        self._pending += self._decoder.decode(data)
        return self._release(final=False)

    def finish(self) -> str:
        self._pending += self._decoder.decode(b"", final=True)
        text = self._release(final=True)
        self.done = True
        return text

    def _release(self, final: bool) -> str:
        text = self._pending
        cut = min((i for i in (text.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.done, self._pending = True, ""
            return text[:cut]
        hold = 0 if final else max((k for s in self._stops for k in range(1, len(s)) if text.endswith(s[:k])),
                                   default=0)
        self._pending = text[len(text) - hold:]
        return text[:len(text) - hold]


class _TextGeneration:
    """generate() and generate_stream(): checks everything and prefills at once; pieces() runs the loop."""

    def __init__(self, model, prompts: list, max_new_tokens, stop, sampling: dict):
        tok = model.tokenizer
        if tok is None:
            raise ValueError("generate: the model has no tokenizer (use generate_ids with token ids)")
        self.tokenizer, self.steps = tok, _count(max_new_tokens)
        ids = [self._encode(p) for p in prompts]
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        if not all(isinstance(s, str) and s for s in stops):
            raise ValueError(f"generate: stop must be a non-empty string or a list of them (got {stop!r})")
        unknown = set(sampling) - {"temperature", "top_k", "top_p", "repetition_penalty", "seed", "use_cache",
                                   "token_healing"}
        if unknown:
            raise TypeError(f"generate: unexpected keyword argument {sorted(unknown)[0]!r}")
        use_cache, seed = sampling.pop("use_cache", True), sampling.pop("seed", None)
        healing = sampling.pop("token_healing", False)
        if not isinstance(healing, bool):
            raise ValueError(f"generate: token_healing must be True or False (got {healing!r})")
        _check_seed(seed)
        settings = Sampling(**sampling)
        self.streams = [_TextStream(stops) for _ in prompts]
        self.specials = set(tok.special_tokens.values())  # a special token ends the text
        self.taken_back = [b""] * len(ids)  # token healing: the bytes of each prompt's last token, to skip
        first = self._heal(ids) if healing else None
        self.sequences = _Sequences(model, ids, settings, seed, use_cache, first) if self.steps else None

    def _heal(self, ids: list[list[int]]) -> list:
        """Token healing (the module's docstring): takes each prompt's last token back (in place) and returns, for
        each prompt, the ids its first token may be (None: the prompt is one token, or ends in a special one)."""
        first, candidates = [], {}  # candidates: per distinct tail (prompts cut at line starts share a few)
        for b, p in enumerate(ids):
            if len(p) < 2 or p[-1] in self.specials:
                first.append(None)
                continue
            tail = self.taken_back[b] = self.tokenizer.token_bytes(p.pop())
            if tail not in candidates:
                candidates[tail] = np.array(self.tokenizer.ids_starting_with(tail))
            first.append(candidates[tail])
        return first

    def _encode(self, prompt) -> list[int]:
        if not isinstance(prompt, str):
            raise TypeError(f"generate: prompt must be a str or a list of str (got {type(prompt).__name__})")
        ids = self.tokenizer.encode(prompt, allowed_special="all")
        if not ids:  # an empty prompt starts from the document separator, as GPT-2 does
            if EOT not in self.tokenizer.special_tokens:
                raise ValueError(f"generate: prompt is empty and the tokenizer has no {EOT} token to start from")
            ids = [self.tokenizer.special_tokens[EOT]]
        return ids

    def pieces(self) -> Iterator[tuple[int, str]]:
        """(sequence index, text) pieces as the tokens are drawn."""
        for i in range(self.steps):
            finished = set()
            for b, token in self.sequences.sample():
                stream = self.streams[b]
                if token in self.specials:
                    piece = stream.finish()
                else:
                    data, self.taken_back[b] = self.tokenizer.token_bytes(token)[len(self.taken_back[b]):], b""
                    piece = stream.feed(data)
                if stream.done:
                    finished.add(b)
                if piece:
                    yield b, piece
            if len(finished) == len(self.sequences.active):
                break
            if i + 1 < self.steps:
                self.sequences.advance(finished)
        for b, stream in enumerate(self.streams):  # max_new_tokens reached: what is held back, and a cut character
            piece = "" if stream.done else stream.finish()
            if piece:
                yield b, piece


def generate(model, prompt, max_new_tokens: int = 256, *, stop=None, **sampling):
    """The text that follows prompt (a str -> str; a list of str, a batch -> list of str).

    sampling: temperature, top_k, top_p, repetition_penalty, seed, use_cache, as for ``generate_ids``, and
    token_healing (False; see the module's docstring). The text ends after max_new_tokens tokens, at a special
    token (such as <|endoftext|>), or before the first of the ``stop`` strings. Special-token text in the prompt
    is read as the special token; an empty prompt starts from <|endoftext|>."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    texts = [[] for _ in prompts]
    for b, piece in _TextGeneration(model, prompts, max_new_tokens, stop, sampling).pieces():
        texts[b].append(piece)
    texts = ["".join(t) for t in texts]
    return texts[0] if isinstance(prompt, str) else texts


def generate_stream(model, prompt: str, max_new_tokens: int = 256, *, stop=None, **sampling) -> Iterator[str]:
    """``generate`` for one prompt, as an iterator of text pieces in the order they are decoded; their
    concatenation is what ``generate`` returns. No piece ends inside a UTF-8 character."""
    if not isinstance(prompt, str):
        raise TypeError(f"generate_stream: prompt must be a str (got {type(prompt).__name__})")
    run = _TextGeneration(model, [prompt], max_new_tokens, stop, sampling)
    return (piece for _, piece in run.pieces())


# --- argument checks -----------------------------------------------------------------------------------------------

def _prompts(ids, V: int) -> tuple[list[list[int]], bool]:
    """(prompts, batched): one sequence of token ids, or a list of them."""
    batched = (isinstance(ids, np.ndarray) and ids.ndim == 2) or (
        isinstance(ids, (list, tuple)) and len(ids) > 0 and all(isinstance(p, (list, tuple, np.ndarray)) for p in ids))
    prompts = []
    for b, p in enumerate(ids if batched else [ids]):
        a = np.asarray(p)
        where = f"ids[{b}]" if batched else "ids"
        if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"generate_ids: {where} must be a non-empty sequence of token ids (or, for a batch, a "
                             f"list of them) (got {a.dtype} {list(a.shape)})")
        bad = np.flatnonzero((a < 0) | (a >= V))
        if bad.size:
            raise ValueError(f"generate_ids: {where}[{bad[0]}] = {a[bad[0]]} is outside [0, {V})")
        prompts.append(a.tolist())
    if batched and not prompts:
        raise ValueError("generate_ids: ids must not be an empty batch")
    return prompts, batched


def _stop_ids(stop, V: int) -> set:
    values = [] if stop is None else [stop] if isinstance(stop, (int, np.integer)) else list(stop)
    for v in values:
        if not is_integer(v) or not 0 <= v < V:
            raise ValueError(f"generate_ids: stop must be a token id or a collection of them, in [0, {V}) "
                             f"(got {stop!r})")
    return {int(v) for v in values}


def _count(max_new_tokens) -> int:
    if not is_integer(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be an integer >= 0 (got {max_new_tokens!r})")
    return int(max_new_tokens)


def _check_seed(seed) -> None:
    if seed is not None and (not is_integer(seed) or seed < 0):
        raise ValueError(f"generate: seed must be None or an integer >= 0 (got {seed!r})")
