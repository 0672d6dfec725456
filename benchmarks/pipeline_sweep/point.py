"""point.py NAME STEPS [THREADS]: the variant's training for STEPS (bit-identical for any thread count, so points
can run side by side at 1 thread) and its score on the first 2^18 held-out tokens."""

import sys
import time

import cllm
from cllm.evaluate.metrics import evaluate
from variants import OUT, TOKENS, options, record

if __name__ == "__main__":
    name, steps = sys.argv[1], int(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    start = time.time()
    r = cllm.train(TOKENS, **options(name), num_threads=threads, max_steps=steps, epochs=100, eval_every=10**6,
                   checkpoint_every=10**6, output=str(OUT / name / "model.cllm"), progress=False, resume=False)
    cllm.set_num_threads(threads)
    m = evaluate(cllm.load(OUT / name / "model.cllm"), TOKENS, max_tokens=1 << 18)
    record({"name": name, "steps": r.steps, "tokens": r.tokens, "train_loss": r.train_loss,
            **{k: m[k] for k in ("bits_per_byte", "loss", "perplexity", "top1", "top5")},
            "seconds": round(time.time() - start)}, "points.jsonl")
