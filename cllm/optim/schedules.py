"""Learning-rate schedules.

``lr_at(step, lr=..., warmup=..., max_steps=...)`` gives the learning rate of optimizer step ``step``
(0-based) under one of ``SCHEDULES``; it is a pure function of its arguments, so a resumed run gets the
same rate for the same step.
"""
from __future__ import annotations

import math

from ..runtime import checks

__all__ = ["SCHEDULES", "lr_at"]

SCHEDULES = ("cosine", "linear", "constant", "wsd")


def lr_at(step, *, lr, warmup, max_steps, min_lr=None, schedule="cosine", decay_steps=None) -> float:
    """The learning rate of optimizer step ``step`` (0-based).

    With ``s = step``, ``w = warmup``, ``M = max_steps``, ``min_lr`` defaulting to ``lr / 10`` and
    ``decay_steps`` (``D``, used by "wsd" only) defaulting to ``max(1, M // 5)``:

    - warmup, every schedule: ``s < w`` gives ``lr * (s + 1) / w``. It is never 0, rises strictly (for
      ``w < 2**50``, where float64 still tells consecutive steps apart) and is exactly ``lr`` at ``s = w - 1``.
      ``w = 0`` means no warmup. Warmup values may lie below ``min_lr``.
    - "constant": ``lr`` for every ``s >= w``.
    - the decaying schedules go from exactly ``lr`` at their start ``a`` to exactly ``min_lr`` at ``M``, and
      stay at ``min_lr`` after; in between, with ``p = (s - a) / (M - a)``:
      "cosine" (``a = w``):  ``lr - (lr - min_lr) * (1 - cos(pi * p)) / 2``
      "linear" (``a = w``):  ``lr - (lr - min_lr) * p``
      "wsd" (``a = max(w, M - D)``): ``lr`` for ``w <= s < a`` (stable), then ``lr - (lr - min_lr) * p``.

    ``warmup >= max_steps``: the warmup wins. It runs as given (still reaching ``lr`` at ``s = w - 1``), and the
    decaying schedules then drop straight to ``min_lr`` at ``s = w``: there is no decay phase, and ``min_lr``
    starts at ``max(w, M)`` rather than at ``M``. With ``w == M`` both hold: ``lr`` at ``M - 1``, ``min_lr``
    from ``M`` on.

    So every value is finite, ``<= lr`` and ``> 0`` (``min_lr = 0`` is allowed, and the decay then reaches 0);
    after the warmup, values never increase and never fall below ``min_lr``.

    Raises ValueError, naming the argument and its value, for: ``step`` not an integer >= 0; ``lr`` not a
    finite number > 0; ``warmup`` not an integer >= 0; ``max_steps`` not an integer >= 1; ``min_lr`` not a
    number in [0, lr]; ``schedule`` not one of ``SCHEDULES``; ``decay_steps`` not an integer in [1, max_steps].
    Integers may be numpy integers; booleans are rejected.
    """
    step, lr, warmup, max_steps, min_lr, decay_steps = _checked(step, lr, warmup, max_steps, min_lr, schedule,
                                                                decay_steps)
    if step < warmup:
        return lr * ((step + 1) / warmup)   # (s + 1) / w first: exactly lr * 1.0 at s = w - 1
    if schedule == "constant":
        return lr
    if step >= max_steps:
        return min_lr
    start = max(warmup, max_steps - decay_steps) if schedule == "wsd" else warmup
    if step < start:
        return lr                           # wsd's stable phase
    progress = (step - start) / (max_steps - start)           # in [0, 1)
    frac = 0.5 * (1.0 - math.cos(math.pi * progress)) if schedule == "cosine" else progress
    return max(min_lr, lr - (lr - min_lr) * frac)             # exactly lr at progress 0; max() guards rounding


def _checked(step, lr, warmup, max_steps, min_lr, schedule, decay_steps):
    """lr_at's arguments as Python ints and floats, defaults filled in; ValueError naming the first bad one."""
    step, warmup = _integer("step", step, 0), _integer("warmup", warmup, 0)
    max_steps = _integer("max_steps", max_steps, 1)
    lr_f = _real("lr", lr)
    if not (lr_f > 0 and math.isfinite(lr_f)):
        raise ValueError(f"lr_at: lr must be a finite number > 0 (got {lr!r})")
    min_lr_f = lr_f / 10 if min_lr is None else _real("min_lr", min_lr)
    if not 0 <= min_lr_f <= lr_f:     # also rejects nan
        raise ValueError(f"lr_at: min_lr must be a number in [0, lr] = [0, {lr_f!r}] (got {min_lr!r})")
    if not isinstance(schedule, str) or schedule not in SCHEDULES:
        names = ", ".join(repr(name) for name in SCHEDULES)
        raise ValueError(f"lr_at: schedule must be one of {names} (got {schedule!r})")
    if decay_steps is None:
        return step, lr_f, warmup, max_steps, min_lr_f, max(1, max_steps // 5)
    decay = _integer("decay_steps", decay_steps, 1)
    if decay > max_steps:
        raise ValueError(f"lr_at: decay_steps must be an integer in [1, max_steps] = [1, {max_steps}] "
                         f"(got {decay_steps!r})")
    return step, lr_f, warmup, max_steps, min_lr_f, decay


def _integer(name, value, minimum):
    """``value`` as a Python int >= minimum (numpy integers welcome, booleans not), else ValueError."""
    return checks.integer(value, f"lr_at: {name}", minimum)


def _real(name, value):
    """``value`` as a float (numpy scalars welcome, booleans and strings not), else ValueError."""
    if not checks.is_number(value):
        raise ValueError(f"lr_at: {name} must be a real number (got {value!r})")
    return float(value)
