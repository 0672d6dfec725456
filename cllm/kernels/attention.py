"""Causal multi-head attention: training forward/backward (blocked, online softmax, no T×T matrix) and the decode
step over a KV cache. qkv holds q, k, v in that order, heads contiguous."""

from __future__ import annotations

import numpy as np

from .._core import _kernels
from ..runtime.checks import is_integer
from ..runtime.threads import resolve_num_threads
from .arrays import check, check_out, no_overlap

__all__ = ["KV_ALIGN", "attention_backward", "attention_cache_store", "attention_decode", "attention_forward",
           "kv_cache"]

KV_ALIGN = 16  # a KV cache's capacity Tk must be a multiple of this



def check_heads(fn: str, C: int, n_heads) -> int:
    if not is_integer(n_heads) or n_heads < 1 or C % n_heads:
        raise ValueError(f"{fn}: n_heads must be a positive divisor of C = {C} (got {n_heads!r})")
    return int(n_heads)


def attention_forward(qkv, n_heads, *, out=None, lse=None, num_threads=None):
    """Causal multi-head attention.   qkv [B, T, 3C] (q, k, v; heads contiguous) -> (out [B, T, C],
    lse [B, NH, T]: each softmax row's log-sum-exp, which attention_backward needs)."""
    fn = "attention_forward"
    check(fn, "qkv", qkv, (None, None, None))
    B, T, C3 = qkv.shape
    if C3 % 3:
        raise ValueError(f"{fn}: qkv's last dimension must be 3·C (got {C3})")
    C = C3 // 3
    NH = check_heads(fn, C, n_heads)
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    out = check_out(fn, "out", out, (B, T, C), (qkv,))
    lse = check_out(fn, "lse", lse, (B, NH, T), (qkv, out))
    if out.size:
        _kernels.attention_forward(qkv, out, lse, nt)
    return out, lse


def attention_backward(dout, qkv, out, lse, *, dqkv=None, num_threads=None) -> np.ndarray:
    """The gradient wrt qkv [B, T, 3C] (overwritten) of attention_forward, given dout [B, T, C]."""
    fn = "attention_backward"
    check(fn, "qkv", qkv, (None, None, None))
    B, T, C3 = qkv.shape
    C = C3 // 3
    check(fn, "lse", lse, (B, None, T))
    check_heads(fn, C, lse.shape[1])
    check(fn, "dout", dout, (B, T, C))
    check(fn, "out", out, (B, T, C))
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    dqkv = check_out(fn, "dqkv", dqkv, (B, T, C3), (dout, qkv, out, lse))
    if dqkv.size:
        _kernels.attention_backward(dout, qkv, out, lse, dqkv, nt)
    return dqkv


def check_cache(fn: str, kcache, vcache) -> tuple[int, int, int, int]:
    """(S, NH, hs, Tk) of a KV cache: kcache [S, NH, hs, Tk] (keys transposed), vcache [S, NH, Tk, hs]."""
    check(fn, "kcache", kcache, (None, None, None, None), writeable=True)
    S, NH, hs, Tk = kcache.shape
    if Tk % KV_ALIGN or not (S and NH and hs and Tk):
        raise ValueError(f"{fn}: kcache must be [S, NH, hs, Tk] with every size >= 1 and Tk a multiple of "
                         f"{KV_ALIGN} (got {list(kcache.shape)})")
    check(fn, "vcache", vcache, (S, NH, Tk, hs), writeable=True)
    no_overlap(fn, "vcache", vcache, (kcache,))
    return S, NH, hs, Tk


def kv_cache(slots: int, n_heads: int, head_size: int, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """A zeroed key and value cache for ``slots`` sequences of up to ``positions`` tokens: (kcache [S, NH, hs, Tk],
    vcache [S, NH, Tk, hs]), keys transposed, the capacity Tk = positions rounded up to a multiple of KV_ALIGN."""
    Tk = -(-positions // KV_ALIGN) * KV_ALIGN
    return (np.zeros((slots, n_heads, head_size, Tk), np.float32),
            np.zeros((slots, n_heads, Tk, head_size), np.float32))


def attention_decode(qkv, kcache, vcache, slot, pos, *, out=None, num_threads=None) -> np.ndarray:
    """One decode step of causal attention over a KV cache (S sequence slots of capacity Tk).

    qkv [M, 3C] holds one new token of each of M sequences; row m uses cache slot slot[m] (distinct, in [0, S)) at
    position pos[m] in [0, Tk) (the number of tokens cached before it). Stores the row's k and v there, then
    returns out [M, C] = its attention over positions 0 .. pos[m]: the bits ``attention_forward`` gives that row.
    Caches as ``_check_cache`` says; C = NH·hs."""
    fn = "attention_decode"
    S, NH, hs, Tk = check_cache(fn, kcache, vcache)
    C = NH * hs
    check(fn, "qkv", qkv, (None, 3 * C))
    M = qkv.shape[0]
    slots, positions = (check(fn, name, a, (M,), dtype=np.int32).tolist() for name, a in (("slot", slot),
                                                                                          ("pos", pos)))
    if M and (min(slots) < 0 or max(slots) >= S or len(set(slots)) != M):
        raise ValueError(f"{fn}: slot must hold distinct cache slots in [0, {S}) (got {slots})")
    if M and (min(positions) < 0 or max(positions) >= Tk):
        raise ValueError(f"{fn}: pos must be in [0, {Tk}), the cache's capacity (got {positions})")
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    out = check_out(fn, "out", out, (M, C), (qkv, kcache, vcache))
    no_overlap(fn, "qkv", qkv, (kcache, vcache))
    if M:
        _kernels.attention_decode(qkv, kcache, vcache, out, slot, pos, nt)
    return out


def attention_cache_store(qkv, kcache, vcache, slot: int, *, num_threads=None) -> None:
    """Prefill: store the k and v of one sequence's qkv [T, 3C] (T <= Tk) in cache slot ``slot`` at positions
    0 .. T-1; the slot's keys after T become 0."""
    fn = "attention_cache_store"
    S, NH, hs, Tk = check_cache(fn, kcache, vcache)
    check(fn, "qkv", qkv, (None, 3 * NH * hs))
    T = qkv.shape[0]
    if not 1 <= T <= Tk:
        raise ValueError(f"{fn}: qkv must have 1 to {Tk} rows, the cache's capacity (got {T})")
    if not is_integer(slot) or not 0 <= slot < S:
        raise ValueError(f"{fn}: slot must be an integer in [0, {S}) (got {slot!r})")
    no_overlap(fn, "qkv", qkv, (kcache, vcache))
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    _kernels.attention_cache_store(qkv, kcache, vcache, int(slot), nt)
