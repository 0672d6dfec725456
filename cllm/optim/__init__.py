"""Optimisation (public as ``cllm.optim``): AdamW, Muon (for the hidden matrices, with AdamW for the rest) and
the learning-rate schedules.

``AdamW(model).step(lr=lr_at(step, lr=..., warmup=..., max_steps=...))``; the schedules are pure functions of the
step, so a resumed run gets the same rate for the same step.
"""

from .adamw import AdamW
from .muon import Muon, newton_schulz
from .schedules import SCHEDULES, lr_at

__all__ = ["AdamW", "Muon", "SCHEDULES", "lr_at", "newton_schulz"]
