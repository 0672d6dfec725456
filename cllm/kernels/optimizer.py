"""The optimizer's kernels over flat float32 buffers: the squared gradient norm and one fused AdamW step."""

from __future__ import annotations

import numpy as np

from .._core import _kernels
from ..runtime.threads import resolve_num_threads
from .arrays import check, flat

__all__ = ["adamw_step", "sum_squares"]


def sum_squares(x, *, num_threads=None) -> float:
    """Σ x² over all elements, in double, in an order that does not depend on num_threads."""
    xf = flat("sum_squares", "x", x)
    return _kernels.sum_squares(xf, resolve_num_threads(num_threads, "sum_squares: num_threads")) if xf.size else 0.0


def adamw_step(p, g, m, v, seg_start, decay, *, lr, beta1, beta2, eps, weight_decay, step, grad_scale=1.0,
               num_threads=None) -> None:
    """One AdamW step (PyTorch's formula) over flat float32 buffers p, g, m, v [n], in place.

    Segment s = [seg_start[s], seg_start[s+1]) is weight-decayed if decay[s] == 1, not if 0, and left alone if 2
    (another optimizer's: Muon's matrices); step (>= 1) sets the bias corrections; g is multiplied by grad_scale
    first (gradient clipping).
    """
    fn = "adamw_step"
    check(fn, "p", p, (None,), writeable=True)
    n = p.shape[0]
    check(fn, "g", g, (n,))
    for name, a in (("m", m), ("v", v)):
        check(fn, name, a, (n,), writeable=True)
    check(fn, "decay", decay, (None,), dtype=np.uint8)
    check(fn, "seg_start", seg_start, (decay.shape[0] + 1,), dtype=np.int64)
    if decay.size and decay.max() > 2:
        raise ValueError(f"{fn}: decay must hold 0 (no decay), 1 (decay) or 2 (skip) per segment")
    if seg_start[0] != 0 or seg_start[-1] != n or np.any(np.diff(seg_start) < 0):
        raise ValueError(f"{fn}: seg_start must rise from 0 to n = {n}")
    if step < 1:
        raise ValueError(f"{fn}: step must be >= 1 (got {step})")
    bc1, bc2 = 1.0 - beta1 ** step, 1.0 - beta2 ** step
    if n:
        _kernels.adamw_step(p, g, m, v, seg_start, decay, lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale,
                            resolve_num_threads(num_threads, f"{fn}: num_threads"))
