"""Thread-count policy: the one place that decides how many threads a kernel uses.

A kernel's ``num_threads=None`` resolves, first match wins, to: the innermost active ``with threads(n)``
(per Python thread / asyncio task), the value of ``set_num_threads(n)``, ``$CLLM_NUM_THREADS``,
``$OMP_NUM_THREADS`` (first item of an OpenMP list such as ``"4,2"``), and finally ``effective_cpu_count()``:
the CPUs this process may run on (affinity mask), capped by its cgroup v1/v2 CPU quota.
Any integer >= 1 is valid; more threads than CPUs is allowed but warns once per process.

Results do not depend on the thread count: partial sums are reduced in a fixed order along the sphere tree
(``sphere_tree``, fan-out 12), which ``csrc/threads.c`` follows and ``tree_sum`` mirrors in Python.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import os
import re
import warnings

from . import checks

__all__ = ["effective_cpu_count", "get_num_threads", "configured_num_threads", "set_num_threads", "threads",
           "resolve_num_threads", "SphereTree", "sphere_tree", "tree_sum"]

_override: contextvars.ContextVar[int | None] = contextvars.ContextVar("cllm_num_threads", default=None)
_default: int | None = None        # set_num_threads()
_warned_oversubscription = False   # the oversubscription warning is given once per process


# --- effective CPU count ---------------------------------------------------------------------------------

def _read(root, path):
    """The stripped text of root/path, or None if it cannot be read."""
    try:
        with open(os.path.join(root, path.lstrip("/")), encoding="ascii") as f:
            return f.read().strip()
    except (OSError, ValueError):
        return None


def _quota_cpus(quota, period):
    """CPUs allowed by a CFS quota and period (strings), rounded up and >= 1; None if unlimited or garbled."""
    try:
        q, p = int(quota), int(period)
    except (TypeError, ValueError):   # also "max", the cgroup v2 spelling of "no limit"
        return None
    if q <= 0 or p <= 0:              # -1 is the cgroup v1 spelling of "no limit"
        return None
    return max(1, -(-q // p))       # ceil(q / p) in integers


def _cgroup_mount(root, v2):
    """(mount point, mount root) of the cgroup v2 hierarchy or of the v1 cpu controller, from mountinfo."""
    for line in (_read(root, "/proc/self/mountinfo") or "").splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        if (tail[0] == "cgroup2") if v2 else (tail[0] == "cgroup" and "cpu" in tail[2].split(",")):
            return fields[4], fields[3]
    return ("/sys/fs/cgroup" if v2 else "/sys/fs/cgroup/cpu"), "/"


def _walk_up(root, mount, cgroup_path):
    """Directories under ``root`` from the process's cgroup up to the top of its hierarchy, innermost first."""
    mount_point, mount_root = mount
    if mount_root != "/" and cgroup_path.startswith(mount_root):
        cgroup_path = cgroup_path[len(mount_root):]
    parts = [p for p in cgroup_path.split("/") if p not in ("", ".", "..")]
    return [os.path.join(root, mount_point.lstrip("/"), *parts[:i]) for i in range(len(parts), -1, -1)]


def _cgroup_cpu_limit(root="/"):
    """The smallest CPU quota of this process's cgroups (v1 and v2, walking up to the top), or None."""
    limits = []
    for line in (_read(root, "/proc/self/cgroup") or "").splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        if fields[0] == "0" and fields[1] == "":                     # cgroup v2: "0::/path"
            for d in _walk_up(root, _cgroup_mount(root, True), fields[2]):
                quota_period = (_read(d, "cpu.max") or "").split()
                limits.append(_quota_cpus(*quota_period) if len(quota_period) == 2 else None)
        elif "cpu" in fields[1].split(","):                          # cgroup v1: "4:cpu,cpuacct:/path"
            for d in _walk_up(root, _cgroup_mount(root, False), fields[2]):
                limits.append(_quota_cpus(_read(d, "cpu.cfs_quota_us"), _read(d, "cpu.cfs_period_us")))
    limits = [n for n in limits if n is not None]
    return min(limits) if limits else None


