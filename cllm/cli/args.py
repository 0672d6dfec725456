"""The command line's argument parser class and argument types: each type turns one option's text into its value
or raises argparse.ArgumentTypeError, which argparse prints as a one-line usage error (exit code 2)."""

from __future__ import annotations

import argparse

__all__ = ["Parser", "bytes_text", "fraction", "non_negative_float", "non_negative_int", "positive_float",
           "positive_int", "thread_counts"]


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (``cllm crawl: error: argument --delay: ...``); --help has the rest."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {text!r})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {text!r})")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (got {text!r})") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (got {text!r})")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1) (got {text!r})") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1) (got {text!r})")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 (got {text!r})") from None
    if not value >= 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0 (got {text!r})")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = non_negative_float(text)
    if value == 0.0:
        raise argparse.ArgumentTypeError(f"expected a number > 0 (got {text!r})")
    return value


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
