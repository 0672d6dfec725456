"""Preprocess: corpus -> clean, filtered, deduplicated JSONL document shards (the clean/ folder). The stage is
``stage.preprocess``; ``shards.py`` is the clean/ format's writer and its one reader. Nothing is imported here, so
that reading the shards does not load the stage's process pool."""
