"""The linear-layer kernels (csrc/matmul.c): float64 reference, thread-count determinism, bad input."""

import importlib
import itertools
import threading
import time

import numpy as np
import pytest

from cllm import kernels

from conftest import THREAD_COUNTS, rel_err

tree_sum = importlib.import_module("cllm.runtime.threads").tree_sum

SIZES = (1, 7, 33, 64, 257)
TOL = 1e-5
# M = B·T = 4096 rows with the (K, N) of the benchmark (and the model's layers)
MODEL_SHAPES = [(4096, 256, 768), (4096, 256, 256), (4096, 256, 1024), (4096, 1024, 256), (4096, 256, 8192)]


def operands(rng, M, K, N):
    x = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((N, K), dtype=np.float32)
    b = rng.standard_normal(N, dtype=np.float32)
    dy = rng.standard_normal((M, N), dtype=np.float32)
    return x, w, b, dy


def check_against_reference(x, w, b, dy, num_threads=None):
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    y = kernels.linear_forward(x, w, b, num_threads=num_threads)
    assert y.shape == (x.shape[0], w.shape[0]) and y.dtype == np.float32
    assert rel_err(y, x64 @ w64.T + b) <= TOL
    assert rel_err(kernels.linear_forward(x, w, num_threads=num_threads), x64 @ w64.T) <= TOL
    dx, dw, db = kernels.linear_backward(dy, x, w, num_threads=num_threads)
    assert rel_err(dx, dy64 @ w64) <= TOL
    assert rel_err(dw, dy64.T @ x64) <= TOL
    assert rel_err(db, dy64.sum(axis=0)) <= TOL


@pytest.mark.parametrize("M", SIZES)
def test_awkward_shapes_against_float64(isa, rng, M):
    for K, N in itertools.product(SIZES, SIZES):
        check_against_reference(*operands(rng, M, K, N))


@pytest.mark.parametrize("M,K,N", MODEL_SHAPES)
def test_model_shapes_against_float64(isa, rng, M, K, N):
    check_against_reference(*operands(rng, M, K, N))


def test_dw_split_into_many_chunks(rng):
    # many rows and a tiny output: the M sum is cut into many chunks reduced up the sphere tree (depth 2)
    x, w, b, dy = operands(rng, 1024 * 150 + 5, 3, 2)
    check_against_reference(x, w, b, dy)


# (2100, 1100, 30): dw's GEMM has several 512-column tiles, and db comes from the first one's packing
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (257, 33, 7), (3000, 64, 100), (4096, 256, 768), (9000, 8, 5),
                                   (2100, 1100, 30)])
def test_bitwise_identical_for_every_thread_count(isa, rng, M, K, N):
    x, w, b, dy = operands(rng, M, K, N)
    results = []
    for nt in THREAD_COUNTS:
        y = kernels.linear_forward(x, w, b, num_threads=nt)
        grads = kernels.linear_backward(dy, x, w, num_threads=nt)
        results.append((y, *grads))
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            assert np.array_equal(a, b_), "result depends on num_threads"


def test_accumulate_adds_to_dw_and_db(isa, rng):
    x, w, _, dy = operands(rng, 2100, 40, 30)
    dw0 = rng.standard_normal(w.shape, dtype=np.float32)
    db0 = rng.standard_normal(w.shape[0], dtype=np.float32)
    dw, db = dw0.copy(), db0.copy()
    _, dw_out, db_out = kernels.linear_backward(dy, x, w, dw=dw, db=db, accumulate=True)
    assert dw_out is dw and db_out is db
    assert rel_err(dw, dw0 + dy.astype(np.float64).T @ x) <= TOL
    assert rel_err(db, db0 + dy.astype(np.float64).sum(axis=0)) <= TOL
    # bitwise: accumulate == old + fresh gradient, for every thread count
    for nt in THREAD_COUNTS:
        dw2, db2 = dw0.copy(), db0.copy()
        kernels.linear_backward(dy, x, w, dw=dw2, db=db2, accumulate=True, num_threads=nt)
        assert np.array_equal(dw2, dw) and np.array_equal(db2, db)


def test_out_buffers_are_used(rng):
    x, w, b, dy = operands(rng, 5, 4, 3)
    y = np.full((5, 3), np.nan, dtype=np.float32)
    assert kernels.linear_forward(x, w, b, out=y) is y
    assert rel_err(y, x.astype(np.float64) @ w.T + b) <= TOL


