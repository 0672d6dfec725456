"""``cllm export``: a .cllm model in another tool's format.

    hf           a Hugging Face transformers folder (``hf.export_hf``)
    gguf         one GGUF file for llama.cpp, Ollama, LM Studio (``gguf.export_gguf``), in f32, f16 or q8_0
    safetensors  the raw state dict (cllm's names, nn.Linear [out, in] layouts) + config.json + tokenizer.json:
                 for loading into your own PyTorch module (benchmarks/peers/ are two)
"""

from __future__ import annotations

from pathlib import Path

from .._version import __version__
from ..model.loading import read
from ..runtime.atomic import fsync_directory
from .files import write_json, write_safetensors

__all__ = ["EXPORT_FORMATS", "GGUF_DTYPES", "export"]

EXPORT_FORMATS = ("hf", "gguf", "safetensors")
GGUF_DTYPES = ("f32", "f16", "q8_0")


def export(path, destination, to: str = "hf", dtype: str = "f32") -> list[Path]:
    """Write the model in the .cllm file ``path`` to ``destination`` (a folder for ``to="hf"`` and
    ``"safetensors"``, a file for ``"gguf"``, whose weights are ``dtype``: "f32", "f16" or "q8_0"). The file's
    checksums are verified first. Returns the files written."""
    if to not in EXPORT_FORMATS:
        raise ValueError(f"export: to must be one of {EXPORT_FORMATS} (got {to!r})")
    if dtype not in GGUF_DTYPES:
        raise ValueError(f"export: dtype must be one of {GGUF_DTYPES} (got {dtype!r})")
    if dtype != "f32" and to != "gguf":
        raise ValueError(f"export: dtype {dtype!r} is for to='gguf'; {to!r} writes float32")
    destination = Path(destination)
    if to == "gguf" and destination.is_dir():
        raise ValueError(f"export: to='gguf' writes one file, and {destination} is a folder")
    if to != "gguf" and destination.exists() and not destination.is_dir():
        raise ValueError(f"export: to={to!r} writes a folder, and {destination} is a file")
    model = read(path, mmap=True, verify=True).model
    if to == "gguf":
        from .gguf_file import export_gguf

        return [export_gguf(model, destination, dtype)]
    if to == "hf":
        from .hf import export_hf

        return export_hf(model, destination)
    return _export_state_dict(model, destination)


def _export_state_dict(model, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    producer = f"cllm {__version__}"
    written = [write_safetensors(directory / "model.safetensors", model.state_dict())]
    config = {**model.config.to_dict(), "architecture": model.config.arch, "training": model.training_summary,
              "weight_layout": "cllm's state dict: torch.nn.Linear [out_features, in_features]", "producer": producer}
    written.append(write_json(directory / "config.json", config))
    if model.tokenizer is not None:
        model.tokenizer.save(directory / "tokenizer.json")
        written.append(directory / "tokenizer.json")
    fsync_directory(directory)
    return written
