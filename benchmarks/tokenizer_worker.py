"""Train one BPE tokenizer on the Python standard library's .py sources in a process of its own (so that its
peak RSS and thread pool are its own) and print one JSON line.

    python benchmarks/tokenizer_worker.py --impl cllm|hf --vocab-size 8192 --threads 2 [--save FILE] [--max-bytes N]

Corpus: every .py file under the running Python's stdlib folder (site-packages excluded; ~31 MB), read as bytes and
decoded with errors="replace", the same texts for both (--max-bytes: only the first files, in path order, up to
about that many bytes). hf: tokenizers.BpeTrainer with the ByteLevel pre-tokenizer (GPT-2's split pattern, as
cllm's "gpt2"), min_frequency 2, the 256 byte alphabet, <|endoftext|> special.
Reports seconds (reading excluded), peak RSS and bytes per token of the whole corpus under the trained tokenizer.
"""

import argparse
import json
import os
import sys
import sysconfig
import time
from pathlib import Path

from peak_memory import peak_rss_mb


def stdlib_texts(max_bytes=None):
    """The stdlib's .py files in path order; with max_bytes, the first ones until that many bytes are read."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts, total = [], 0
    for path in sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts):
        if max_bytes is not None and total >= max_bytes:
            break
        data = path.read_bytes()
        total += len(data)
        texts.append(data.decode("utf-8", errors="replace"))
    return texts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=("cllm", "hf"), required=True)
    ap.add_argument("--vocab-size", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save", help="write the trained tokenizer.json here")
    ap.add_argument("--max-bytes", type=int, default=None, help="read only the first files, up to about N bytes")
    args = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # HF's thread pool; read when it first starts
    texts = stdlib_texts(args.max_bytes)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    if args.impl == "cllm":
        import cllm

        start = time.perf_counter()
        tok = cllm.Tokenizer.train(texts, args.vocab_size, num_threads=args.threads)
        seconds = time.perf_counter() - start
        n_tokens = sum(len(ids) for ids in tok.encode_batch(texts, num_threads=args.threads))
        vocab = tok.vocab_size
        if args.save:
            tok.save(args.save)
    else:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, min_frequency=2, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      special_tokens=["<|endoftext|>"])
        start = time.perf_counter()
        tok.train_from_iterator(texts, trainer=trainer)
        seconds = time.perf_counter() - start
        n_tokens = sum(len(e.ids) for e in tok.encode_batch(texts))
        vocab = tok.get_vocab_size()
    print(json.dumps({"impl": args.impl, "threads": args.threads, "vocab_size": vocab, "seconds": seconds,
                      "mb_per_s": n_bytes / seconds / 1e6, "bytes": n_bytes, "tokens": n_tokens,
                      "bytes_per_token": n_bytes / n_tokens,
                      "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    sys.exit(main())
