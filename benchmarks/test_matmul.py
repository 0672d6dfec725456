"""Linear layers (the SGEMM kernel) against numpy's matmul (OpenBLAS), M = 4096 rows, at each of conftest.THREADS
(quick mode: one shape, fewer rounds).

forward:  y = x · wᵀ             (numpy: np.matmul(x, w.T))
backward: dx = dy · w, dw = dyᵀ · x, db = Σ dy   (numpy: two matmuls and a sum)
GFLOP/s counts 2·M·N·K per matmul.
"""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from cllm import kernels

from conftest import THREADS, quick, settle

M = 4096
SHAPES = quick([(256, 768), (256, 256), (256, 1024), (1024, 256), (256, 8192)], [(256, 768)])  # (K, N)
ROUNDS, WARMUP = quick(15, 3), quick(3, 1)
CASES = [(op, K, N, threads, impl) for op in ("forward", "backward") for K, N in SHAPES for threads in THREADS
         for impl in ("numpy", "cllm")]


def operands(K, N):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((N, K), dtype=np.float32) * 0.05
    dy = rng.standard_normal((M, N), dtype=np.float32)
    return x, w, dy


@pytest.mark.parametrize("op,K,N,threads,impl", CASES, ids=[f"{o}-K{k}-N{n}-t{t}-{i}" for o, k, n, t, i in CASES])
def test_linear(benchmark, record, op, K, N, threads, impl):
    x, w, dy = operands(K, N)
    y, dx, dw, db = (np.empty(s, np.float32) for s in ((M, N), (M, K), (N, K), (N,)))
    if impl == "cllm":
        if op == "forward":
            fn = lambda: kernels.linear_forward(x, w, out=y, num_threads=threads)
        else:
            fn = lambda: kernels.linear_backward(dy, x, w, dx=dx, dw=dw, db=db, num_threads=threads)
    else:
        if op == "forward":
            fn = lambda: np.matmul(x, w.T, out=y)
        else:
            def fn():
                np.matmul(dy, w, out=dx)
                np.matmul(dy.T, x, out=dw)
                np.sum(dy, axis=0, out=db)
    flops = 2 * M * N * K * (1 if op == "forward" else 2)
    settle()
    with threadpool_limits(limits=threads, user_api="blas"):
        benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=WARMUP)
    record(f"linear_{op}", f"M{M} K{K} N{N}", threads, impl, flops, "FLOP")
