"""The command line's argument parser class and argument types: each type turns one option's text into its value
or raises argparse.ArgumentTypeError, which argparse prints as a one-line usage error (exit code 2)."""

from __future__ import annotations

import argparse
import math

__all__ = ["Parser", "bytes_text", "fraction", "non_negative_float", "non_negative_int", "positive_float",
           "positive_int", "thread_counts"]


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (``cllm crawl: error: argument --delay: ...``); --help has the rest."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _checked(convert, ok, expected: str):
    """An argument type: ``convert(text)`` where ``ok`` holds for the value, else a usage error saying ``expected``."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected} (got {text!r})")
        return value
    return parse


positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
fraction = _checked(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
non_negative_float = _checked(float, lambda v: 0.0 <= v < math.inf, "a finite number >= 0")
positive_float = _checked(float, lambda v: 0.0 < v < math.inf, "a finite number > 0")


def thread_counts(text: str) -> list[int]:
    """Comma-separated thread counts (``cllm bench --threads 1,2,4``)."""
    from ..evaluate.bench import parse_threads

    try:
        return parse_threads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def bytes_text(n: int) -> str:
    """A byte count for a help text: "256 MiB" when it is a whole number of MiB, else "5,000,000"."""
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n:,}"
