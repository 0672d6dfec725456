"""One implementation's full training step (forward + backward + grad clip + AdamW), timed in a process of its own
so that its peak RSS is its own and torch's and cllm's thread pools never meet. Prints one JSON line.

    python benchmarks/train_step_worker.py --impl cllm|torch --threads N --steps S --warmup W --preset small \
        [--arch gpt2|llama [--qk-norm] [--untied]] [--batch 16 --seq 256]

tokens_per_s is the median over the timed steps of B·T / step time. Both start from cllm.Model(cfg, seed=0)'s
weights (llama's zero-initialised output projections are given N(0, 0.02) weights first, so that every gradient is
non-zero as it is after the first step); data: uniform random tokens (seed 0), targets = the next token. The peer:
benchmarks/peers/torch_gpt.py or torch_llama.py. For cllm the line also holds a per-kernel
time breakdown of one more step, the model's FLOP/s against numpy's sgemm (same threads, same process) and the
memory a step needs by the model's own estimate (16 bytes per parameter + the activations kept for the backward).
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

from peak_memory import peak_rss_mb

LR, BETAS, EPS, WEIGHT_DECAY, GRAD_CLIP = 6e-4, (0.9, 0.95), 1e-8, 0.1, 1.0


def model_config(args):
    import cllm

    if args.arch == "gpt2":
        return cllm.ModelConfig.preset(args.preset)
    return cllm.ModelConfig.preset(args.preset, arch="llama", qk_norm=args.qk_norm, tie_embeddings=not args.untied)


def initial_model(cfg):
    """cllm.Model(cfg, seed=0), whose weights both sides start from (llama's zero output projections filled)."""
    import cllm

    model = cllm.Model(cfg, seed=0)
    rng = np.random.default_rng(1)
    for name, w in model.state_dict().items():
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            w[...] = rng.standard_normal(w.shape, dtype=np.float32) * np.float32(0.02)
    return model


def make_data(cfg, batch, seq):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, size=(batch, seq + 1), dtype=np.int64)
    return tokens[:, :-1].copy(), tokens[:, 1:].copy()


def cllm_step_fn(cfg, threads, idx, targets):
    import cllm

    cllm.set_num_threads(threads)
    model = initial_model(cfg)
    opt = cllm.optim.AdamW(model, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY, grad_clip=GRAD_CLIP)

    def step():
        loss = model.forward_backward(idx, targets)
        opt.step()
        return float(loss)

    def extras(step_seconds):
        """Per-kernel breakdown of one more step, model FLOP/s against numpy's sgemm, memory against need."""
        with model.profiling() as times:
            step()
        start = time.perf_counter()
        opt.step()
        times["adamw_step"] = time.perf_counter() - start
        flops = step_flops(cfg, *idx.shape)
        est = model.memory_estimate(*idx.shape)
        need = (est["parameters"] + est["gradients"] + est["optimizer"] + est["activations"]) / 2**20
        sgemm = numpy_sgemm_gflops(threads)
        return {"breakdown_ms": {k: round(v * 1e3, 2) for k, v in sorted(times.items(), key=lambda kv: -kv[1])},
                "model_gflop_per_step": flops / 1e9, "model_gflops": flops / step_seconds / 1e9,
                "numpy_sgemm_gflops": sgemm, "mfu_vs_numpy_sgemm": flops / step_seconds / 1e9 / sgemm,
                "theoretical_mb": need, "memory_estimate_mb": {k: v / 2**20 for k, v in est.items()}}

    return step, model.n_params, extras


def step_flops(cfg, batch, seq):
    """FLOPs of one training step as MFU counts them: 3× the forward's (backward = 2× forward), matmuls and the
    causal attention exactly; the attention backward's recomputation is not counted."""
    C, L, V, H, tokens = cfg.d_model, cfg.n_layers, cfg.vocab_size, cfg.hidden_size, batch * seq
    mlp = (3 if cfg.arch == "llama" else 2) * C * H  # gate, up, down; or fc, proj
    matmul = 2 * tokens * (L * (3 * C * C + C * C + mlp) + C * V)
    attention = L * 2 * 2 * batch * seq * (seq + 1) / 2 * C  # q·kᵀ and p·v over the causal half, all heads
    return 3 * (matmul + attention)


