"""Linear layers: y = x · wᵀ + b as a GEMM (training, prefill) or over weights packed by panels (decode).
Shapes as in csrc/cllm.h: x [M, K], w [N, K], b [N], y [M, N]."""

from __future__ import annotations

import numpy as np

from .._core import _kernels
from ..runtime.checks import is_integer
from ..runtime.threads import resolve_num_threads
from .arrays import check, check_out
from .elementwise import gelu_forward, residual_forward

__all__ = ["PANEL", "PackedLinear", "linear_backward", "linear_forward", "linear_forward_packed", "pack_linear_weights",
           "tree_reduce"]

PANEL = _kernels.PANEL  # output columns per panel of packed linear weights (csrc/cllm.h CLLM_PANEL)
# Up to this many rows the packed path (weights packed once) beats the GEMM (which repacks them per call), clearly
# at 2 threads (M = 128: 330 vs 160 GFLOP/s), within ~13% either way at 1 thread; both give the same bits.
PACKED_MAX_ROWS = 256



def linear_forward(x, w, b=None, *, out=None, residual=None, gelu_out=None, num_threads=None) -> np.ndarray:
    """y = x · wᵀ + b.   x [M, K], w [N, K] (nn.Linear layout), b [N] or None -> y [M, N], float32.

    Fused into the same pass, at most one of: ``residual`` [M, N]: y = residual + (x · wᵀ + b), a block's
    projection added to its input; ``gelu_out`` [M, N]: also gelu_out = gelu(y), the MLP's activation. Each gives
    the bits of the separate ``residual_forward`` / ``gelu_forward``."""
    fn = "linear_forward"
    check(fn, "w", w, (None, None))
    N, K = w.shape
    check(fn, "x", x, (None, K))
    if b is not None:
        check(fn, "b", b, (N,))
    if residual is not None and gelu_out is not None:
        raise ValueError(f"{fn}: give residual or gelu_out, not both")
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    M = x.shape[0]
    if residual is not None:
        check(fn, "residual", residual, (M, N))
    y = check_out(fn, "out", out, (M, N), (x, w, b, residual))
    if gelu_out is not None:
        check_out(fn, "gelu_out", gelu_out, (M, N), (x, w, b, y))
    if M and N:
        if K:
            _kernels.linear_forward(x, w, b, residual, y, gelu_out, nt)
        else:  # an empty sum: y = b (or 0), then the fused step
            y[...] = 0.0 if b is None else b
            if residual is not None:
                residual_forward(residual, y, out=y, num_threads=nt)
            if gelu_out is not None:
                gelu_forward(y, out=gelu_out, num_threads=nt)
    return y


def linear_backward(dy, x, w, *, dx=None, dw=None, db=None, bias=True, accumulate=False, gelu_x=None,
                    num_threads=None):
    """Gradients of y = x · wᵀ + b:  dx = dy · w [M, K],  dw = dyᵀ · x [N, K],  db = Σ_m dy [N].

    With ``gelu_x`` [M, K] (x = gelu(gelu_x), the MLP's activation), dx goes on through the GELU in the same pass:
    dx = (dy · w)·gelu'(gelu_x), the bits of ``gelu_backward``.

    dy [M, N], x [M, K], w [N, K]. Returns (dx, dw, db); db is None with ``bias=False`` (a layer without bias).
    dx, dw, db may be given as output buffers; with ``accumulate=True`` the gradients are added to dw and db
    (which must then be given), as when several micro-batches add up into one gradient. The sums over M are cut
    into fixed row chunks reduced up the sphere tree, so the bits do not depend on num_threads.
    """
    fn = "linear_backward"
    check(fn, "w", w, (None, None))
    N, K = w.shape
    check(fn, "x", x, (None, K))
    M = x.shape[0]
    check(fn, "dy", dy, (M, N))
    if accumulate and (dw is None or (bias and db is None)):
        raise ValueError(f"{fn}: accumulate=True needs the dw and db arrays to add to")
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    if gelu_x is not None:
        check(fn, "gelu_x", gelu_x, (M, K))
    inputs = (dy, x, w, gelu_x)
    dx = check_out(fn, "dx", dx, (M, K), inputs)
    dw = check_out(fn, "dw", dw, (N, K), inputs + (dx,))
    db = check_out(fn, "db", db, (N,), inputs + (dx, dw)) if bias else None
    if M and N and K:
        _kernels.linear_backward(dy, x, w, gelu_x, dx, dw, db, bool(accumulate), nt)
    else:  # an empty dimension: dx and dw are empty sums, db still sums dy's rows
        dx[...] = 0.0  # (and gelu'(·)·0 = 0)
        if not accumulate:
            dw[...] = 0.0
        if db is not None:
            if not accumulate:
                db[...] = 0.0
            db += dy.sum(axis=0, dtype=np.float32)
    return dx, dw, db


