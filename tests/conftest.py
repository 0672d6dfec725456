import numpy as np
import pytest

import cllm
from cllm import kernels

ISAS = cllm.show_config()["isa_supported"]
THREAD_COUNTS = (1, 2, 3, 4, 8)  # above the cores too: users run on 64


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test once per kernel path this CPU supports, restoring the automatic choice after."""
    kernels.set_isa(request.param)
    yield request.param
    kernels.set_isa("auto")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def rel_err(got, ref):
    """Max-norm relative error of a float32 result against a float64 reference."""
    ref = np.asarray(ref, dtype=np.float64)
    scale = max(np.abs(ref).max(initial=0.0), 1e-30)
    return float(np.abs(np.asarray(got, dtype=np.float64) - ref).max(initial=0.0) / scale)


def f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def same_for_every_thread_count(run, equal_nan=False):
    """run(nt) -> tuple of arrays; equal bits for every thread count."""
    first = run(THREAD_COUNTS[0])
    for nt in THREAD_COUNTS[1:]:
        for a, b in zip(first, run(nt)):
            assert np.array_equal(a, b, equal_nan=equal_nan), f"differs at num_threads={nt}"
