"""cllm: train small GPT language models from source files or web pages, with OpenMP C/C++ kernels.

The public API, re-exported (ARCHITECTURE.md "Contract"); each name lives in the module of its concern. The stages
as functions: ``collect``, ``crawl``, ``preprocess``, ``tokenize_corpus``, ``train``; then ``load`` a model.
(``cllm.train`` is the function; its subpackage is imported as ``from cllm.train import ...``.)
"""

from . import kernels, optim
from ._version import __version__
from .corpus import collect, crawl, preprocess
from .formats import FormatError
from .kernels import show_config
from .model import Model, ModelConfig, load
from .runtime.threads import get_num_threads, set_num_threads, threads
from .tokenizer import Tokenizer
from .tokenizer.stage import tokenize_corpus
from .train import TrainConfig, TrainResult, train

__all__ = ["FormatError", "Model", "ModelConfig", "Tokenizer", "TrainConfig", "TrainResult", "__version__", "collect",
           "crawl", "get_num_threads", "kernels", "load", "optim", "preprocess", "set_num_threads", "show_config", "threads", "tokenize_corpus", "train"]
