"""Stages 1-2: gather source files (``collect.py``) and web pages (``crawl/``) into a corpus, and turn it into
clean, deduplicated documents (``preprocess/``). Nothing is imported here: the tokenizer reads the clean/ shards
through ``preprocess/shards.py`` without loading the crawler or the process pool (``cllm.collect``, ``cllm.crawl``
and ``cllm.preprocess`` are the stages' functions)."""
