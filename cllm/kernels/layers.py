"""The row-wise layers: token + position embedding, LayerNorm (GPT-2), RMSNorm (Llama), and the fused softmax +
cross-entropy loss.
The backward functions add into the gradients they are given."""

from __future__ import annotations

import numpy as np

from .._core import _kernels
from ..runtime.checks import number
from ..runtime.threads import resolve_num_threads
from .arrays import check, check_ids, check_out, no_overlap

__all__ = ["crossentropy", "embedding_backward", "embedding_forward", "layernorm_backward", "layernorm_forward",
           "rmsnorm_backward", "rmsnorm_forward"]


def embedding_forward(idx, wte, wpe=None, *, out=None, num_threads=None) -> np.ndarray:
    """out[b,t] = wte[idx[b,t]] + wpe[t].   idx [B, T] int32 in [0, V), wte [V, C], wpe [>=T, C] or None (no
    position embedding: Llama's, whose positions are rotary) -> [B, T, C]."""
    fn = "embedding_forward"
    check(fn, "wte", wte, (None, None))
    V, C = wte.shape
    check(fn, "idx", idx, (None, None), dtype=np.int32)
    B, T = idx.shape
    if wpe is not None:
        check(fn, "wpe", wpe, (None, C))
        if wpe.shape[0] < T:
            raise ValueError(f"{fn}: idx has {T} positions but wpe only {wpe.shape[0]}")
    check_ids(fn, "idx", idx, (B, T), V)
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    out = check_out(fn, "out", out, (B, T, C), (wte, wpe))
    if out.size:
        _kernels.embedding_forward(idx, wte, wpe, out, nt)
    return out


def embedding_backward(dout, idx, dwte, dwpe=None, *, num_threads=None) -> None:
    """dwte[idx[b,t]] += dout[b,t];  dwpe[t] += Σ_b dout[b,t] (dwpe None: no position embedding).
    dout [B, T, C], idx [B, T], dwte [V, C], dwpe [>=T, C]."""
    fn = "embedding_backward"
    check(fn, "dwte", dwte, (None, None), writeable=True)
    V, C = dwte.shape
    check(fn, "idx", idx, (None, None), dtype=np.int32)
    B, T = idx.shape
    check(fn, "dout", dout, (B, T, C))
    if dwpe is not None:
        check(fn, "dwpe", dwpe, (None, C), writeable=True)
        if dwpe.shape[0] < T:
            raise ValueError(f"{fn}: idx has {T} positions but dwpe only {dwpe.shape[0]}")
    check_ids(fn, "idx", idx, (B, T), V)
    no_overlap(fn, "dwte", dwte, (dout, dwpe))
    if dout.size:
        _kernels.embedding_backward(dout, idx, dwte, dwpe, resolve_num_threads(num_threads, f"{fn}: num_threads"))


def layernorm_forward(x, w, b, *, out=None, mean=None, rstd=None, num_threads=None):
    """LayerNorm of each row (eps 1e-5).   x [N, C], w, b [C] -> (out [N, C], mean [N], rstd [N])."""
    fn = "layernorm_forward"
    check(fn, "x", x, (None, None))
    N, C = x.shape
    check(fn, "w", w, (C,))
    check(fn, "b", b, (C,))
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    out = check_out(fn, "out", out, (N, C), (x, w, b))
    mean = check_out(fn, "mean", mean, (N,), (x, w, b, out))
    rstd = check_out(fn, "rstd", rstd, (N,), (x, w, b, out, mean))
    if out.size:
        _kernels.layernorm_forward(x, w, b, out, mean, rstd, nt)
    return out, mean, rstd


def layernorm_backward(dout, x, w, mean, rstd, dx, dw, db, *, num_threads=None) -> None:
    """dx [N, C], dw [C], db [C] += the gradients of layernorm_forward given dout [N, C]."""
    fn = "layernorm_backward"
    check(fn, "x", x, (None, None))
    N, C = x.shape
    for name, a, shape in (("dout", dout, (N, C)), ("w", w, (C,)), ("mean", mean, (N,)), ("rstd", rstd, (N,))):
        check(fn, name, a, shape)
    for name, a, shape in (("dx", dx, (N, C)), ("dw", dw, (C,)), ("db", db, (C,))):
        check(fn, name, a, shape, writeable=True)
        no_overlap(fn, name, a, (x, w, mean, rstd))
    if x.size:
        _kernels.layernorm_backward(dout, x, w, mean, rstd, dx, dw, db,
                                    resolve_num_threads(num_threads, f"{fn}: num_threads"))


def rmsnorm_forward(x, w, *, eps=1e-6, out=None, rstd=None, num_threads=None):
    """RMSNorm of each row: x·rstd·w, rstd = 1/sqrt(mean(x²) + eps).   x [N, C], w [C] -> (out [N, C], rstd [N])."""
    fn = "rmsnorm_forward"
    check(fn, "x", x, (None, None))
    N, C = x.shape
    check(fn, "w", w, (C,))
    eps = number(eps, f"{fn}: eps", 0.0, low_open=True)
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    out = check_out(fn, "out", out, (N, C), (x, w))
    rstd = check_out(fn, "rstd", rstd, (N,), (x, w, out))
    if out.size:
        _kernels.rmsnorm_forward(x, w, out, rstd, eps, nt)
    return out, rstd


def rmsnorm_backward(dout, x, w, rstd, dx, dw, *, num_threads=None) -> None:
    """dx [N, C], dw [C] += the gradients of rmsnorm_forward given dout [N, C] (and its rstd [N])."""
    fn = "rmsnorm_backward"
    check(fn, "x", x, (None, None))
    N, C = x.shape
    for name, a, shape in (("dout", dout, (N, C)), ("w", w, (C,)), ("rstd", rstd, (N,))):
        check(fn, name, a, shape)
    for name, a, shape in (("dx", dx, (N, C)), ("dw", dw, (C,))):
        check(fn, name, a, shape, writeable=True)
        no_overlap(fn, name, a, (dout, x, w, rstd))
    no_overlap(fn, "dx", dx, (dw,))
    if x.size:
        _kernels.rmsnorm_backward(dout, x, w, rstd, dx, dw, resolve_num_threads(num_threads, f"{fn}: num_threads"))


def crossentropy(logits, targets, *, scale=1.0, write_grad=True, losses=None, num_threads=None) -> np.ndarray:
    """Fused softmax + cross-entropy.   logits [N, V], targets [N] int32 in [0, V) or -1 (ignored) ->
    losses [N] (0 where ignored). With write_grad, logits is overwritten by (softmax - onehot)·scale."""
    fn = "crossentropy"
    check(fn, "logits", logits, (None, None), writeable=write_grad)
    N, V = logits.shape
    check_ids(fn, "targets", targets, (N,), V, allow_ignore=True)
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    losses = check_out(fn, "losses", losses, (N,), (logits, targets))
    if N and V:
        _kernels.crossentropy_forward_backward(logits, targets, losses, float(scale), bool(write_grad), nt)
    else:
        losses[...] = 0.0
    return losses