def pack_linear_weights(w) -> np.ndarray:
    """w [N, K] (nn.Linear layout) -> wp [ceil(N/PANEL), K, PANEL] with wp[p, k, c] = w[p·PANEL + c, k] (zero past
    N): the layout ``linear_forward_packed`` streams. A copy, made once per model for decoding."""
    check("pack_linear_weights", "w", w, (None, None))
    N, K = w.shape
    P = -(-N // PANEL)
    padded = np.zeros((P * PANEL, K), dtype=np.float32)
    padded[:N] = w
    return np.ascontiguousarray(padded.reshape(P, PANEL, K).transpose(0, 2, 1))


def linear_forward_packed(x, wp, b=None, *, n: int, out=None, num_threads=None) -> np.ndarray:
    """y = x · wᵀ + b for a few rows (the decode step), w given packed by ``pack_linear_weights``.

    x [M, K], wp [ceil(n/PANEL), K, PANEL], b [n] or None -> y [M, n], float32: each row has exactly the bits
    ``linear_forward`` gives it, whatever M. One pass over the weights serves all M rows."""
    fn = "linear_forward_packed"
    check(fn, "wp", wp, (None, None, PANEL))
    P, K, _ = wp.shape
    if not is_integer(n) or not (P - 1) * PANEL < n <= P * PANEL \
            and not (P == 0 and n == 0):
        raise ValueError(f"{fn}: n must be the packed weight's output count, in ({(P - 1) * PANEL}, {P * PANEL}] "
                         f"(got {n!r})")
    check(fn, "x", x, (None, K))
    if b is not None:
        check(fn, "b", b, (n,))
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    y = check_out(fn, "out", out, (x.shape[0], n), (x, wp, b))
    if y.size:
        if K:
            _kernels.linear_forward_packed(x, wp, b, y, nt)
        else:
            y[...] = 0.0 if b is None else b
    return y


class PackedLinear:
    """A linear layer's weights made ready for inference: w [N, K] (nn.Linear layout), b [N] or None, and w packed
    once by ``pack_linear_weights`` (a copy). ``forward`` streams the packed weights for up to PACKED_MAX_ROWS rows
    (prefill of a short prompt, decode) and runs the GEMM above: each row gets the same bits either way."""

    def __init__(self, w, b=None):
        self.weight, self.bias = w, b
        self.packed = pack_linear_weights(w)

    def forward(self, x, *, out=None, num_threads=None) -> np.ndarray:
        """y = x · wᵀ + b.   x [M, K] -> y [M, N]."""
        if x.shape[0] <= PACKED_MAX_ROWS:
            return linear_forward_packed(x, self.packed, self.bias, n=self.weight.shape[0], out=out,
                                         num_threads=num_threads)
        return linear_forward(x, self.weight, self.bias, out=out, num_threads=num_threads)


def tree_reduce(partials, *, num_threads=None) -> np.ndarray:
    """Sum partials [n, L] over n up the sphere tree (fan-out 12) in its fixed order -> [L].

    The order of additions is that of ``cllm.threads.tree_sum``; it depends on n only, never on num_threads.
    """
    fn = "tree_reduce"
    check(fn, "partials", partials, (None, None))
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    n, length = partials.shape
    out = np.zeros(length, dtype=np.float32)
    if n and length:
        _kernels.tree_reduce(partials.copy(), out, False, nt)
    return out
