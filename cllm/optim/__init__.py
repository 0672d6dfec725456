"""Optimisation (public as ``cllm.optim``): AdamW state and the learning-rate schedules.

``AdamW(model).step(lr=lr_at(step, lr=..., warmup=..., max_steps=...))``; the schedules are pure functions of the
step, so a resumed run gets the same rate for the same step.
"""

from .adamw import AdamW
from .schedules import SCHEDULES, lr_at

__all__ = ["AdamW", "SCHEDULES", "lr_at"]
