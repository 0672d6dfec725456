"""Models in other tools' formats: Hugging Face transformers folders (``hf``: out and in) and GGUF files for
llama.cpp (``gguf``: out). ``export`` writes any of them from a .cllm file; ``import_hf`` reads a transformers
checkpoint into one."""

from .export import EXPORT_FORMATS, export
from .hf_import import import_hf

__all__ = ["EXPORT_FORMATS", "export", "import_hf"]
