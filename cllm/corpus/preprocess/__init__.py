"""Preprocess: corpus -> clean, filtered, deduplicated JSONL document shards (the clean/ folder)."""

from .stage import preprocess

__all__ = ["preprocess"]
