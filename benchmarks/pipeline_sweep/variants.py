"""The pipeline sweep of docs/pipeline.md ("The llama default", second part): the default's training options and
the variants tried around it. Every variant trains on the same tokens for the steps its own 2-thread rate buys in
SECONDS (half of the full run's train stage) and is scored by cllm.evaluate on the first 2^18 held-out tokens.

    python rate.py NAME                 # alone on an idle machine: its 2-thread rate -> steps, into rates.jsonl
    python point.py NAME STEPS [THREADS]  # its training (bit-identical for any thread count) and score
    python batch_schedule.py STEPS THREADS B0 B1 SWITCH   # the default with a batch-size schedule

Environment: SWEEP_TOKENS (a cllm tokenize folder; default cllm-run/tokens), SWEEP_OUT (models and the jsonl
results; default sweep-out)."""

import json
import os
from pathlib import Path

import cllm

TOKENS = os.environ.get("SWEEP_TOKENS", "cllm-run/tokens")
OUT = Path(os.environ.get("SWEEP_OUT", "sweep-out"))
SECONDS = 419.0  # half of the 837 s the train stage gets in a full 15-minute run
# The pipeline default when the sweep ran (AdamW lr 3e-3; its "adamw6e3" variant won and is the default now).
DEFAULT = dict(model="mini", arch="llama", qk_norm=True, optimizer="muon", seq_len=512, seq_len_start=64,
               batch_size=8, lr=3e-3, muon_lr=0.02, warmup=50)


def llama(d_model: int, n_layers: int, n_heads: int) -> cllm.ModelConfig:
    return cllm.ModelConfig(vocab_size=8192, context_length=512, d_model=d_model, n_layers=n_layers,
                            n_heads=n_heads, arch="llama", qk_norm=True)


VARIANTS = {
    "default": {},
    "untied": {"tie_embeddings": False},
    "muon04": {"muon_lr": 0.04},
    "adamw6e3": {"lr": 6e-3},  # AdamW's rate (the embedding, head and norms) under Muon
    "small": {"model": "small"},  # C 256, 4 layers, 4 heads
    "deep6": {"model": llama(192, 6, 3), "arch": "gpt2", "qk_norm": False},  # a ModelConfig says arch itself
    "batch4": {"batch_size": 4},
    "batch16": {"batch_size": 16},
}


def options(name: str) -> dict:
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}: one of {', '.join(VARIANTS)}")
    return {**DEFAULT, **VARIANTS[name]}


def record(doc: dict, file: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    print(json.dumps(doc))
    with open(OUT / file, "a") as f:
        f.write(json.dumps(doc) + "\n")
