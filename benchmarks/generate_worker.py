"""One implementation's inference with a KV cache, timed in a process of its own (so that torch's and cllm's thread
pools never meet). Prints one JSON line.

    python benchmarks/generate_worker.py --impl cllm|torch --threads N [--preset small --prompt 128 --decode 128
        --rounds 5] [--kernel matvec_head|matvec_mlp_fc|attention_decode]

Each round prefills a prompt of random tokens (seed 0) and then decodes --decode tokens one at a time at batch 1,
greedily (the argmax of the logits is part of a step). prefill_tokens_per_s is the median over rounds of prompt
tokens / prefill time; decode_tokens_per_s is 1 / the median step time over every step of every round. Both
implementations start from cllm.Model(cfg, seed=0)'s weights and compute only the last position's logits.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step_worker import busy_cpu_seconds  # noqa: E402


def cllm_session(cfg, threads):
    """(prefill(ids) -> first token, decode(token) -> next token, generate(ids, n) -> ids) for cllm."""
    import cllm
    from cllm.model.decoder import Decoder

    cllm.set_num_threads(threads)
    model = cllm.Model(cfg, seed=0)
    decoder = Decoder(model, slots=1)
    prefill = lambda ids: int(np.argmax(decoder.prefill(0, ids)))
    decode = lambda token: int(np.argmax(decoder.decode([0], [token])[0]))
    generate = lambda ids, n: model.generate_ids(ids, n, temperature=0)
    return prefill, decode, generate


def torch_session(cfg, threads):
    import torch

    torch.set_num_threads(threads)  # before any torch work
    torch.set_num_interop_threads(1)
    from peers.torch_gpt import GPT

    import cllm

    cllm.set_num_threads(threads)
    model = GPT.from_config(cfg)
    model.load_from_numpy(cllm.Model(cfg, seed=0).state_dict())
    model.eval()
    cache = model.new_cache(1)
    state = {"pos": 0}

    def prefill(ids):
        state["pos"] = len(ids)
        return int(model.forward_cached(torch.tensor([ids]), cache, 0).argmax())

    def decode(token):
        logits = model.forward_cached(torch.tensor([[token]]), cache, state["pos"])
        state["pos"] += 1
        return int(logits.argmax())

    def generate(ids, n):
        out = [prefill(ids)]
        while len(out) < n:
            out.append(decode(out[-1]))
        return out

    return prefill, decode, generate


def kernel_rate(kernel, impl, threads, rounds):
    """(rate, unit) of one decode kernel at batch 1: the median of ``rounds`` rounds of 5 calls each (see
    benchmarks/test_generate.py for what is timed)."""
    rng = np.random.default_rng(0)
    if impl == "torch":
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(threads)
    else:
        from cllm import kernels
    if kernel.startswith("matvec"):
        N, K = (8192, 256) if kernel == "matvec_head" else (1024, 256)
        x, w = rng.standard_normal((1, K), dtype=np.float32), rng.standard_normal((N, K), dtype=np.float32)
        if impl == "torch":
            tx, tw = torch.from_numpy(x), torch.from_numpy(w)
            fn = lambda: F.linear(tx, tw)
        else:
            wp, y = kernels.pack_linear_weights(w), np.empty((1, N), np.float32)
            fn = lambda: kernels.linear_forward_packed(x, wp, n=N, out=y, num_threads=threads)
        work, unit = 4 * N * K, "B"
    else:
        NH, hs, Tk, pos = 4, 64, 256, 255
        qkv = rng.standard_normal((1, 3 * NH * hs), dtype=np.float32)
        if impl == "torch":
            q = torch.from_numpy(qkv[:, :NH * hs].reshape(1, NH, 1, hs).copy())
            k, v = (torch.from_numpy(rng.standard_normal((1, NH, pos + 1, hs), dtype=np.float32)) for _ in "kv")
            fn = lambda: F.scaled_dot_product_attention(q, k, v)
        else:
            kc = rng.standard_normal((1, NH, hs, Tk), dtype=np.float32)
            vc = rng.standard_normal((1, NH, Tk, hs), dtype=np.float32)
            slot, at, out = np.zeros(1, np.int32), np.full(1, pos, np.int32), np.empty((1, NH * hs), np.float32)
            fn = lambda: kernels.attention_decode(qkv, kc, vc, slot, at, out=out, num_threads=threads)
        work, unit = 1, "call"
    times = []
    for _ in range(rounds + rounds // 10):  # the first tenth warms up
        t0 = time.perf_counter()
        for _ in range(5):
            fn()
        times.append((time.perf_counter() - t0) / 5)
    return work / statistics.median(times[rounds // 10:]), unit


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", choices=("cllm", "torch"), required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--kernel", choices=("matvec_head", "matvec_mlp_fc", "attention_decode"),
                    help="time this decode kernel alone instead (--rounds rounds of 5 calls)")
    args = ap.parse_args(argv)
    if args.impl == "torch":  # before cllm, whose import sets GOMP_SPINCOUNT: the peer keeps its own OpenMP defaults
        import torch  # noqa: F401
    import cllm

    if args.kernel:
        rate, unit = kernel_rate(args.kernel, args.impl, args.threads, args.rounds)
        print(json.dumps({"impl": args.impl, "threads": args.threads, "kernel": args.kernel, "rate": rate,
                          "unit": unit}))
        return

    cfg = cllm.ModelConfig.preset(args.preset)
    if args.prompt < 1 or args.decode < 1 or args.prompt + args.decode > cfg.context_length or args.rounds < 1:
        ap.error(f"need --prompt, --decode, --rounds >= 1 and prompt + decode <= {cfg.context_length}")
    prefill, decode, generate = (torch_session if args.impl == "torch" else cllm_session)(cfg, args.threads)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, args.prompt).tolist()
    generate(ids, 8)  # warm-up: thread pools, caches, first-call allocations
    prefill_times, step_times, tokens = [], [], None
    cpu_before = busy_cpu_seconds()
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        token = prefill(ids)
        prefill_times.append(time.perf_counter() - t0)
        out = [token]
        for _ in range(args.decode - 1):
            t0 = time.perf_counter()
            out.append(decode(out[-1]))
            step_times.append(time.perf_counter() - t0)
        tokens = tokens or out
        assert out == tokens, "greedy decoding must repeat itself"
    cpu_after = busy_cpu_seconds()
    elapsed = sum(prefill_times) + sum(step_times)
    others_cpu = None  # cores' worth of CPU other processes used meanwhile: > ~0.2 means a disturbed measurement
    if cpu_before and cpu_after:
        others_cpu = max(0.0, ((cpu_after[0] - cpu_before[0]) - (cpu_after[1] - cpu_before[1])) / elapsed)
    t0 = time.perf_counter()
    generate(ids, args.decode)
    end_to_end = args.decode / (time.perf_counter() - t0)
    print(json.dumps({
        "impl": args.impl, "threads": args.threads, "preset": args.preset, "prompt": args.prompt,
        "decode": args.decode, "rounds": args.rounds,
        "prefill_tokens_per_s": statistics.median(args.prompt / t for t in prefill_times),
        "decode_tokens_per_s": 1.0 / statistics.median(step_times),
        "decode_step_ms_median": statistics.median(step_times) * 1e3, "decode_step_ms_min": min(step_times) * 1e3,
        "generate_tokens_per_s": end_to_end,  # prefill + decode through the public API, greedy
        "tokens": tokens[:16], "others_cpu": others_cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
