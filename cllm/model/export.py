"""Export a .cllm model to other tools' formats: safetensors weights + config.json + tokenizer.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .._version import __version__
from ..runtime.atomic import FILE_MODE, atomic_write, fsync_directory
from .loading import read

__all__ = ["EXPORT_FORMATS", "export"]

EXPORT_FORMATS = ("safetensors",)


def export(path, directory, to: str = "safetensors") -> list[Path]:
    """Write the model in ``path`` to ``directory`` as ``model.safetensors`` (the state-dict names and PyTorch
    ``nn.Linear`` [out, in] layouts), ``config.json`` and, when the model has one, ``tokenizer.json`` (Hugging
    Face format). Checksums are verified first. Returns the files written."""
    if to not in EXPORT_FORMATS:
        raise ValueError(f"export: to must be one of {EXPORT_FORMATS} (got {to!r})")
    from safetensors.numpy import save_file

    model = read(path, mmap=True, verify=True).model
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / "model.safetensors"
    tmp = directory / ".model.safetensors.tmp"
    try:  # safetensors writes to a path: write beside, then rename (atomic like every other cllm output)
        save_file(model.state_dict(), str(tmp), metadata={"format": "pt", "producer": f"cllm {__version__}"})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)  # safetensors creates it private (0600); the other outputs are world-readable
        os.replace(tmp, weights)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_directory(directory)
    written = [weights]

    cfg = model.config
    if cfg.arch == "gpt2":
        constants = {"layer_norm_epsilon": 1e-5, "activation_function": "gelu_tanh", "tie_word_embeddings": True,
                     "weight_layout": "torch.nn.Linear [out_features, in_features]; Hugging Face GPT2 (Conv1D) needs "
                                      "the c_attn, c_proj and c_fc weights transposed"}
    else:
        constants = {"rms_norm_eps": cfg.norm_eps, "activation_function": "silu (SwiGLU: down(silu(gate) * up))",
                     "tie_word_embeddings": cfg.tie_embeddings, "intermediate_size": cfg.hidden_size,
                     "weight_layout": "Hugging Face Llama / Qwen3 (QK-norm) names, torch.nn.Linear [out_features, "
                                      "in_features]; rotary embeddings in rotate_half form"}
    config = {**cfg.to_dict(), "architecture": cfg.arch, **constants, "training": model.training_summary,
              "producer": f"cllm {__version__}"}
    with atomic_write(directory / "config.json", "w") as f:
        json.dump(config, f, indent=2)
    written.append(directory / "config.json")
    if model.tokenizer is not None:
        model.tokenizer.save(directory / "tokenizer.json")
        written.append(directory / "tokenizer.json")
    return written
