"""Rotary position embeddings (RoPE), in HF Llama's half-split form (``rotate_half``): each head of q or k is
rotated pair by pair, (x[i], x[i + hs/2]) by the angle pos · theta^(-2i/hs). The angles' cosines and sines come
from a table made once per model (``rope_table``, computed in float64); the kernel applies it to rows given their
positions, so training (positions 0..T-1 in every sequence) and decoding (each row its own position) share it.

``qk_rotary_forward`` prepares an attention's input from its q/k/v projection in one pass: QK-norm (Qwen3's RMSNorm
over each head of q and k, optional), then the rotation of q and k; ``qk_rotary_backward`` undoes both in place."""

from __future__ import annotations

import numpy as np

from .._core import _kernels
from ..runtime.checks import integer, number
from ..runtime.threads import resolve_num_threads
from .arrays import check, check_ids, check_out, no_overlap

__all__ = ["qk_rotary_backward", "qk_rotary_forward", "rope_backward", "rope_forward", "rope_table"]


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


def _qk_args(fn, qkv, n_heads, pos, cos, sin, q_norm, k_norm):
    """(M, head size) after checking the shared arguments of qk_rotary_forward/backward."""
    check(fn, "cos", cos, (None, None))
    hs = 2 * cos.shape[1]
    n_heads = integer(n_heads, f"{fn}: n_heads", 1)
    check(fn, "qkv", qkv, (None, 3 * n_heads * hs))
    check(fn, "sin", sin, cos.shape)
    M = qkv.shape[0]
    check_ids(fn, "pos", pos, (M,), cos.shape[0])
    if (q_norm is None) != (k_norm is None):
        raise ValueError(f"{fn}: give both q_norm and k_norm (QK-norm) or neither")
    if q_norm is not None:
        check(fn, "q_norm", q_norm, (hs,))
        check(fn, "k_norm", k_norm, (hs,))
    return M, hs, n_heads


def qk_rotary_forward(qkv, n_heads, pos, cos, sin, *, q_norm=None, k_norm=None, eps=1e-6, out=None, rstd=None,
                      num_threads=None):
    """The attention's input from its projection: qkv [M, 3·NH·hs] (rows of q, k, v; heads contiguous), each q and
    k head RMS-normalised with q_norm / k_norm [hs] (QK-norm; both None: none) then rotated at pos [M] with the
    ``rope_table`` cos, sin [P, hs/2]; v copied. -> (out [M, 3·NH·hs], rstd [M, 2·NH] or None without QK-norm).
    Each head gets the bits of ``rmsnorm_forward`` then ``rope_forward``."""
    fn = "qk_rotary_forward"
    M, hs, n_heads = _qk_args(fn, qkv, n_heads, pos, cos, sin, q_norm, k_norm)
    eps = number(eps, f"{fn}: eps", 0.0, low_open=True)
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    out = check_out(fn, "out", out, qkv.shape, (qkv, pos, cos, sin, q_norm, k_norm))
    if q_norm is not None:
        rstd = check_out(fn, "rstd", rstd, (M, 2 * n_heads), (qkv, out))
    else:
        rstd = None
    if M:
        _kernels.qk_rotary_forward(qkv, out, q_norm, k_norm, rstd, pos, cos, sin, n_heads, eps, nt)
    return out, rstd


def qk_rotary_backward(dqkv, qkv, n_heads, pos, cos, sin, *, q_norm=None, k_norm=None, rstd=None, dq_norm=None,
                       dk_norm=None, num_threads=None) -> None:
    """In place, dqkv [M, 3·NH·hs] goes from the gradient of qk_rotary_forward's out to that of its input qkv (the
    same arguments, and its rstd with QK-norm); dq_norm, dk_norm [hs] += the norm weights' gradients."""
    fn = "qk_rotary_backward"
    M, hs, n_heads = _qk_args(fn, qkv, n_heads, pos, cos, sin, q_norm, k_norm)
    check(fn, "dqkv", dqkv, qkv.shape, writeable=True)
    no_overlap(fn, "dqkv", dqkv, (qkv, pos, cos, sin, q_norm, k_norm, rstd))
    if q_norm is not None:
        check(fn, "rstd", rstd, (M, 2 * n_heads))
        for name, a in (("dq_norm", dq_norm), ("dk_norm", dk_norm)):
            check(fn, name, a, (hs,), writeable=True)
            no_overlap(fn, name, a, (dqkv, qkv, q_norm, k_norm, rstd))
    else:
        rstd = dq_norm = dk_norm = None
    if M:
        _kernels.qk_rotary_backward(dqkv, qkv, q_norm, k_norm, rstd, pos, cos, sin, dq_norm, dk_norm, n_heads,
                                    resolve_num_threads(num_threads, f"{fn}: num_threads"))
