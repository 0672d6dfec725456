"""The compiled extension modules: _kernels (Cython over csrc/*.c) and _bpe (pybind11 over csrc/bpe/)."""

import os

# GNU OpenMP keeps idle threads spinning for ~300,000 iterations before they sleep. On a busy machine (another
# process, or more threads than free cores) the spinners take the cores the working threads need, and a step
# of many small kernels ran 2-4x slower. 3,000 iterations cost nothing measurable on an idle machine and
# removed most of that loss (docs/performance.md, "OpenMP waiting"). libgomp reads it once, when it loads (here,
# with the extensions); the variable is removed again so that other libraries loaded later (PyTorch's own
# libgomp, say) keep their defaults. A user's own setting wins.
_ours = "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ
if _ours:
    os.environ["GOMP_SPINCOUNT"] = "3000"
try:
    from . import _bpe, _kernels  # noqa: F401
finally:
    if _ours:
        del os.environ["GOMP_SPINCOUNT"]
