"""cllm: train small GPT language models from source files or web pages, with OpenMP C/C++ kernels.

The public API, re-exported (ARCHITECTURE.md "Contract"); each name lives in the module of its concern.
"""

from . import kernels, optim
from ._version import __version__
from .config import ModelConfig, TrainConfig
from .fileformat import FormatError, load
from .model import Model
from .system import show_config
from .threads import get_num_threads, set_num_threads, threads
from .tokenizer import Tokenizer
from .trainer import TrainResult, train

__all__ = ["FormatError", "Model", "ModelConfig", "Tokenizer", "TrainConfig", "TrainResult", "__version__",
           "get_num_threads", "kernels", "load", "optim", "set_num_threads", "show_config", "threads", "train"]