def test_read_only_inputs_are_fine(rng):
    x, w, b, dy = operands(rng, 9, 8, 7)
    for a in (x, w, b, dy):
        a.flags.writeable = False
    check_against_reference(x, w, b, dy)


@pytest.mark.parametrize("M,K,N", [(0, 4, 3), (5, 0, 3), (5, 4, 0), (0, 0, 0)])
def test_empty_dimensions(rng, M, K, N):
    x, w, b, dy = operands(rng, M, K, N)
    y = kernels.linear_forward(x, w, b)
    np.testing.assert_array_equal(y, np.broadcast_to(b, (M, N)) if K == 0 else x @ w.T + b)
    dx, dw, db = kernels.linear_backward(dy, x, w)
    assert dx.shape == (M, K) and dw.shape == (N, K) and db.shape == (N,)
    assert not dx.any() and not dw.any()
    np.testing.assert_allclose(db, dy.sum(axis=0), rtol=1e-6)


# The fused epilogues: the bits of the separate kernels, for every thread count, odd shapes (ragged tiles and a
# ragged vector at each row's end) and K > the 256-wide K block (the epilogue must wait for the whole sum).
FUSED_SHAPES = [(1, 1, 1), (13, 7, 5), (257, 33, 70), (300, 600, 45), (4096, 1024, 256), (4096, 256, 1024)]


@pytest.mark.parametrize("M,K,N", FUSED_SHAPES)
def test_fused_residual_and_gelu_give_the_separate_kernels_bits(isa, rng, M, K, N):
    x, w, b, dy = operands(rng, M, K, N)
    r = rng.standard_normal((M, N), dtype=np.float32)
    gx = rng.standard_normal((M, K), dtype=np.float32)
    y = kernels.linear_forward(x, w, b)
    dx = kernels.linear_backward(dy, x, w, bias=False)[0]
    want = (kernels.residual_forward(r, y), y, kernels.gelu_forward(y), kernels.gelu_backward(gx, dx))
    for nt in THREAD_COUNTS:
        g = np.full((M, N), np.nan, dtype=np.float32)
        got = (kernels.linear_forward(x, w, b, residual=r, num_threads=nt),
               kernels.linear_forward(x, w, b, gelu_out=g, num_threads=nt), g,
               kernels.linear_backward(dy, x, w, bias=False, gelu_x=gx, num_threads=nt)[0])
        for a, b_ in zip(want, got):
            assert np.array_equal(a, b_), f"fused epilogue differs from the separate kernels at {nt} threads"


@pytest.mark.parametrize("M,K,N", [(5, 0, 3), (0, 4, 3)])
def test_fused_epilogues_on_empty_dimensions(rng, M, K, N):
    x, w, b, dy = operands(rng, M, K, N)
    r = rng.standard_normal((M, N), dtype=np.float32)
    g = np.empty((M, N), dtype=np.float32)
    np.testing.assert_array_equal(kernels.linear_forward(x, w, b, residual=r), r + np.broadcast_to(b, (M, N)))
    y = kernels.linear_forward(x, w, b, gelu_out=g)
    np.testing.assert_array_equal(g, kernels.gelu_forward(y))
    dx = kernels.linear_backward(dy, x, w, gelu_x=np.ones((M, K), np.float32))[0]
    assert dx.shape == (M, K) and not dx.any()


def test_fused_epilogue_errors(rng):
    x, w, b, dy = operands(rng, 6, 5, 4)
    r = np.zeros((6, 4), np.float32)
    with pytest.raises(ValueError, match="residual or gelu_out, not both"):
        kernels.linear_forward(x, w, b, residual=r, gelu_out=np.empty((6, 4), np.float32))
    with pytest.raises(ValueError, match=r"residual must be float32 C-contiguous \[6, 4\]"):
        kernels.linear_forward(x, w, b, residual=np.zeros((4, 6), np.float32))
    with pytest.raises(ValueError, match="out must not overlap"):
        kernels.linear_forward(x, w, b, residual=r, out=r)  # partial sums would overwrite the residual
    with pytest.raises(ValueError, match="gelu_out must not overlap"):
        y = np.empty((6, 4), np.float32)
        kernels.linear_forward(x, w, b, out=y, gelu_out=y)
    with pytest.raises(ValueError, match=r"gelu_x must be float32 C-contiguous \[6, 5\]"):
        kernels.linear_backward(dy, x, w, gelu_x=np.zeros((6, 4), np.float32))
    with pytest.raises(ValueError, match="dx must not overlap"):
        gx = np.zeros((6, 5), np.float32)
        kernels.linear_backward(dy, x, w, dx=gx, gelu_x=gx)


