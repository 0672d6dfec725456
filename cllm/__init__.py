"""cllm: train small GPT language models from source files or web pages, with OpenMP C/C++ kernels.

The public API, re-exported (ARCHITECTURE.md "Contract"); each name lives in the module of its concern. The stages
as functions: ``collect``, ``crawl``, ``preprocess``, ``tokenize_corpus``, ``train``; then ``load`` a model.
(``cllm.train`` is the function; its subpackage is imported as ``from cllm.train import ...``.) The corpus stages
are imported on first use: their HTTP and process-pool modules would add 60 ms to every ``import cllm``.
"""

from . import kernels, optim
from ._version import __version__
from .formats import FormatError
from .kernels import show_config
from .model import Model, ModelConfig, load
from .runtime.threads import get_num_threads, set_num_threads, threads
from .tokenizer import Tokenizer
from .tokenizer.stage import tokenize_corpus
from .train import TrainConfig, TrainResult, train

__all__ = ["FormatError", "Model", "ModelConfig", "Tokenizer", "TrainConfig", "TrainResult", "__version__", "collect",
           "crawl", "get_num_threads", "kernels", "load", "optim", "preprocess", "set_num_threads", "show_config",
           "threads", "tokenize_corpus", "train"]


def __getattr__(name: str):
    """``cllm.collect``, ``cllm.crawl`` and ``cllm.preprocess``, imported when first asked for."""
    if name == "collect":
        from .corpus.collect import collect as stage
    elif name == "crawl":
        from .corpus.crawl import crawl as stage
    elif name == "preprocess":
        from .corpus.preprocess.stage import preprocess as stage
    else:
        raise AttributeError(f"module 'cllm' has no attribute {name!r}")
    globals()[name] = stage
    return stage


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