def _effective_cpu_count(root="/"):
    """Uncached ``effective_cpu_count``, reading cgroup files under ``root``."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # not Linux
        n = os.cpu_count() or 1
    limit = _cgroup_cpu_limit(root)
    return max(1, min(n, limit) if limit is not None else n)


@functools.lru_cache(maxsize=None)
def effective_cpu_count() -> int:
    """CPUs this process may use: the affinity mask (or os.cpu_count()), capped by the cgroup CPU quota; >= 1."""
    return _effective_cpu_count("/")


# --- thread-count policy ---------------------------------------------------------------------------------

def _check_threads(value, name):
    """A validated thread count; warns (once per process) when it exceeds the CPUs available."""
    global _warned_oversubscription
    n = checks.integer(value, name, 1)
    if not _warned_oversubscription and n > effective_cpu_count():
        _warned_oversubscription = True
        warnings.warn(f"cllm: {n} threads requested but only {effective_cpu_count()} CPUs are available; "
                      "the CPUs are oversubscribed, which is allowed but usually slower", RuntimeWarning,
                      stacklevel=3)
    return n


def _env_threads(var):
    """The thread count in environment variable ``var``, or None if it is unset or empty."""
    raw = os.environ.get(var, "").strip()
    if not raw:
        return None
    items = [s.strip() for s in raw.split(",")] if var == "OMP_NUM_THREADS" else [raw]
    if not all(re.fullmatch(r"[0-9]+", s) and int(s) >= 1 for s in items):
        expected = "a positive integer" + (" or a comma-separated list of them" if var == "OMP_NUM_THREADS" else "")
        raise ValueError(f"{var} must be {expected} (got {raw!r})")
    return _check_threads(int(items[0]), var)


def configured_num_threads() -> int | None:
    """The thread count set by ``threads(n)`` > ``set_num_threads(n)`` > ``$CLLM_NUM_THREADS`` >
    ``$OMP_NUM_THREADS`` (first item), or None when none is set."""
    n = _override.get()
    if n is None:
        n = _default
    if n is None:
        n = _env_threads("CLLM_NUM_THREADS")
    if n is None:
        n = _env_threads("OMP_NUM_THREADS")
    return n


def get_num_threads() -> int:
    """The thread count kernels use by default: ``configured_num_threads()``, else ``effective_cpu_count()``."""
    n = configured_num_threads()
    return n if n is not None else effective_cpu_count()


def set_num_threads(n) -> None:
    """Set the process-wide default thread count (any integer >= 1); ``None`` goes back to env/auto."""
    global _default
    _default = None if n is None else _check_threads(n, "set_num_threads: n")


def threads(n):
    """Context manager: ``with threads(4): ...`` uses 4 threads in this Python thread / asyncio task,
    restoring the previous count on exit (also on an exception). Nestable; the innermost wins."""
    return _threads_context(_check_threads(n, "threads: n"))


@contextlib.contextmanager
def _threads_context(n):
    token = _override.set(n)
    try:
        yield n
    finally:
        _override.reset(token)


def resolve_num_threads(num_threads=None, name="num_threads") -> int:
    """What a kernel's ``num_threads=`` keyword means: None -> ``get_num_threads()``, else the validated count."""
    return get_num_threads() if num_threads is None else _check_threads(num_threads, name)


# --- sphere tree -----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SphereTree:
    """``n`` workers in heap order: node i's children are fanout*i+1 .. fanout*i+fanout (those < n)."""
    n: int
    fanout: int
    parent: tuple[int, ...]                 # parent[0] == -1
    children: tuple[tuple[int, ...], ...]
    levels: tuple[tuple[int, ...], ...]     # nodes by depth, root level first
    depth: int                              # edges on the longest root-to-leaf path

    def reduction_order(self) -> list[tuple[int, int]]:
        """The (parent, child) additions ``partial[parent] += partial[child]`` in the exact order of the C
        helper: parents p from the last internal node down to 0, each p's children in increasing order.
        Children have larger indices than their parent, so each node is complete before it is folded in."""
        return [(p, c) for p in range(self.n - 1, -1, -1) for c in self.children[p]]

    def preorder(self) -> list[int]:
        """The nodes depth first, each before its children, children in increasing order: the order in which
        the additions of ``reduction_order`` can be made as the nodes arrive, holding one partial per level."""
        order, stack = [], [0]
        while stack:
            node = stack.pop()
            order.append(node)
            stack.extend(reversed(self.children[node]))
        return order


def sphere_tree(n, fanout=12) -> SphereTree:
    """The reduction tree of ``n`` workers (n >= 1) with up to ``fanout`` (>= 2) children per node."""
    n, fanout = checks.integer(n, "sphere_tree: n", 1), checks.integer(fanout, "sphere_tree: fanout", 2)
    parent = tuple([-1] + [(i - 1) // fanout for i in range(1, n)])
    children = tuple(tuple(range(fanout * i + 1, min(fanout * i + fanout, n - 1) + 1)) for i in range(n))
    levels, start, size = [], 0, 1
    while start < n:
        levels.append(tuple(range(start, min(start + size, n))))
        start, size = start + size, size * fanout
    return SphereTree(n, fanout, parent, children, tuple(levels), len(levels) - 1)


def tree_sum(values, fanout=12):
    """Sum ``values`` (numbers or numpy arrays, at least one) in ``SphereTree.reduction_order()``: the
    reference the C reduction is tested against. The inputs are not modified."""
    partial = list(values)
    if not partial:
        raise ValueError("tree_sum: values must be non-empty (got 0 values)")
    for p, c in sphere_tree(len(partial), fanout).reduction_order():
        partial[p] = partial[p] + partial[c]
    return partial[0]
