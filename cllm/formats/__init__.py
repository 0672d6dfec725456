"""File formats that know nothing of models: the .cllm container (a JSON header and named, aligned tensors)."""

from .container import FormatError

__all__ = ["FormatError"]
