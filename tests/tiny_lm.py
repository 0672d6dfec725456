"""Small trained language models for the generation and evaluation tests: each is trained once per test session,
in about a second, on a repetitive corpus, so that it predicts something and its greedy choices are not ties."""

import functools
from pathlib import Path

import numpy as np

import cllm

UTF8_TEXT = "日本語のテキスト héllo wörld ✓ → ünïcödé "  # multi-byte characters of 2, 3 bytes
CODE_TEXT = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\n"
SOURCES = sorted(Path(cllm.__file__).parent.glob("*.py"))  # cllm's own sources


def train(model: cllm.Model, ids: np.ndarray, steps: int, seq: int, batch: int = 8, lr: float = 3e-3, seed=0):
    opt = cllm.optim.AdamW(model, lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        starts = rng.integers(0, ids.size - seq - 1, batch)
        rows = np.stack([ids[s:s + seq + 1] for s in starts])
        model.forward_backward(rows[:, :-1], rows[:, 1:])
        opt.step()
    return model


@functools.lru_cache(maxsize=None)
def byte_model() -> cllm.Model:
    """Byte-level (no merges: every multi-byte character spans several tokens), context 32, trained on UTF8_TEXT."""
    tok = cllm.Tokenizer([], special_tokens=("<|endoftext|>",))
    model = cllm.Model(cllm.ModelConfig(vocab_size=tok.vocab_size, context_length=32, d_model=48, n_layers=2,
                                        n_heads=2), seed=0)
    model.tokenizer = tok
    return train(model, np.array(tok.encode(UTF8_TEXT * 40)), steps=100, seq=32)


@functools.lru_cache(maxsize=None)
def code_model() -> cllm.Model:
    """A BPE model (vocab 280: every merge the corpus allows) with context 24, trained on CODE_TEXT: a context short
    enough that generation slides its window."""
    tok = cllm.Tokenizer.train([CODE_TEXT * 20], 280, min_frequency=1)
    model = cllm.Model(cllm.ModelConfig(vocab_size=tok.vocab_size, context_length=24, d_model=32, n_layers=2,
                                        n_heads=2), seed=0)
    model.tokenizer = tok
    return train(model, np.array(tok.encode(CODE_TEXT * 40)), steps=80, seq=24)


@functools.lru_cache(maxsize=None)
def source_model() -> cllm.Model:
    """A BPE model (vocab 512) with context 64, trained a little on cllm's own sources (cllm complete runs on it;
    what it predicts does not matter)."""
    texts = [p.read_text(encoding="utf-8") for p in SOURCES]
    tok = cllm.Tokenizer.train(texts, 512)
    model = cllm.Model(cllm.ModelConfig(vocab_size=tok.vocab_size, context_length=64, d_model=64, n_layers=2,
                                        n_heads=2), seed=0)
    model.tokenizer = tok
    eot = tok.special_tokens["<|endoftext|>"]
    ids = np.concatenate([np.array(tok.encode_ordinary(t) + [eot]) for t in texts])
    return train(model, ids, steps=50, seq=64)
