"""rate.py NAME: 48 steps at 2 threads with the variant's length schedule; the median step time at each length,
weighted by the share of the steps the schedule gave that length (a sixth each for 64, 128, 256, half for 512 with
the default's), gives the steps that SECONDS buy. Run it alone on an idle machine."""

import json
import statistics
import sys
import tempfile

import cllm
from variants import SECONDS, TOKENS, options, record

if __name__ == "__main__":
    name = sys.argv[1]
    o = options(name)
    with tempfile.TemporaryDirectory() as d:
        cllm.train(TOKENS, **o, num_threads=2, max_steps=48, epochs=100, eval_every=10**6, checkpoint_every=10**6,
                   output=f"{d}/model.cllm", progress=False, resume=False)
        steps = [s for s in map(json.loads, open(f"{d}/metrics.jsonl")) if s.get("type") == "step"]
    tokens = o["batch_size"] * o["seq_len"]
    by_length = {}
    for s in steps:
        by_length.setdefault(s["seq_len"], []).append(tokens / s["tokens_per_s"])
    median = {n: statistics.median(t[2:] if len(t) > 4 else t) for n, t in by_length.items()}  # first steps warm up
    per_step = sum(len(by_length[n]) * t for n, t in median.items()) / len(steps)
    record({"name": name, "step_s": {str(n): round(t, 4) for n, t in sorted(median.items())},
            "tokens_per_s": tokens / per_step, "steps": round(SECONDS / per_step)}, "rates.jsonl")
