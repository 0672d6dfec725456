"""Training windows over token shards: which tokens a step reads, in an order fixed by (seed, epoch)."""

from __future__ import annotations

import numpy as np

__all__ = ["Windows"]


class Windows:
    """Non-overlapping windows of ``seq_len + 1`` tokens over a list of shards, addressed 0..len-1."""

    def __init__(self, shards: list[np.ndarray], seq_len: int):
        self.shards, self.seq_len = [s for s in shards if s.size > seq_len], seq_len
        counts = [(s.size - 1) // seq_len for s in self.shards]
        self.starts = np.cumsum([0] + counts)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets), int32 [len(indices), seq_len]: window i's tokens and the same shifted by one."""
        T = self.seq_len
        out = np.empty((len(indices), T + 1), dtype=np.int32)
        for row, i in enumerate(indices):
            k = int(np.searchsorted(self.starts, i, side="right")) - 1
            start = (int(i) - int(self.starts[k])) * T
            out[row] = self.shards[k][start:start + T + 1]
        return out[:, :-1], out[:, 1:]

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        """Every window once, in an order that depends only on (seed, epoch)."""
        return np.random.default_rng([seed, epoch]).permutation(len(self))
