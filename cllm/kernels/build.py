"""What this build of cllm is and what it runs on: build flags, OpenMP, the ISA path chosen at run time."""

import platform

import numpy as np

from .._core import _bpe, _kernels
from .._version import __version__
from ..runtime.threads import effective_cpu_count, get_num_threads


__all__ = ["get_isa", "set_isa", "show_config"]


def get_isa() -> str:
    """The kernel path in use: "avx512", "avx2" or "baseline"."""
    return _kernels.isa()


def set_isa(name: str) -> None:
    """Force a kernel path (for tests and benchmarks); "auto" picks the best this CPU supports.

    The environment variable ``CLLM_ISA`` does the same at import time.
    """
    _kernels.set_isa(name)


def show_config() -> dict:
    """Build and run-time configuration, e.g. ``{"openmp": True, "isa": "avx512", "num_threads": 2, ...}``.

    ``isa`` is the kernel path in use (the best of ``isa_supported``, or the one forced with ``CLLM_ISA`` or
    ``cllm.kernels.set_isa``); ``openmp`` False means every kernel runs on one thread whatever ``num_threads`` says.
    """
    build = _kernels.build_info()
    return {
        "version": __version__,
        "compiler": build["compiler"],
        "openmp": build["openmp"],
        "openmp_version": build["openmp_version"],
        "bpe_openmp": _bpe.openmp_enabled(),
        "native": build["native"],
        "isa": get_isa(),
        "isa_compiled": build["isa_compiled"],
        "isa_supported": build["isa_supported"],
        "num_threads": get_num_threads(),
        "effective_cpus": effective_cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
