"""What the process may use and has used: memory available for a new allocation, peak resident memory, CPU time."""

from __future__ import annotations

import contextlib
import os
import resource
import sys

__all__ = ["available_memory", "cpu_seconds", "peak_rss"]


def available_memory() -> int:
    """Bytes of memory available to a new allocation (Linux: MemAvailable; elsewhere the physical memory)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return 1 << 34


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss() -> int:
    """Peak resident set of this process in bytes: VmHWM on Linux (ru_maxrss would include a parent process's
    peak carried across exec), else ru_maxrss (KiB on Linux, bytes on macOS)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024
