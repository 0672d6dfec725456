"""Inference with a KV cache against the PyTorch peer (benchmarks/peers/torch_gpt.py, ``forward_cached``): prefill
tokens/s of a 128-token prompt and decode tokens/s at batch 1 (128 more tokens, greedy; quick mode: 32 and 32, one
round), preset "small" (V 8192, T 256, C 256, L 4, NH 4), at each of conftest.THREADS, both from
cllm.Model(cfg, seed=0)'s weights.

Each case runs benchmarks/generate_worker.py in a process of its own; the worker reports medians (see its
docstring), which ``record_rate`` stores. pytest-benchmark's own timing is the whole worker process: read the
figures from the summary table or extra_info. A second group times the decode step's two kernels alone, at batch 1,
in the worker too (each side with its own OpenMP settings: cllm's import sets GOMP_SPINCOUNT, so torch is imported
first): ``linear_forward_packed`` on the output head [8192, 256] and the MLP's first layer [1024, 256]
against ``F.linear`` (GB/s of weights read: these products are bound by memory), and ``attention_decode`` of one
query over 255 cached positions against ``F.scaled_dot_product_attention`` of q [1,4,1,64] over k, v [1,4,256,64]
(calls/s). A third checks that the peer's cached inference computes the same logits and greedy tokens as cllm's on
the same weights (preset "tiny").
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import cllm

from conftest import NOTES, THREADS, quick, settle

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "generate_worker.py")
PRESET, PROMPT, DECODE, ROUNDS = "small", quick(128, 32), quick(128, 32), quick(5, 1)
CASES = [(threads, impl) for threads in THREADS for impl in ("torch", "cllm")]  # the peer first: the ratio needs it

has_torch = importlib.util.find_spec("torch") is not None  # not imported here: the workers import it


def run_worker(impl, threads, options=()):
    cmd = [sys.executable, WORKER, "--impl", impl, "--threads", str(threads), "--preset", PRESET,
           "--prompt", str(PROMPT), "--decode", str(DECODE), "--rounds", str(ROUNDS), *options]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("threads,impl", CASES, ids=[f"t{t}-{i}" for t, i in CASES])
def test_generate(benchmark, record_rate, threads, impl):
    if impl == "torch" and not has_torch:
        pytest.skip("torch is not installed (pip install torch==2.13.0)")
    settle()
    result = benchmark.pedantic(run_worker, args=(impl, threads), rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    NOTES.append(f"generate t{threads} {impl}: decode step median {result['decode_step_ms_median']:.3f} ms "
                 f"(min {result['decode_step_ms_min']:.3f}), generate_ids end to end "
                 f"{result['generate_tokens_per_s']:.0f} tokens/s, others' CPU {result['others_cpu'] or 0:.2f}, "
                 f"peak RSS {result['peak_rss_mb']:.0f} MB")
    record_rate("prefill", f"{PRESET} prompt {PROMPT}", threads, impl, result["prefill_tokens_per_s"], "token",
                scale=(1e3, "k"))
    record_rate("decode", f"{PRESET} batch 1", threads, impl, result["decode_tokens_per_s"], "token")


KERNEL_CASES = [(kernel, threads, impl) for kernel in ("matvec_head", "matvec_mlp_fc", "attention_decode")
                for threads in THREADS for impl in ("torch", "cllm")]


@pytest.mark.parametrize("kernel,threads,impl", KERNEL_CASES, ids=["-".join(map(str, c)) for c in KERNEL_CASES])
def test_decode_kernels(benchmark, record_rate, kernel, threads, impl):
    if impl == "torch" and not has_torch:
        pytest.skip("torch is not installed (pip install torch==2.13.0)")
    settle()
    result = benchmark.pedantic(run_worker, args=(impl, threads, ["--kernel", kernel, "--rounds",
                                                                  str(quick(200, 20))]), rounds=1, iterations=1)
    unit, scale = (result["unit"], (1e9, "G")) if result["unit"] == "B" else (result["unit"], (1e3, "k"))
    record_rate("decode kernels", kernel, threads, impl, result["rate"], unit, scale=scale)


def test_peer_cached_inference_matches():
    torch = pytest.importorskip("torch")
    from peers.torch_gpt import GPT

    from cllm.model.decoder import Decoder

    cfg = cllm.ModelConfig.preset("tiny")
    model = cllm.Model(cfg, seed=0)
    model.params *= 3  # sharper logits: greedy choices far from ties
    peer = GPT.from_config(cfg)
    peer.load_from_numpy(model.state_dict())
    ids = np.random.default_rng(2).integers(0, cfg.vocab_size, 20).tolist()
    decoder, cache = Decoder(model), peer.new_cache(1)
    ours, theirs = decoder.prefill(0, ids), peer.forward_cached(torch.tensor([ids]), cache, 0)[0].numpy()
    for pos in range(len(ids), len(ids) + 30):
        scale = np.abs(theirs).max()
        assert np.abs(ours - theirs).max() <= 1e-4 * scale, f"logits differ at position {pos}"
        token = int(np.argmax(ours))
        assert token == int(np.argmax(theirs))
        ours = decoder.decode([0], [token])[0]
        theirs = peer.forward_cached(torch.tensor([[token]]), cache, pos)[0].numpy()
