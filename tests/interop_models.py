"""Small trained models of every architecture variant for the interop tests (transformers, GGUF, llama.cpp), and
the held-out standard-library documents they are checked on."""

import functools
import json
from pathlib import Path

import numpy as np

import cllm
from tiny_lm import SOURCES, train

STDLIB = Path(json.__file__).parent.parent
# Standard-library sources the tokenizer never saw (it is trained on cllm's own sources)
HELD_OUT = sorted((STDLIB / "json").glob("*.py")) + [STDLIB / n for n in ("textwrap.py", "shlex.py", "string.py",
                                                                             "colorsys.py", "bisect.py")]
VARIANTS = {"gpt2": {}, "llama": {"arch": "llama"}, "qwen3": {"arch": "llama", "qk_norm": True},
            "llama-untied": {"arch": "llama", "tie_embeddings": False}}
PROMPTS = ("def ", "import os\n", "class Tokenizer:\n    def ", "    return ")


def held_out_texts() -> list[str]:
    return [p.read_text(encoding="utf-8") for p in HELD_OUT]


@functools.lru_cache(maxsize=None)
def tokenizer(pattern: str = "gpt2") -> cllm.Tokenizer:
    return cllm.Tokenizer.train([p.read_text(encoding="utf-8") for p in SOURCES], 600, pattern=pattern)


@functools.lru_cache(maxsize=None)
def trained(variant: str, pattern: str = "gpt2") -> cllm.Model:
    """A model of VARIANTS[variant], vocabulary rows 640 (the tokenizer's 600 and padding, as cllm train rounds),
    trained briefly on cllm's sources so that its greedy choices are not ties."""
    tok = tokenizer(pattern)
    cfg = cllm.ModelConfig(vocab_size=640, context_length=64, d_model=64, n_layers=2, n_heads=2, **VARIANTS[variant])
    model = cllm.Model(cfg, seed=0)
    model.tokenizer = tok
    eot = tok.special_tokens["<|endoftext|>"]
    ids = np.concatenate([np.array(tok.encode_ordinary(p.read_text(encoding="utf-8")) + [eot]) for p in SOURCES])
    return train(model, ids, steps=60, seq=64)


def saved(tmp_path, variant: str, pattern: str = "gpt2") -> Path:
    path = tmp_path / f"{variant}-{pattern}.cllm"
    if not path.exists():
        trained(variant, pattern).save(path)
    return path