def test_gil_released_while_kernel_runs(rng):
    x, w, _, _ = operands(rng, 4096, 256, 2048)
    done = threading.Event()
    kernels.linear_forward(x, w, num_threads=1)  # warm up
    start = time.perf_counter()
    kernels.linear_forward(x, w, num_threads=1)
    single = time.perf_counter() - start

    def work():
        for _ in range(3):
            kernels.linear_forward(x, w, num_threads=1)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    ticks = 0
    while not done.is_set():  # the main thread runs Python while the kernels run in the other thread
        ticks += 1
        time.sleep(0.001)
    t.join()
    assert ticks >= 3 * single / 0.01, f"the GIL seems held during the kernel ({ticks} ticks)"


# --- bad input: clear errors naming the argument, never a crash --------------------------------------------

def test_errors_name_argument_expected_and_given(rng):
    x, w, b, dy = operands(rng, 4, 3, 2)
    with pytest.raises(TypeError, match=r"linear_forward: x must be float32 C-contiguous \[\?, 3\] \(got float64 \[4, 3\]\)"):
        kernels.linear_forward(x.astype(np.float64), w)
    with pytest.raises(ValueError, match=r"x must be float32 C-contiguous \[\?, 3\] \(got float32 \[4, 5\]\)"):
        kernels.linear_forward(np.zeros((4, 5), np.float32), w)
    with pytest.raises(ValueError, match=r"b must be float32 C-contiguous \[2\] \(got float32 \[3\]\)"):
        kernels.linear_forward(x, w, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"non-contiguous"):
        kernels.linear_forward(np.zeros((3, 4), np.float32).T, w)
    with pytest.raises(ValueError, match=r"w must be float32 C-contiguous \[\?, \?\] \(got float32 \[6\]\)"):
        kernels.linear_forward(x, np.zeros(6, np.float32))
    with pytest.raises(TypeError, match=r"x must be .* \(got list\)"):
        kernels.linear_forward([[1.0, 2.0, 3.0]], w)
    with pytest.raises(ValueError, match=r"dy must be float32 C-contiguous \[4, 2\] \(got float32 \[4, 3\]\)"):
        kernels.linear_backward(np.zeros((4, 3), np.float32), x, w)
    with pytest.raises(TypeError, match=r"linear_backward: x must be float32"):
        kernels.linear_backward(dy, x.astype(np.float16), w)


@pytest.mark.parametrize("nt", [0, -1, 2.0, "2", True])
def test_bad_num_threads(rng, nt):
    x, w, _, _ = operands(rng, 4, 3, 2)
    with pytest.raises(ValueError, match="num_threads"):
        kernels.linear_forward(x, w, num_threads=nt)


def test_bad_outputs(rng):
    x, w, b, dy = operands(rng, 4, 3, 2)
    with pytest.raises(ValueError, match=r"out must be float32 C-contiguous \[4, 2\]"):
        kernels.linear_forward(x, w, out=np.empty((2, 4), np.float32))
    ro = np.empty((4, 2), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        kernels.linear_forward(x, w, out=ro)
    square = np.ones((3, 3), np.float32)
    with pytest.raises(ValueError, match="out must not overlap an input"):
        kernels.linear_forward(square, square, out=square)
    with pytest.raises(ValueError, match="accumulate=True needs the dw and db"):
        kernels.linear_backward(dy, x, w, accumulate=True)


# --- the sphere-tree reduction --------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 12, 13, 144, 145, 1000])
def test_tree_reduce_matches_python_order_bitwise(rng, n):
    # magnitudes spread over many orders, so that a different order of additions would change the bits
    partials = (rng.standard_normal((n, 777)) * 10.0 ** rng.integers(-6, 6, (n, 777))).astype(np.float32)
    expected = tree_sum(list(partials))
    for nt in THREAD_COUNTS:
        got = kernels.tree_reduce(partials, num_threads=nt)
        assert np.array_equal(got, expected)
    assert rel_err(got, partials.astype(np.float64).sum(axis=0)) < 1e-3
