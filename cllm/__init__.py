"""cllm: train small GPT language models from source files or web pages, with OpenMP C/C++ kernels.

The public API, re-exported (ARCHITECTURE.md "Contract"); each name lives in the module of its concern. The stages
as functions: ``collect``, ``crawl``, ``preprocess``, ``tokenize_corpus``, ``train``; then ``load`` a model,
``export`` it (transformers, GGUF) or ``import_hf`` one.
(``cllm.train`` is the function; its subpackage is imported as ``from cllm.train import ...``.) The data stages
are imported on first use (their HTTP and process-pool modules would slow every ``import cllm``).
"""

import importlib

from . import kernels, optim
from ._version import __version__
from .formats import FormatError
from .interop import export, import_hf
from .kernels import show_config
from .model import Model, ModelConfig, load
from .runtime.threads import get_num_threads, set_num_threads, threads
from .tokenizer import Tokenizer
from .train import TrainConfig, TrainResult, train

__all__ = ["FormatError", "Model", "ModelConfig", "Tokenizer", "TrainConfig", "TrainResult", "__version__", "collect",
           "crawl", "export", "get_num_threads", "import_hf", "kernels", "load", "optim", "preprocess",
           "set_num_threads", "show_config", "threads", "tokenize_corpus", "train"]
_STAGES = {"collect": ".corpus.collect", "crawl": ".corpus.crawl.crawler", "preprocess": ".corpus.preprocess.stage",
           "tokenize_corpus": ".tokenizer.stage"}  # imported on first use: they add 30 ms to every import cllm


def __getattr__(name: str):
    """The data stages' functions, imported when first asked for."""
    if name not in _STAGES:
        raise AttributeError(f"module 'cllm' has no attribute {name!r}")
    stage = getattr(importlib.import_module(_STAGES[name], __name__), name)
    globals()[name] = stage
    return stage


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
