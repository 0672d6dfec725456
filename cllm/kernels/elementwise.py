"""Elementwise kernels: GELU (tanh approximation) and its derivative, the residual add. Any shape."""

from __future__ import annotations

import numpy as np

from .._core import _kernels
from ..runtime.threads import resolve_num_threads
from .arrays import check, check_out, flat

__all__ = ["gelu_backward", "gelu_forward", "residual_forward"]


def gelu_forward(x, *, out=None, num_threads=None) -> np.ndarray:
    """GELU, tanh approximation, elementwise (any shape)."""
    fn = "gelu_forward"
    xf = flat(fn, "x", x)
    out = check_out(fn, "out", out, x.shape, () if out is x else (x,))
    if xf.size:
        _kernels.gelu_forward(xf, out.reshape(-1), resolve_num_threads(num_threads, f"{fn}: num_threads"))
    return out


def gelu_backward(x, dout, *, dx=None, num_threads=None) -> np.ndarray:
    """dx = dout · gelu'(x) (dx may be dout)."""
    fn = "gelu_backward"
    xf = flat(fn, "x", x)
    check(fn, "dout", dout, x.shape)
    dx = check_out(fn, "dx", dx, x.shape, (x,))
    if xf.size:
        _kernels.gelu_backward(xf, dout.reshape(-1), dx.reshape(-1),
                               resolve_num_threads(num_threads, f"{fn}: num_threads"))
    return dx


def residual_forward(a, b, *, out=None, num_threads=None) -> np.ndarray:
    """out = a + b (same shape; out may be a or b)."""
    fn = "residual_forward"
    af = flat(fn, "a", a)
    check(fn, "b", b, a.shape)
    if out is None:
        out = np.empty_like(a)
    check(fn, "out", out, a.shape, writeable=True)
    if af.size:
        _kernels.residual_forward(af, b.reshape(-1), out.reshape(-1),
                                  resolve_num_threads(num_threads, f"{fn}: num_threads"))
    return out
