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

__all__ = ["GptDecodeStep", "PANEL", "adamw_step", "attention_backward", "attention_cache_store", "attention_decode",
           "attention_forward", "crossentropy", "embedding_backward", "embedding_forward", "gelu_backward",
           "gelu_forward", "get_isa", "layernorm_backward", "layernorm_forward", "linear_backward", "linear_forward",
           "linear_forward_packed", "pack_linear_weights", "residual_forward", "set_isa", "sum_squares",
           "tree_reduce"]

PANEL = _kernels.PANEL  # output columns per panel of packed linear weights (csrc/cllm.h CLLM_PANEL)
KV_ALIGN = 16  # a KV cache's capacity Tk must be a multiple of this


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


def _check(fn: str, name: str, a, expected: tuple, *, writeable: bool = False, dtype=np.float32) -> np.ndarray:
    """a must be a C-contiguous ndarray of dtype whose shape matches expected (ints, or None for 'any')."""
    def want():  # the message, built only on failure (this check runs on every kernel call)
        dims = ", ".join("?" if d is None else str(d) for d in expected)
        return f"{fn}: {name} must be {np.dtype(dtype).name} C-contiguous [{dims}] (got {_describe(a)})"

    if not isinstance(a, np.ndarray) or a.dtype != dtype:
        raise TypeError(want())
    shape_ok = a.ndim == len(expected) and all(d is None or d == s for d, s in zip(expected, a.shape))
    if not shape_ok or not a.flags.c_contiguous:
        raise ValueError(want())
    if writeable and not a.flags.writeable:
        raise ValueError(f"{fn}: {name} must be writeable")
    return a


