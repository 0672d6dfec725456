"""What this build of cllm is and what it runs on: build flags, OpenMP, the ISA path chosen at run time."""

import platform

import numpy as np

from ._core import _bpe, _kernels
from ._version import __version__
from .threads import effective_cpu_count, get_num_threads


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
        "isa": _kernels.isa(),
        "isa_compiled": build["isa_compiled"],
        "isa_supported": build["isa_supported"],
        "num_threads": get_num_threads(),
        "effective_cpus": effective_cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
