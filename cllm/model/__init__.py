"""The model: its configuration and presets, the GPT (forward and backward as kernel calls), the KV-cache decoder,
sampling and generation, and its .cllm files (``checkpoint`` writes them, ``loading`` reads them)."""

from .config import PRESETS, ModelConfig
from .language_model import Model
from .loading import load, read

__all__ = ["PRESETS", "Model", "ModelConfig", "load", "read"]
