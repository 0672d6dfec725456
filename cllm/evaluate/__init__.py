"""How good a model is: held-out loss, perplexity and bits per byte (``evaluate``), completion of held-out code
lines (``complete``), and the benchmark report of ``cllm bench`` (``bench``)."""

from .complete import complete
from .metrics import evaluate

__all__ = ["complete", "evaluate"]
