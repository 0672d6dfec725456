"""Stop long work at a safe point on Ctrl-C (SIGINT) or SIGTERM, instead of wherever the signal lands."""

from __future__ import annotations

import signal
import threading

__all__ = ["StopSignals", "ignore_sigint"]


class StopSignals:
    """``with StopSignals() as stop:`` SIGINT / SIGTERM only set ``stop.signal`` ("SIGINT" or "SIGTERM"); the loop
    checks it at its safe points (the trainer after a step, preprocess after a document) and winds down, keeping
    what it wrote whole. A second SIGINT interrupts at once. Only in the main thread (elsewhere signals cannot be
    caught, and the context does nothing)."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.signal == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt
        self.signal = name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def ignore_sigint() -> None:
    """For worker processes: Ctrl-C in a terminal reaches the whole process group, and the parent decides."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