def numpy_sgemm_gflops(threads, M=4096, K=256, N=1024):
    """numpy's (OpenBLAS) sgemm GFLOP/s on a model-sized matmul with the same thread count, median of 10."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((M, K), dtype=np.float32), rng.standard_normal((K, N), dtype=np.float32)
    out = np.empty((M, N), np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        np.matmul(a, b, out=out)
        times = []
        for _ in range(10):
            start = time.perf_counter()
            np.matmul(a, b, out=out)
            times.append(time.perf_counter() - start)
    return 2 * M * K * N / statistics.median(times) / 1e9


def torch_step_fn(cfg, threads, idx, targets):
    import torch

    torch.set_num_threads(threads)  # before any torch work
    torch.set_num_interop_threads(1)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from peers.torch_gpt import GPT, make_optimizer, train_step
    from peers.torch_llama import Llama

    torch.manual_seed(0)
    model = GPT.from_config(cfg) if cfg.arch == "gpt2" else Llama(cfg)
    import cllm

    cllm.set_num_threads(threads)  # start from the same weights as cllm (its model is dropped at once)
    model.load_from_numpy(initial_model(cfg).state_dict())
    opt = make_optimizer(model, lr=LR, weight_decay=WEIGHT_DECAY, betas=BETAS, eps=EPS)
    tidx, ttargets = torch.from_numpy(idx), torch.from_numpy(targets)
    n_params = sum(p.numel() for p in model.parameters())
    return (lambda: train_step(model, opt, tidx, ttargets, GRAD_CLIP)), n_params, None


def busy_cpu_seconds():
    """CPU seconds spent by the whole machine (Linux /proc/stat) and by this process; None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    ours = resource.getrusage(resource.RUSAGE_SELF)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK"), ours.ru_utime + ours.ru_stime


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", choices=("cllm", "torch"), required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--arch", choices=("gpt2", "llama"), default="gpt2")
    ap.add_argument("--qk-norm", action="store_true", help="llama: QK-norm")
    ap.add_argument("--untied", action="store_true", help="llama: an output head of its own")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=None, help="sequence length (default: the preset's context length)")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.steps < 1 or args.warmup < 0 or args.batch < 1:
        ap.error("--threads, --steps and --batch must be >= 1 and --warmup >= 0")

    cfg = model_config(args)
    seq = args.seq or cfg.context_length
    if not 1 <= seq <= cfg.context_length:
        ap.error(f"--seq must be in 1..{cfg.context_length} for preset {args.preset} (got {seq})")
    idx, targets = make_data(cfg, args.batch, seq)
    make = torch_step_fn if args.impl == "torch" else cllm_step_fn
    step, n_params, extras = make(cfg, args.threads, idx, targets)

    losses, times = [], []
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            cpu_before = busy_cpu_seconds()
        t0 = time.perf_counter()
        loss = step()
        dt = time.perf_counter() - t0
        if i >= args.warmup:
            losses.append(loss)
            times.append(dt)
    cpu_after = busy_cpu_seconds()
    others_cpu = None  # cores' worth of CPU that other processes used while the steps ran: > ~0.2 means disturbed
    if cpu_before and cpu_after:
        others_cpu = max(0.0, ((cpu_after[0] - cpu_before[0]) - (cpu_after[1] - cpu_before[1])) / sum(times))
    tokens = args.batch * seq
    more = extras(statistics.median(times)) if extras else {}
    print(json.dumps({
        **more,
        "impl": args.impl,
        "threads": args.threads,
        "preset": args.preset,
        "arch": cfg.arch,
        "batch": args.batch,
        "seq": seq,
        "tokens_per_s": statistics.median(tokens / t for t in times),
        "step_ms_median": statistics.median(times) * 1e3,
        "step_ms_min": min(times) * 1e3,  # the least disturbed step, for a busy machine
        "step_ms_all": [round(t * 1e3, 3) for t in times],
        "others_cpu": others_cpu,
        "peak_rss_mb": peak_rss_mb(),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "n_params": n_params,
    }))


if __name__ == "__main__":
    main()
