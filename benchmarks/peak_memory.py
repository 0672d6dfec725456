"""Peak resident memory of a benchmark worker process, its own alone."""

import resource
import sys


def peak_rss_mb() -> float:
    """This process's peak RSS in MiB. Linux: VmHWM, the peak of this address space, which starts afresh at exec;
    not ru_maxrss, which Linux carries across exec, so that a worker started by a large pytest process would
    report the parent's size. Elsewhere ru_maxrss (KiB, bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError, IndexError):
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024
