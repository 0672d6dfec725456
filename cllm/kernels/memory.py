"""Memory the kernels run fastest in: a step's activations as views of one huge-page-aligned allocation."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["float32_views"]


def float32_views(groups: list[dict]) -> list[dict]:
    """For each {name: shape} of groups, uninitialised float32 arrays of those shapes, 64-byte aligned, all views of
    one allocation that starts on a 2 MiB boundary. numpy asks the kernel for huge pages on big allocations, but
    separate arrays start and end in small ones; a step's arrays in one mapping spend fewer page walks (costly in
    a VM: 6-7% of a training step, docs/performance.md)."""
    align, huge = 16, (2 << 20) // 4  # in floats
    padded = lambda shape: -(-math.prod(shape) // align) * align
    arena = np.empty(sum(padded(s) for shapes in groups for s in shapes.values()) + huge, dtype=np.float32)
    at = (-arena.ctypes.data // 4) % huge  # the first 2 MiB boundary
    views = []
    for shapes in groups:
        views.append({})
        for name, shape in shapes.items():
            views[-1][name] = arena[at: at + math.prod(shape)].reshape(shape)
            at += padded(shape)
    return views
