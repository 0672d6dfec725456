"""Rotary position embeddings (RoPE), in HF Llama's half-split form (``rotate_half``): each head of q or k is
rotated pair by pair, (x[i], x[i + hs/2]) by the angle pos · theta^(-2i/hs). The angles' cosines and sines come
from a table made once per model (``rope_table``, computed in float64); the kernel applies it to rows given their
positions, so training (positions 0..T-1 in every sequence) and decoding (each row its own position) share it."""

from __future__ import annotations

import numpy as np

from .._core import _kernels
from ..runtime.checks import integer, number
from ..runtime.threads import resolve_num_threads
from .arrays import check, check_ids, no_overlap

__all__ = ["rope_backward", "rope_forward", "rope_table"]


def rope_table(positions: int, head_size: int, theta: float = 10_000.0) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin), float32 [positions, head_size / 2]: the rotation of pair i at position p is p · theta^(-2i/hs)."""
    positions = integer(positions, "rope_table: positions", 1)
    head_size = integer(head_size, "rope_table: head_size", 2)
    if head_size % 2:
        raise ValueError(f"rope_table: head_size must be even (got {head_size})")
    theta = number(theta, "rope_table: theta", 1.0, low_open=True)
    inv_freq = theta ** (-np.arange(0, head_size, 2, dtype=np.float64) / head_size)
    angles = np.arange(positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def _rope(fn, x, pos, cos, sin, out, inverse, num_threads) -> np.ndarray:
    check(fn, "x", x, (None, None, None))
    M, H, hs = x.shape
    if hs % 2:
        raise ValueError(f"{fn}: the head size (x's last dimension) must be even (got {hs})")
    check(fn, "cos", cos, (None, hs // 2))
    check(fn, "sin", sin, cos.shape)
    check_ids(fn, "pos", pos, (M,), cos.shape[0])
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    if out is None:
        out = np.empty_like(x)
    else:  # x itself is allowed: each pair is read before it is written
        check(fn, "out", out, (M, H, hs), writeable=True)
        no_overlap(fn, "out", out, (pos, cos, sin) if out is x else (x, pos, cos, sin))
    if x.size:
        _kernels.rope(x, out, pos, cos, sin, inverse, nt)
    return out


def rope_forward(x, pos, cos, sin, *, out=None, num_threads=None) -> np.ndarray:
    """Rotate x [M, H, hs] (M rows of H heads) at row positions pos [M] int32, with the tables cos, sin
    [P, hs/2] of ``rope_table``; out [M, H, hs] may be x itself."""
    return _rope("rope_forward", x, pos, cos, sin, out, False, num_threads)


def rope_backward(dout, pos, cos, sin, *, dx=None, num_threads=None) -> np.ndarray:
    """The gradient through rope_forward: dout [M, H, hs] rotated back (the rotation's transpose) into dx, which
    may be dout itself."""
    return _rope("rope_backward", dout, pos, cos, sin, dx, True, num_threads)
