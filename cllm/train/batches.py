"""Training windows over token shards: which tokens a step reads, in an order fixed by (seed, epoch); and the
sequence-length schedule, which cuts each window into shorter sequences early in a run."""

from __future__ import annotations

import numpy as np

__all__ = ["Windows", "seq_len_at", "split_windows"]


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


def seq_len_at(progress: float, seq_len: int, start: int | None, warmup: float) -> int:
    """The sequence length at ``progress`` (0..1, the run's fraction done) of a schedule that doubles from
    ``start`` to ``seq_len``: with n = log2(seq_len / start) doublings, progress p < warmup trains at
    start·2^floor(n·p / warmup), and p >= warmup at seq_len. ``start`` None: seq_len throughout."""
    if start is None or progress >= warmup:
        return seq_len
    n = (seq_len // start).bit_length() - 1
    return start << min(n, int(n * max(progress, 0.0) / warmup))


def split_windows(x: np.ndarray, y: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows [m, T] as m·T/length sequences [m·T/length, length] (length divides T): the same tokens and
    targets, so a step's tokens stay the same whatever its length."""
    m, T = x.shape
    if length == T:
        return x, y
    return x.reshape(m * (T // length), length), y.reshape(m * (T // length), length)
