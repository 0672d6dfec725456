"""Elementwise kernels: GELU (tanh approximation) and its derivative, the residual add (any shape); SwiGLU, the
Llama MLP's gate, over rows of [gate | up]."""

from __future__ import annotations

import numpy as np

from .._core import _kernels
from ..runtime.threads import resolve_num_threads
from .arrays import check, check_out, flat

__all__ = ["gelu_backward", "gelu_forward", "residual_forward", "swiglu_backward", "swiglu_forward"]


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


def swiglu_forward(gu, *, out=None, num_threads=None) -> np.ndarray:
    """silu(gate)·up, silu(g) = g·σ(g).   gu [M, 2H]: each row the gate projection's H values, then the up
    projection's (one GEMM with gate_proj and up_proj stacked makes it) -> out [M, H]."""
    fn = "swiglu_forward"
    check(fn, "gu", gu, (None, None))
    M, H2 = gu.shape
    if H2 % 2:
        raise ValueError(f"{fn}: gu must have an even number of columns, [gate | up] (got {H2})")
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    out = check_out(fn, "out", out, (M, H2 // 2), (gu,))
    if out.size:
        _kernels.swiglu_forward(gu, out, nt)
    return out


def swiglu_backward(gu, dout, *, dgu=None, num_threads=None) -> np.ndarray:
    """The gradient through swiglu_forward: dgu [M, 2H] = (dout·up·silu'(gate), dout·silu(gate)), overwritten,
    from gu [M, 2H] and dout [M, H]."""
    fn = "swiglu_backward"
    check(fn, "gu", gu, (None, None))
    M, H2 = gu.shape
    if H2 % 2:
        raise ValueError(f"{fn}: gu must have an even number of columns, [gate | up] (got {H2})")
    check(fn, "dout", dout, (M, H2 // 2))
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    dgu = check_out(fn, "dgu", dgu, (M, H2), (gu, dout))
    if dout.size:
        _kernels.swiglu_backward(gu, dout, dgu, nt)
    return dgu
