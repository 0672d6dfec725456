"""Argument checks shared by the backend's entry points: arrays must be C-contiguous, of the right dtype and shape,
and outputs must not overlap inputs. Each failure is a TypeError/ValueError naming the function and argument."""

from __future__ import annotations

import numpy as np

__all__ = ["check", "check_ids", "check_out", "describe", "flat", "no_overlap"]


def describe(a) -> str:
    if not isinstance(a, np.ndarray):
        return type(a).__name__
    layout = "" if a.flags.c_contiguous else " non-contiguous"
    return f"{a.dtype} {list(a.shape)}{layout}"


def check(fn: str, name: str, a, expected: tuple, *, writeable: bool = False, dtype=np.float32) -> np.ndarray:
    """a must be a C-contiguous ndarray of dtype whose shape matches expected (ints, or None for 'any')."""
    def want():  # the message, built only on failure (this check runs on every kernel call)
        dims = ", ".join("?" if d is None else str(d) for d in expected)
        return f"{fn}: {name} must be {np.dtype(dtype).name} C-contiguous [{dims}] (got {describe(a)})"

    if not isinstance(a, np.ndarray) or a.dtype != dtype:
        raise TypeError(want())
    shape_ok = a.ndim == len(expected) and all(d is None or d == s for d, s in zip(expected, a.shape))
    if not shape_ok or not a.flags.c_contiguous:
        raise ValueError(want())
    if writeable and not a.flags.writeable:
        raise ValueError(f"{fn}: {name} must be writeable")
    return a


def check_out(fn: str, name: str, out, shape: tuple, inputs: tuple) -> np.ndarray:
    """A caller-given output buffer, or a new one; never one that overlaps an input."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    check(fn, name, out, shape, writeable=True)
    return no_overlap(fn, name, out, inputs)


def no_overlap(fn: str, name: str, out, inputs: tuple) -> np.ndarray:
    if any(a is not None and np.may_share_memory(out, a) for a in inputs):
        raise ValueError(f"{fn}: {name} must not overlap an input array")
    return out


def check_ids(fn: str, name: str, ids, shape: tuple, vocab_size: int, allow_ignore: bool = False) -> np.ndarray:
    """int32 C-contiguous ids in [0, vocab_size) (or -1 where allow_ignore), else ValueError naming a position."""
    check(fn, name, ids, shape, dtype=np.int32)
    low = -1 if allow_ignore else 0
    bad = (ids < low) | (ids >= vocab_size)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        allowed = f"-1 or [0, {vocab_size})" if allow_ignore else f"[0, {vocab_size})"
        raise ValueError(f"{fn}: {name}{list(pos)} = {int(ids[pos])} is outside {allowed}")
    return ids


def flat(fn: str, name: str, a) -> np.ndarray:
    """A float32 C-contiguous array of any shape, seen as 1-D."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous:
        raise TypeError(f"{fn}: {name} must be float32 C-contiguous (got {describe(a)})")
    return a.reshape(-1)
