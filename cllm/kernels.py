"""Checked entry points to the C kernels (ARCHITECTURE.md "Backends").

Model code reaches kernels only through this module. Each function validates dtype, rank, shape and contiguity
(a clear TypeError/ValueError naming the argument, never a crash), resolves ``num_threads`` through
``cllm.threads`` and calls ``cllm._core._kernels`` with the GIL released. Shapes use the short names of
csrc/cllm.h: x [M, K], w [N, K], b [N], y [M, N].
"""

from __future__ import annotations

import numpy as np

from ._core import _kernels
from .threads import resolve_num_threads

__all__ = ["get_isa", "linear_backward", "linear_forward", "set_isa", "tree_reduce"]


def get_isa() -> str:
    """The kernel path in use: "avx512", "avx2" or "baseline"."""
    return _kernels.isa()


def set_isa(name: str) -> None:
    """Force a kernel path (for tests and benchmarks); "auto" picks the best this CPU supports.

    The environment variable ``CLLM_ISA`` does the same at import time.
    """
    _kernels.set_isa(name)


def _describe(a) -> str:
    if not isinstance(a, np.ndarray):
        return type(a).__name__
    layout = "" if a.flags.c_contiguous else " non-contiguous"
    return f"{a.dtype} {list(a.shape)}{layout}"


def _check(fn: str, name: str, a, expected: tuple, *, writeable: bool = False) -> np.ndarray:
    """a must be a C-contiguous float32 ndarray whose shape matches expected (ints, or None for 'any')."""
    dims = ", ".join("?" if d is None else str(d) for d in expected)
    want = f"{fn}: {name} must be float32 C-contiguous [{dims}]"
    if not isinstance(a, np.ndarray) or a.dtype != np.float32:
        raise TypeError(f"{want} (got {_describe(a)})")
    shape_ok = a.ndim == len(expected) and all(d is None or d == s for d, s in zip(expected, a.shape))
    if not shape_ok or not a.flags.c_contiguous:
        raise ValueError(f"{want} (got {_describe(a)})")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{fn}: {name} must be writeable")
    return a


def _check_out(fn: str, name: str, out, shape: tuple, inputs: tuple) -> np.ndarray:
    """A caller-given output buffer, or a new one; never one that overlaps an input."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    _check(fn, name, out, shape, writeable=True)
    if any(a is not None and np.may_share_memory(out, a) for a in inputs):
        raise ValueError(f"{fn}: {name} must not overlap an input array")
    return out


def linear_forward(x, w, b=None, *, out=None, num_threads=None) -> np.ndarray:
    """y = x · wᵀ + b.   x [M, K], w [N, K] (nn.Linear layout), b [N] or None -> y [M, N], float32."""
    fn = "linear_forward"
    _check(fn, "w", w, (None, None))
    N, K = w.shape
    _check(fn, "x", x, (None, K))
    if b is not None:
        _check(fn, "b", b, (N,))
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    M = x.shape[0]
    y = _check_out(fn, "out", out, (M, N), (x, w, b))
    if M and N:
        if K:
            _kernels.linear_forward(x, w, b, y, nt)
        else:
            y[...] = 0.0 if b is None else b
    return y


def linear_backward(dy, x, w, *, dx=None, dw=None, db=None, accumulate=False, num_threads=None):
    """Gradients of y = x · wᵀ + b:  dx = dy · w [M, K],  dw = dyᵀ · x [N, K],  db = Σ_m dy [N].

    dy [M, N], x [M, K], w [N, K]. Returns (dx, dw, db). dx, dw, db may be given as output buffers; with
    ``accumulate=True`` the gradients are added to dw and db (which must then be given), as when several
    micro-batches add up into one gradient. The sums over M are cut into fixed row chunks reduced up the sphere
    tree, so the bits do not depend on num_threads.
    """
    fn = "linear_backward"
    _check(fn, "w", w, (None, None))
    N, K = w.shape
    _check(fn, "x", x, (None, K))
    M = x.shape[0]
    _check(fn, "dy", dy, (M, N))
    if accumulate and (dw is None or db is None):
        raise ValueError(f"{fn}: accumulate=True needs the dw and db arrays to add to")
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    inputs = (dy, x, w)
    dx = _check_out(fn, "dx", dx, (M, K), inputs)
    dw = _check_out(fn, "dw", dw, (N, K), inputs + (dx,))
    db = _check_out(fn, "db", db, (N,), inputs + (dx, dw))
    if M and N and K:
        _kernels.linear_backward(dy, x, w, dx, dw, db, bool(accumulate), nt)
    else:  # an empty dimension: dx and dw are empty sums, db still sums dy's rows
        dx[...] = 0.0
        if not accumulate:
            dw[...] = 0.0
            db[...] = 0.0
        db += dy.sum(axis=0, dtype=np.float32)
    return dx, dw, db


def tree_reduce(partials, *, num_threads=None) -> np.ndarray:
    """Sum partials [n, L] over n up the sphere tree (fan-out 12) in its fixed order -> [L].

    The order of additions is that of ``cllm.threads.tree_sum``; it depends on n only, never on num_threads.
    """
    fn = "tree_reduce"
    _check(fn, "partials", partials, (None, None))
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    n, length = partials.shape
    out = np.zeros(length, dtype=np.float32)
    if n and length:
        _kernels.tree_reduce(partials.copy(), out, False, nt)
    return out
