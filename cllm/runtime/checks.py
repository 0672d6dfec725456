"""Argument checks for the public functions: one definition of what counts as an integer or a number, and the
error every check raises, naming the argument, what was expected and what was given:
``generate: max_new_tokens must be an integer >= 0 (got -1)``."""

from __future__ import annotations

import math
import numbers

__all__ = ["integer", "is_integer", "is_number", "number"]


def is_integer(value) -> bool:
    """A Python or numpy integer; not a bool (True is an int to Python, never a count to us)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite or infinite real number (Python or numpy), not a bool; NaN is a number here (``number`` refuses it)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def integer(value, name: str, minimum: int | None = None, *, optional: bool = False) -> int | None:
    """``value`` as a Python int >= ``minimum`` (None with ``optional``), else ValueError naming ``name``."""
    if optional and value is None:
        return None
    if not is_integer(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name} must be an integer{bound}{' or None' if optional else ''} (got {value!r})")
    return int(value)


def number(value, name: str, low: float | None = None, *, low_open: bool = False, optional: bool = False) -> float | None:
    """``value`` as a finite float >= ``low`` (> with ``low_open``; None with ``optional``), else ValueError."""
    if optional and value is None:
        return None
    ok = is_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if not ok:
        bound = "" if low is None else f" {'>' if low_open else '>='} {low}"
        raise ValueError(f"{name} must be a finite number{bound}{' or None' if optional else ''} (got {value!r})")
    return float(value)
