"""``cllm import``: a Hugging Face transformers checkpoint (config.json, model.safetensors, tokenizer.json) as a
.cllm model, ready for ``cllm train --init`` to fine-tune.

A cllm tokenizer numbers its tokens canonically (the 256 bytes in order, then each merge's result in rank order,
then the special tokens), and a Hugging Face vocabulary may number them in any order (GPT-2's begins with "!").
So the import renumbers: it finds each cllm id's token in the file's vocabulary and moves the embedding's (and
an untied head's) rows to match. The model computes the same function; only the ids differ, and
``import_hf(...).hf_ids`` gives the file's id of every cllm id.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..model.config import ModelConfig
from ..model.language_model import Model
from ..tokenizer import Tokenizer
from ..tokenizer.bpe import read_hf_tokenizer
from .hf import config_from_hf, weights_from_hf
from .safetensors_file import read_safetensors

__all__ = ["ImportedModel", "import_hf"]


@dataclasses.dataclass
class ImportedModel:
    """What ``import_hf`` wrote: the .cllm file, the model, and hf_ids[cllm id] = the checkpoint's token id."""

    path: Path
    model: Model
    hf_ids: np.ndarray


def import_hf(directory, output) -> ImportedModel:
    """Read the transformers checkpoint in ``directory`` and write it to the .cllm file ``output``."""
    directory, output = Path(directory), Path(output)
    if not directory.is_dir():
        raise ValueError(f"import: {directory} is not a folder (expected a Hugging Face model folder)")
    if output.is_dir():
        raise ValueError(f"import: output {output} is a folder (expected the path of a .cllm file)")
    config = _config(directory)
    tokenizer, hf_ids = _tokenizer(directory / "tokenizer.json", config.vocab_size)
    tensors = read_safetensors(_weights_file(directory))
    state = weights_from_hf(config, tensors, str(directory / "model.safetensors"))
    rows = np.concatenate([hf_ids, np.setdiff1d(np.arange(config.vocab_size), hf_ids)])  # then unused rows
    for name in ("transformer.wte.weight", "model.embed_tokens.weight", "lm_head.weight"):
        if name in state:
            state[name] = state[name][rows]
    model = Model(config)
    model.load_state_dict(state)
    model.tokenizer = tokenizer
    model.training_summary = {"imported_from": str(directory.resolve())}
    output.parent.mkdir(parents=True, exist_ok=True)
    model.save(output)
    return ImportedModel(output, model, hf_ids)


def _config(directory: Path) -> ModelConfig:
    path = directory / "config.json"
    doc = _json(path)
    try:
        config = config_from_hf(doc, str(path))
    except TypeError as e:
        raise ValueError(f"{path}: {e}") from None
    if config.arch == "llama" and config.mlp_hidden == dataclasses.replace(config, mlp_hidden=0).hidden_size:
        config = dataclasses.replace(config, mlp_hidden=0)  # the default width: say so, as cllm's own configs do
    return config


def _weights_file(directory: Path) -> Path:
    path = directory / "model.safetensors"
    if path.is_file():
        return path
    if (directory / "model.safetensors.index.json").exists():
        raise ValueError(f"import: {directory} holds a sharded checkpoint (model.safetensors.index.json); cllm reads "
                         f"one model.safetensors (save_pretrained(..., max_shard_size='100GB') writes one)")
    if any(directory.glob("*.bin")) or any(directory.glob("*.pt")):
        raise ValueError(f"import: {directory} holds PyTorch pickle files, which cllm never loads (they can run code); "
                         f"save the model with safetensors (save_pretrained's default)")
    raise ValueError(f"import: {directory} has no model.safetensors")


def _json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"import: {path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"import: cannot read {path}: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"import: {path} is not a JSON object")
    return doc


def _tokenizer(path: Path, n_rows: int) -> tuple[Tokenizer, np.ndarray]:
    """The byte-level BPE of ``path`` as a cllm Tokenizer, and hf_ids[cllm id] = the file's id of that token."""
    tokenizer, ids = read_hf_tokenizer(_json(path), str(path))
    if max(ids) >= n_rows:
        raise ValueError(f"import: {path} has token ids up to {max(ids)}, beyond the model's {n_rows} embedding "
                         f"rows")
    return tokenizer, np.array(ids, dtype=np.int64)
