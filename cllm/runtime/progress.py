"""Progress bars (tqdm) for long work, one way everywhere: ``progress_bar(enabled, ...)`` gives a tqdm bar, or, when
disabled, an object with the same methods that does nothing, so the caller's loop has no ``if bar``."""

from __future__ import annotations

__all__ = ["progress_bar", "progress_iter"]


class _NoBar:
    total = None

    def update(self, n=1): pass
    def set_postfix(self, *args, **kwargs): pass
    def close(self): pass


def progress_bar(enabled: bool, *, total=None, initial: int = 0, unit: str = "it", desc: str | None = None):
    """A tqdm bar (stderr, resized with the terminal) when ``enabled``, else a silent stand-in."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit=unit, desc=desc, dynamic_ncols=True)


def progress_iter(iterable, enabled: bool, desc: str, unit: str = "doc"):
    """``iterable`` itself, or wrapped in a tqdm bar when ``enabled``."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit=unit, dynamic_ncols=True)