def _check_out(fn: str, name: str, out, shape: tuple, inputs: tuple) -> np.ndarray:
    """A caller-given output buffer, or a new one; never one that overlaps an input."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    _check(fn, name, out, shape, writeable=True)
    return _no_overlap(fn, name, out, inputs)


def _no_overlap(fn: str, name: str, out, inputs: tuple) -> np.ndarray:
    if any(a is not None and np.may_share_memory(out, a) for a in inputs):
        raise ValueError(f"{fn}: {name} must not overlap an input array")
    return out


def linear_forward(x, w, b=None, *, out=None, residual=None, gelu_out=None, num_threads=None) -> np.ndarray:
    """y = x · wᵀ + b.   x [M, K], w [N, K] (nn.Linear layout), b [N] or None -> y [M, N], float32.

    Fused into the same pass, at most one of: ``residual`` [M, N]: y = residual + (x · wᵀ + b), a block's
    projection added to its input; ``gelu_out`` [M, N]: also gelu_out = gelu(y), the MLP's activation. Each gives
    the bits of the separate ``residual_forward`` / ``gelu_forward``."""
    fn = "linear_forward"
    _check(fn, "w", w, (None, None))
    N, K = w.shape
    _check(fn, "x", x, (None, K))
    if b is not None:
        _check(fn, "b", b, (N,))
    if residual is not None and gelu_out is not None:
        raise ValueError(f"{fn}: give residual or gelu_out, not both")
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    M = x.shape[0]
    if residual is not None:
        _check(fn, "residual", residual, (M, N))
    y = _check_out(fn, "out", out, (M, N), (x, w, b, residual))
    if gelu_out is not None:
        _check_out(fn, "gelu_out", gelu_out, (M, N), (x, w, b, y))
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
    _check(fn, "w", w, (None, None))
    N, K = w.shape
    _check(fn, "x", x, (None, K))
    M = x.shape[0]
    _check(fn, "dy", dy, (M, N))
    if accumulate and (dw is None or (bias and db is None)):
        raise ValueError(f"{fn}: accumulate=True needs the dw and db arrays to add to")
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    if gelu_x is not None:
        _check(fn, "gelu_x", gelu_x, (M, K))
    inputs = (dy, x, w, gelu_x)
    dx = _check_out(fn, "dx", dx, (M, K), inputs)
    dw = _check_out(fn, "dw", dw, (N, K), inputs + (dx,))
    db = _check_out(fn, "db", db, (N,), inputs + (dx, dw)) if bias else None
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
    _check("pack_linear_weights", "w", w, (None, None))
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
    _check(fn, "wp", wp, (None, None, PANEL))
    P, K, _ = wp.shape
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not (P - 1) * PANEL < n <= P * PANEL \
            and not (P == 0 and n == 0):
        raise ValueError(f"{fn}: n must be the packed weight's output count, in ({(P - 1) * PANEL}, {P * PANEL}] "
                         f"(got {n!r})")
    _check(fn, "x", x, (None, K))
    if b is not None:
        _check(fn, "b", b, (n,))
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    y = _check_out(fn, "out", out, (x.shape[0], n), (x, wp, b))
    if y.size:
        if K:
            _kernels.linear_forward_packed(x, wp, b, y, nt)
        else:
            y[...] = 0.0 if b is None else b
    return y


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


# --- the model's layers (csrc/cllm.h): the backward functions add into the gradients they are given ---------

def _check_ids(fn: str, name: str, ids, shape: tuple, vocab_size: int, allow_ignore: bool = False) -> np.ndarray:
    """int32 C-contiguous ids in [0, vocab_size) (or -1 where allow_ignore), else ValueError naming a position."""
    _check(fn, name, ids, shape, dtype=np.int32)
    low = -1 if allow_ignore else 0
    bad = (ids < low) | (ids >= vocab_size)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        allowed = f"-1 or [0, {vocab_size})" if allow_ignore else f"[0, {vocab_size})"
        raise ValueError(f"{fn}: {name}{list(pos)} = {int(ids[pos])} is outside {allowed}")
    return ids


def embedding_forward(idx, wte, wpe, *, out=None, num_threads=None) -> np.ndarray:
    """out[b,t] = wte[idx[b,t]] + wpe[t].   idx [B, T] int32 in [0, V), wte [V, C], wpe [>=T, C] -> [B, T, C]."""
    fn = "embedding_forward"
    _check(fn, "wte", wte, (None, None))
    V, C = wte.shape
    _check(fn, "idx", idx, (None, None), dtype=np.int32)
    B, T = idx.shape
    _check(fn, "wpe", wpe, (None, C))
    if wpe.shape[0] < T:
        raise ValueError(f"{fn}: idx has {T} positions but wpe only {wpe.shape[0]}")
    _check_ids(fn, "idx", idx, (B, T), V)
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    out = _check_out(fn, "out", out, (B, T, C), (wte, wpe))
    if out.size:
        _kernels.embedding_forward(idx, wte, wpe, out, nt)
    return out


def embedding_backward(dout, idx, dwte, dwpe, *, num_threads=None) -> None:
    """dwte[idx[b,t]] += dout[b,t];  dwpe[t] += Σ_b dout[b,t].   dout [B, T, C], idx [B, T], dwte [V, C]."""
    fn = "embedding_backward"
    _check(fn, "dwte", dwte, (None, None), writeable=True)
    V, C = dwte.shape
    _check(fn, "idx", idx, (None, None), dtype=np.int32)
    B, T = idx.shape
    _check(fn, "dout", dout, (B, T, C))
    _check(fn, "dwpe", dwpe, (None, C), writeable=True)
    if dwpe.shape[0] < T:
        raise ValueError(f"{fn}: idx has {T} positions but dwpe only {dwpe.shape[0]}")
    _check_ids(fn, "idx", idx, (B, T), V)
    _no_overlap(fn, "dwte", dwte, (dout, dwpe))
    if dout.size:
        _kernels.embedding_backward(dout, idx, dwte, dwpe, resolve_num_threads(num_threads, f"{fn}: num_threads"))


def layernorm_forward(x, w, b, *, out=None, mean=None, rstd=None, num_threads=None):
    """LayerNorm of each row (eps 1e-5).   x [N, C], w, b [C] -> (out [N, C], mean [N], rstd [N])."""
    fn = "layernorm_forward"
    _check(fn, "x", x, (None, None))
    N, C = x.shape
    _check(fn, "w", w, (C,))
    _check(fn, "b", b, (C,))
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    out = _check_out(fn, "out", out, (N, C), (x, w, b))
    mean = _check_out(fn, "mean", mean, (N,), (x, w, b, out))
    rstd = _check_out(fn, "rstd", rstd, (N,), (x, w, b, out, mean))
    if out.size:
        _kernels.layernorm_forward(x, w, b, out, mean, rstd, nt)
    return out, mean, rstd


def layernorm_backward(dout, x, w, mean, rstd, dx, dw, db, *, num_threads=None) -> None:
    """dx [N, C], dw [C], db [C] += the gradients of layernorm_forward given dout [N, C]."""
    fn = "layernorm_backward"
    _check(fn, "x", x, (None, None))
    N, C = x.shape
    for name, a, shape in (("dout", dout, (N, C)), ("w", w, (C,)), ("mean", mean, (N,)), ("rstd", rstd, (N,))):
        _check(fn, name, a, shape)
    for name, a, shape in (("dx", dx, (N, C)), ("dw", dw, (C,)), ("db", db, (C,))):
        _check(fn, name, a, shape, writeable=True)
        _no_overlap(fn, name, a, (x, w, mean, rstd))
    if x.size:
        _kernels.layernorm_backward(dout, x, w, mean, rstd, dx, dw, db,
                                    resolve_num_threads(num_threads, f"{fn}: num_threads"))


def _check_heads(fn: str, C: int, n_heads) -> int:
    if isinstance(n_heads, bool) or not isinstance(n_heads, (int, np.integer)) or n_heads < 1 or C % n_heads:
        raise ValueError(f"{fn}: n_heads must be a positive divisor of C = {C} (got {n_heads!r})")
    return int(n_heads)


def attention_forward(qkv, n_heads, *, out=None, lse=None, num_threads=None):
    """Causal multi-head attention.   qkv [B, T, 3C] (q, k, v; heads contiguous) -> (out [B, T, C],
    lse [B, NH, T]: each softmax row's log-sum-exp, which attention_backward needs)."""
    fn = "attention_forward"
    _check(fn, "qkv", qkv, (None, None, None))
    B, T, C3 = qkv.shape
    if C3 % 3:
        raise ValueError(f"{fn}: qkv's last dimension must be 3·C (got {C3})")
    C = C3 // 3
    NH = _check_heads(fn, C, n_heads)
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    out = _check_out(fn, "out", out, (B, T, C), (qkv,))
    lse = _check_out(fn, "lse", lse, (B, NH, T), (qkv, out))
    if out.size:
        _kernels.attention_forward(qkv, out, lse, nt)
    return out, lse


def attention_backward(dout, qkv, out, lse, *, dqkv=None, num_threads=None) -> np.ndarray:
    """The gradient wrt qkv [B, T, 3C] (overwritten) of attention_forward, given dout [B, T, C]."""
    fn = "attention_backward"
    _check(fn, "qkv", qkv, (None, None, None))
    B, T, C3 = qkv.shape
    C = C3 // 3
    _check(fn, "lse", lse, (B, None, T))
    _check_heads(fn, C, lse.shape[1])
    _check(fn, "dout", dout, (B, T, C))
    _check(fn, "out", out, (B, T, C))
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    dqkv = _check_out(fn, "dqkv", dqkv, (B, T, C3), (dout, qkv, out, lse))
    if dqkv.size:
        _kernels.attention_backward(dout, qkv, out, lse, dqkv, nt)
    return dqkv


def _check_cache(fn: str, kcache, vcache) -> tuple[int, int, int, int]:
    """(S, NH, hs, Tk) of a KV cache: kcache [S, NH, hs, Tk] (keys transposed), vcache [S, NH, Tk, hs]."""
    _check(fn, "kcache", kcache, (None, None, None, None), writeable=True)
    S, NH, hs, Tk = kcache.shape
    if Tk % KV_ALIGN or not (S and NH and hs and Tk):
        raise ValueError(f"{fn}: kcache must be [S, NH, hs, Tk] with every size >= 1 and Tk a multiple of "
                         f"{KV_ALIGN} (got {list(kcache.shape)})")
    _check(fn, "vcache", vcache, (S, NH, Tk, hs), writeable=True)
    _no_overlap(fn, "vcache", vcache, (kcache,))
    return S, NH, hs, Tk


def attention_decode(qkv, kcache, vcache, slot, pos, *, out=None, num_threads=None) -> np.ndarray:
    """One decode step of causal attention over a KV cache (S sequence slots of capacity Tk).

    qkv [M, 3C] holds one new token of each of M sequences; row m uses cache slot slot[m] (distinct, in [0, S)) at
    position pos[m] in [0, Tk) (the number of tokens cached before it). Stores the row's k and v there, then
    returns out [M, C] = its attention over positions 0 .. pos[m]: the bits ``attention_forward`` gives that row.
    Caches as ``_check_cache`` says; C = NH·hs."""
    fn = "attention_decode"
    S, NH, hs, Tk = _check_cache(fn, kcache, vcache)
    C = NH * hs
    _check(fn, "qkv", qkv, (None, 3 * C))
    M = qkv.shape[0]
    slots, positions = (_check(fn, name, a, (M,), dtype=np.int32).tolist() for name, a in (("slot", slot),
                                                                                          ("pos", pos)))
    if M and (min(slots) < 0 or max(slots) >= S or len(set(slots)) != M):
        raise ValueError(f"{fn}: slot must hold distinct cache slots in [0, {S}) (got {slots})")
    if M and (min(positions) < 0 or max(positions) >= Tk):
        raise ValueError(f"{fn}: pos must be in [0, {Tk}), the cache's capacity (got {positions})")
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    out = _check_out(fn, "out", out, (M, C), (qkv, kcache, vcache))
    _no_overlap(fn, "qkv", qkv, (kcache, vcache))
    if M:
        _kernels.attention_decode(qkv, kcache, vcache, out, slot, pos, nt)
    return out


def attention_cache_store(qkv, kcache, vcache, slot: int, *, num_threads=None) -> None:
    """Prefill: store the k and v of one sequence's qkv [T, 3C] (T <= Tk) in cache slot ``slot`` at positions
    0 .. T-1; the slot's keys after T become 0."""
    fn = "attention_cache_store"
    S, NH, hs, Tk = _check_cache(fn, kcache, vcache)
    _check(fn, "qkv", qkv, (None, 3 * NH * hs))
    T = qkv.shape[0]
    if not 1 <= T <= Tk:
        raise ValueError(f"{fn}: qkv must have 1 to {Tk} rows, the cache's capacity (got {T})")
    if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)) or not 0 <= slot < S:
        raise ValueError(f"{fn}: slot must be an integer in [0, {S}) (got {slot!r})")
    _no_overlap(fn, "qkv", qkv, (kcache, vcache))
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    _kernels.attention_cache_store(qkv, kcache, vcache, int(slot), nt)


class GptDecodeStep:
    """One decode step of a whole GPT as one kernel call (csrc/decode.c): per row, the next token of a sequence
    whose keys and values are cached, through every layer to the logits, with the bits ``Model.forward`` gives that
    position. Everything but the step's tokens is checked once, here; the arrays are used in place (not copied).

    wte [V, C], wpe [Tctx, C], ln_f: (weight, bias) [C], head: wte packed by ``pack_linear_weights``; layers: per
    layer a dict with "ln_1", "ln_2": (weight, bias) [C]; "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj":
    (packed weight, bias) of [3C, C], [C, C], [H, C], [C, H]; "kcache" [S, NH, hs, Tk], "vcache" [S, NH, Tk, hs]
    (see ``attention_decode``). max_rows: the most rows a step takes. Not for concurrent use (one scratch).
    """

    def __init__(self, *, wte, wpe, ln_f, head, layers, max_rows: int):
        fn = "GptDecodeStep"
        _check(fn, "wte", wte, (None, None))
        V, C = wte.shape
        _check(fn, "wpe", wpe, (None, C))
        _check(fn, "head", head, (-(-V // PANEL), C, PANEL))
        if not layers:
            raise ValueError(f"{fn}: layers must hold at least one layer")
        S, NH, hs, Tk = _check_cache(fn, layers[0]["kcache"], layers[0]["vcache"])
        H = _check(fn, "layers[0] mlp.c_fc bias", layers[0]["mlp.c_fc"][1], (None,)).shape[0]
        if NH * hs != C:
            raise ValueError(f"{fn}: the caches' NH·hs must be C = {C} (got {NH}·{hs})")
        for name, a in (("ln_f weight", ln_f[0]), ("ln_f bias", ln_f[1])):
            _check(fn, name, a, (C,))
        shapes = {"attn.c_attn": (3 * C, C), "attn.c_proj": (C, C), "mlp.c_fc": (H, C), "mlp.c_proj": (C, H)}
        for i, layer in enumerate(layers):
            for ln in ("ln_1", "ln_2"):
                for part, a in zip(("weight", "bias"), layer[ln]):
                    _check(fn, f"layers[{i}] {ln} {part}", a, (C,))
            for name, (n, k) in shapes.items():
                packed, bias = layer[name]
                _check(fn, f"layers[{i}] {name} packed weight", packed, (-(-n // PANEL), k, PANEL))
                _check(fn, f"layers[{i}] {name} bias", bias, (n,))
            if _check_cache(fn, layer["kcache"], layer["vcache"]) != (S, NH, hs, Tk):
                raise ValueError(f"{fn}: layers[{i}]'s cache must have layer 0's shape {[S, NH, hs, Tk]}")
        if isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer)) or max_rows < 1:
            raise ValueError(f"{fn}: max_rows must be an integer >= 1 (got {max_rows!r})")
        self.vocab_size, self.slots, self.positions, self.max_rows = V, S, min(Tk, wpe.shape[0]), int(max_rows)
        self._arrays = (wte, wpe, ln_f, head, layers)  # kept alive: the core holds their addresses
        # scratch floats for M rows on nt threads: csrc/cllm.h CLLM_GPT_DECODE_SCRATCH
        self._scratch_floats = lambda M, nt: M * (5 * C + H) + nt * (M * (2 * C + 2) + 64 + hs)
        self._scratch_threads = 0
        self._logits = np.empty((self.max_rows, V), np.float32)
        sizes = {"V": V, "C": C, "H": H, "NH": NH, "S": S, "Tk": Tk, "Tctx": wpe.shape[0]}
        weights = {"wte": wte, "wpe": wpe, "ln_f": ln_f, "head": head}
        self._core = _kernels.GptDecodeStep(sizes, weights, list(layers), self.max_rows, self._logits)

    def __call__(self, ids, slot, pos, *, num_threads=None) -> np.ndarray:
        """ids, slot, pos: M integers each (M <= max_rows): token ids in [0, V), distinct cache slots in [0, S),
        positions in [0, min(Tk, Tctx)). Returns the logits [M, V]: a view, overwritten by the next call.
        The checks are plain Python on the few integers: a decode step's overhead is what a waiting thread must
        spin across, and an array check per argument would take longer than the arithmetic of a small step."""
        fn = "GptDecodeStep"
        ids, slot, pos = list(ids), list(slot), list(pos)
        M = len(ids)
        if not 1 <= M <= self.max_rows or len(slot) != M or len(pos) != M:
            raise ValueError(f"{fn}: ids, slot and pos must hold the same number of rows, 1 to {self.max_rows} "
                             f"(got {M}, {len(slot)}, {len(pos)})")
        for name, values, high in (("ids", ids, self.vocab_size), ("slot", slot, self.slots),
                                   ("pos", pos, self.positions)):
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < high:
                    raise ValueError(f"{fn}: {name} must be integers in [0, {high}) (got {values})")
        if M > 1 and len(set(slot)) != M:
            raise ValueError(f"{fn}: slot must hold distinct cache slots (got {slot})")
        nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
        if nt > self._scratch_threads:
            self._core.set_scratch(np.empty(self._scratch_floats(self.max_rows, nt), np.float32))
            self._scratch_threads = nt
        self._core.step(ids, slot, pos, nt)
        return self._logits[:M]


def _flat(fn: str, name: str, a) -> np.ndarray:
    """A float32 C-contiguous array of any shape, seen as 1-D."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous:
        raise TypeError(f"{fn}: {name} must be float32 C-contiguous (got {_describe(a)})")
    return a.reshape(-1)


def gelu_forward(x, *, out=None, num_threads=None) -> np.ndarray:
    """GELU, tanh approximation, elementwise (any shape)."""
    fn = "gelu_forward"
    xf = _flat(fn, "x", x)
    out = _check_out(fn, "out", out, x.shape, () if out is x else (x,))
    if xf.size:
        _kernels.gelu_forward(xf, out.reshape(-1), resolve_num_threads(num_threads, f"{fn}: num_threads"))
    return out


def gelu_backward(x, dout, *, dx=None, num_threads=None) -> np.ndarray:
    """dx = dout · gelu'(x) (dx may be dout)."""
    fn = "gelu_backward"
    xf = _flat(fn, "x", x)
    _check(fn, "dout", dout, x.shape)
    dx = _check_out(fn, "dx", dx, x.shape, (x,))
    if xf.size:
        _kernels.gelu_backward(xf, dout.reshape(-1), dx.reshape(-1),
                               resolve_num_threads(num_threads, f"{fn}: num_threads"))
    return dx


def residual_forward(a, b, *, out=None, num_threads=None) -> np.ndarray:
    """out = a + b (same shape; out may be a or b)."""
    fn = "residual_forward"
    af = _flat(fn, "a", a)
    _check(fn, "b", b, a.shape)
    if out is None:
        out = np.empty_like(a)
    _check(fn, "out", out, a.shape, writeable=True)
    if af.size:
        _kernels.residual_forward(af, b.reshape(-1), out.reshape(-1),
                                  resolve_num_threads(num_threads, f"{fn}: num_threads"))
    return out


def crossentropy(logits, targets, *, scale=1.0, write_grad=True, losses=None, num_threads=None) -> np.ndarray:
    """Fused softmax + cross-entropy.   logits [N, V], targets [N] int32 in [0, V) or -1 (ignored) ->
    losses [N] (0 where ignored). With write_grad, logits is overwritten by (softmax - onehot)·scale."""
    fn = "crossentropy"
    _check(fn, "logits", logits, (None, None), writeable=write_grad)
    N, V = logits.shape
    _check_ids(fn, "targets", targets, (N,), V, allow_ignore=True)
    nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
    losses = _check_out(fn, "losses", losses, (N,), (logits, targets))
    if N and V:
        _kernels.crossentropy_forward_backward(logits, targets, losses, float(scale), bool(write_grad), nt)
    else:
        losses[...] = 0.0
    return losses


def sum_squares(x, *, num_threads=None) -> float:
    """Σ x² over all elements, in double, in an order that does not depend on num_threads."""
    xf = _flat("sum_squares", "x", x)
    return _kernels.sum_squares(xf, resolve_num_threads(num_threads, "sum_squares: num_threads")) if xf.size else 0.0


def adamw_step(p, g, m, v, seg_start, decay, *, lr, beta1, beta2, eps, weight_decay, step, grad_scale=1.0,
               num_threads=None) -> None:
    """One AdamW step (PyTorch's formula) over flat float32 buffers p, g, m, v [n], in place.

    Segment s = [seg_start[s], seg_start[s+1]) is weight-decayed iff decay[s]; step (>= 1) sets the bias
    corrections; g is multiplied by grad_scale first (gradient clipping).
    """
    fn = "adamw_step"
    _check(fn, "p", p, (None,), writeable=True)
    n = p.shape[0]
    _check(fn, "g", g, (n,))
    for name, a in (("m", m), ("v", v)):
        _check(fn, name, a, (n,), writeable=True)
    _check(fn, "decay", decay, (None,), dtype=np.uint8)
    _check(fn, "seg_start", seg_start, (decay.shape[0] + 1,), dtype=np.int64)
    if seg_start[0] != 0 or seg_start[-1] != n or np.any(np.diff(seg_start) < 0):
        raise ValueError(f"{fn}: seg_start must rise from 0 to n = {n}")
    if step < 1:
        raise ValueError(f"{fn}: step must be >= 1 (got {step})")
    bc1, bc2 = 1.0 - beta1 ** step, 1.0 - beta2 ** step
    if n:
        _kernels.adamw_step(p, g, m, v, seg_start, decay, lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale,
                            resolve_num_threads(num_threads, f"{fn}: num_threads"))
