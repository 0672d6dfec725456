"""Each layer kernel against its float64 reference in tests/reference.py, and bitwise across thread counts."""

import numpy as np
import pytest

import reference as R
from cllm import kernels

from conftest import THREAD_COUNTS, f32, rel_err, same_for_every_thread_count

TOL = 1e-5


@pytest.mark.parametrize("B,T,C,V", [(1, 1, 1, 1), (2, 7, 33, 11), (3, 64, 256, 500)])
def test_embedding(isa, rng, B, T, C, V):
    wte, wpe = f32(rng.standard_normal((V, C))), f32(rng.standard_normal((T + 3, C)))
    idx = rng.integers(0, V, (B, T)).astype(np.int32)
    idx.flat[0] = idx.flat[-1]  # a repeated token: its row of dwte gets two contributions
    assert rel_err(kernels.embedding_forward(idx, wte, wpe), R.encoder_forward(wte, wpe, idx)) <= TOL
    dout = f32(rng.standard_normal((B, T, C)))
    ref_dwte, ref_dwpe = R.encoder_backward(dout.astype(np.float64), idx, wte.shape, wpe.shape)

    def run(nt):
        dwte, dwpe = np.zeros_like(wte), np.zeros_like(wpe)
        kernels.embedding_backward(dout, idx, dwte, dwpe, num_threads=nt)
        return dwte, dwpe

    dwte, dwpe = run(1)
    assert rel_err(dwte, ref_dwte) <= TOL and rel_err(dwpe, ref_dwpe) <= TOL
    same_for_every_thread_count(run)


def test_embedding_without_positions(rng):
    """wpe None (Llama: positions are rotary): out = wte[idx], and only dwte gets gradients."""
    wte, idx = f32(rng.standard_normal((11, 33))), rng.integers(0, 11, (2, 7)).astype(np.int32)
    assert np.array_equal(kernels.embedding_forward(idx, wte), wte[idx])
    dout = f32(rng.standard_normal((2, 7, 33)))
    ref_dwte, _ = R.encoder_backward(dout.astype(np.float64), idx, wte.shape, (7, 33))

    def run(nt):
        dwte = np.zeros_like(wte)
        kernels.embedding_backward(dout, idx, dwte, num_threads=nt)
        return dwte

    assert rel_err(run(1), ref_dwte) <= TOL
    same_for_every_thread_count(run)


def test_embedding_rejects_out_of_range_ids(rng):
    wte, wpe = f32(rng.standard_normal((10, 4))), f32(rng.standard_normal((8, 4)))
    idx = np.zeros((2, 5), np.int32)
    idx[1, 3] = 10
    with pytest.raises(ValueError, match=r"embedding_forward: idx\[1, 3\] = 10 is outside \[0, 10\)"):
        kernels.embedding_forward(idx, wte, wpe)
    idx[1, 3] = -2
    with pytest.raises(ValueError, match=r"idx\[1, 3\] = -2"):
        kernels.embedding_backward(np.zeros((2, 5, 4), np.float32), idx, np.zeros_like(wte), np.zeros_like(wpe))
    with pytest.raises(ValueError, match="idx has 9 positions but wpe only 8"):
        kernels.embedding_forward(np.zeros((1, 9), np.int32), wte, wpe)


@pytest.mark.parametrize("N,C", [(1, 1), (5, 7), (130, 256), (300, 33)])
def test_layernorm(isa, rng, N, C):
    x = f32(rng.standard_normal((N, C)) * 3 + 1)
    w, b = f32(rng.standard_normal(C)), f32(rng.standard_normal(C))
    out, mean, rstd = kernels.layernorm_forward(x, w, b)
    ref_out, cache = R.layernorm_forward(x.astype(np.float64)[None], w, b)  # the reference takes (B,T,C)
    assert rel_err(out, ref_out[0]) <= TOL
    assert rel_err(rstd, cache[1].reshape(-1)) <= TOL
    dout = f32(rng.standard_normal((N, C)))
    ref_dx, ref_dw, ref_db = R.layernorm_backward(dout.astype(np.float64)[None], cache, w.astype(np.float64))
    ref_dx = ref_dx[0]
    dx0 = f32(rng.standard_normal((N, C)))  # the backward adds to what is there

    def run(nt):
        dx, dw, db = dx0.copy(), np.ones(C, np.float32), np.ones(C, np.float32)
        kernels.layernorm_backward(dout, x, w, mean, rstd, dx, dw, db, num_threads=nt)
        return dx, dw, db

    dx, dw, db = run(1)
    if C > 1:  # with C == 1 every normalised value is 0 and dx is 0 up to rounding
        assert rel_err(dx, dx0 + ref_dx) <= TOL
    assert rel_err(dw, 1 + ref_dw) <= TOL and rel_err(db, 1 + ref_db) <= TOL
    same_for_every_thread_count(run)


@pytest.mark.parametrize("N,C", [(1, 1), (5, 7), (130, 256), (300, 33), (4096, 64)])
def test_rmsnorm(isa, rng, N, C):
    x = f32(rng.standard_normal((N, C)) * 3 + 1)
    w = f32(rng.standard_normal(C))
    out, rstd = kernels.rmsnorm_forward(x, w, eps=1e-6)
    ref_out, cache = R.rmsnorm_forward(x.astype(np.float64), w.astype(np.float64), 1e-6)
    assert rel_err(out, ref_out) <= TOL
    assert rel_err(rstd, cache[1].reshape(-1)) <= TOL
    dout = f32(rng.standard_normal((N, C)))
    ref_dx, ref_dw = R.rmsnorm_backward(dout.astype(np.float64), cache, w.astype(np.float64))
    dx0 = f32(rng.standard_normal((N, C)))  # the backward adds to what is there

    def run(nt):
        dx, dw = dx0.copy(), np.ones(C, np.float32)
        kernels.rmsnorm_backward(dout, x, w, rstd, dx, dw, num_threads=nt)
        out, rstd_nt = kernels.rmsnorm_forward(x, w, eps=1e-6, num_threads=nt)
        return dx, dw, out, rstd_nt

    dx, dw, _, _ = run(1)
    if C > 1:  # with C == 1 every row normalises to ±1 and dx is 0 up to rounding
        assert rel_err(dx, dx0 + ref_dx) <= TOL
    assert rel_err(dw, 1 + ref_dw) <= TOL
    same_for_every_thread_count(run)


def test_rmsnorm_rejects_bad_input(rng):
    x, w = f32(rng.standard_normal((4, 8))), f32(rng.standard_normal(8))
    with pytest.raises(ValueError, match="rmsnorm_forward: eps must be a finite number > 0"):
        kernels.rmsnorm_forward(x, w, eps=0.0)
    with pytest.raises(ValueError, match="rmsnorm_forward: w"):
        kernels.rmsnorm_forward(x, f32(rng.standard_normal(7)))
    _, rstd = kernels.rmsnorm_forward(x, w)
    with pytest.raises(ValueError, match="rmsnorm_backward: dx"):
        kernels.rmsnorm_backward(x, x, w, rstd, x, np.zeros(8, np.float32))


@pytest.mark.parametrize("M,H,hs,P", [(1, 1, 2, 1), (5, 3, 6, 9), (300, 4, 64, 300), (70, 2, 128, 4096),
                                     (33, 1, 34, 40)])
def test_rope(isa, rng, M, H, hs, P):
    x = f32(rng.standard_normal((M, H, hs)))
    pos = rng.integers(0, P, M).astype(np.int32)
    pos[0] = P - 1  # the table's last row
    cos, sin = kernels.rope_table(P, hs, theta=10_000.0)
    dout = f32(rng.standard_normal((M, H, hs)))

    def run(nt):
        return (kernels.rope_forward(x, pos, cos, sin, num_threads=nt),
                kernels.rope_backward(dout, pos, cos, sin, num_threads=nt))

    out, dx = run(1)
    assert rel_err(out, R.rope_forward(x.astype(np.float64), pos)) <= TOL
    assert rel_err(dx, R.rope_backward(dout.astype(np.float64), pos)) <= TOL
    same_for_every_thread_count(run)
    inplace = x.copy()
    assert kernels.rope_forward(inplace, pos, cos, sin, out=inplace) is inplace
    assert np.array_equal(inplace, out)


@pytest.mark.parametrize("M,NH,hs,qk_norm", [(1, 1, 2, True), (5, 3, 6, True), (130, 4, 64, True),
                                            (130, 4, 64, False), (33, 2, 34, True)])
def test_qk_rotary(isa, rng, M, NH, hs, qk_norm):
    C = NH * hs
    qkv = f32(rng.standard_normal((M, 3 * C)) * 2 + 0.5)
    pos = rng.integers(0, 2 * M, M).astype(np.int32)
    cos, sin = kernels.rope_table(2 * M, hs)
    norms = {"q_norm": f32(1 + 0.3 * rng.standard_normal(hs)), "k_norm": f32(1 + 0.3 * rng.standard_normal(hs))} \
        if qk_norm else {}
    norms64 = {k: v.astype(np.float64) for k, v in norms.items()}
    dout = f32(rng.standard_normal((M, 3 * C)))
    ref_out, caches = R.qk_rotary_forward(qkv.astype(np.float64), NH, pos, **norms64)
    ref_dqkv, ref_dnorms = R.qk_rotary_backward(dout.astype(np.float64), NH, pos, caches, **norms64)

    def run(nt):
        out, rstd = kernels.qk_rotary_forward(qkv, NH, pos, cos, sin, **norms, num_threads=nt)
        dqkv, dnorm = dout.copy(), {"dq_norm": np.ones(hs, np.float32), "dk_norm": np.ones(hs, np.float32)}
        kernels.qk_rotary_backward(dqkv, qkv, NH, pos, cos, sin, **norms, rstd=rstd,
                                   **(dnorm if qk_norm else {}), num_threads=nt)
        return out, dqkv, *dnorm.values()

    out, dqkv, dqw, dkw = run(1)
    assert rel_err(out, ref_out) <= TOL
    if hs > 2 or not qk_norm:  # a 2-wide head normalises to a near-constant: its gradient is 0 up to rounding
        assert rel_err(dqkv, ref_dqkv) <= TOL
    if qk_norm:
        assert rel_err(dqw, 1 + ref_dnorms[0]) <= TOL and rel_err(dkw, 1 + ref_dnorms[1]) <= TOL
        # each head as rmsnorm_forward then rope_forward compute it: the same bits
        q = qkv[:, :C].reshape(-1, hs)
        qn, _ = kernels.rmsnorm_forward(q, norms["q_norm"])
        expect = kernels.rope_forward(qn.reshape(M, NH, hs), pos, cos, sin)
        assert np.array_equal(out[:, :C].reshape(M, NH, hs), expect)
    assert np.array_equal(out[:, 2 * C:], qkv[:, 2 * C:]) and np.array_equal(dqkv[:, 2 * C:], dout[:, 2 * C:])
    same_for_every_thread_count(run)


def test_qk_rotary_rejects_bad_input(rng):
    qkv, pos = f32(rng.standard_normal((4, 3 * 2 * 8))), np.zeros(4, np.int32)
    cos, sin = kernels.rope_table(10, 8)
    w = f32(np.ones(8))
    with pytest.raises(ValueError, match="qk_rotary_forward: give both q_norm and k_norm"):
        kernels.qk_rotary_forward(qkv, 2, pos, cos, sin, q_norm=w)
    with pytest.raises(ValueError, match=r"qk_rotary_forward: qkv must be float32 C-contiguous \[\?, 72\]"):
        kernels.qk_rotary_forward(qkv, 3, pos, cos, sin)
    with pytest.raises(ValueError, match=r"qk_rotary_forward: k_norm must be float32 C-contiguous \[8\]"):
        kernels.qk_rotary_forward(qkv, 2, pos, cos, sin, q_norm=w, k_norm=f32(np.ones(6)))
    out, rstd = kernels.qk_rotary_forward(qkv, 2, pos, cos, sin, q_norm=w, k_norm=w)
    with pytest.raises(ValueError, match="qk_rotary_backward: dqkv must not overlap"):
        kernels.qk_rotary_backward(qkv, qkv, 2, pos, cos, sin, q_norm=w, k_norm=w, rstd=rstd,
                                   dq_norm=np.zeros(8, np.float32), dk_norm=np.zeros(8, np.float32))


@pytest.mark.parametrize("M,H", [(1, 1), (7, 13), (130, 512), (3, 4096 + 5)])
def test_swiglu(isa, rng, M, H):
    gu = f32(rng.standard_normal((M, 2 * H)) * 3)
    if M > 1:  # saturated gates, in a row beside others (the max-norm error is relative to all of them)
        gu[-1, :2] = [-100.0, 100.0]
    dout = f32(rng.standard_normal((M, H)))

    def run(nt):
        return (kernels.swiglu_forward(gu, num_threads=nt), kernels.swiglu_backward(gu, dout, num_threads=nt))

    out, dgu = run(1)
    assert rel_err(out, R.swiglu_forward(gu.astype(np.float64))) <= TOL
    assert rel_err(dgu, R.swiglu_backward(dout.astype(np.float64), gu.astype(np.float64))) <= TOL
    # an element's bits depend on its values only, not on where in a row (vector body or ragged end) it falls
    if H > 1:
        assert np.array_equal(kernels.swiglu_forward(np.ascontiguousarray(
            np.concatenate([gu[:, 1:H], gu[:, H + 1:]], axis=1))), out[:, 1:])
    same_for_every_thread_count(run)


def test_swiglu_rejects_bad_input(rng):
    with pytest.raises(ValueError, match="swiglu_forward: gu must have an even number of columns"):
        kernels.swiglu_forward(f32(rng.standard_normal((2, 7))))
    gu = f32(rng.standard_normal((2, 8)))
    with pytest.raises(ValueError, match=r"swiglu_backward: dout must be float32 C-contiguous \[2, 4\]"):
        kernels.swiglu_backward(gu, f32(rng.standard_normal((2, 8))))
    with pytest.raises(ValueError, match="swiglu_backward: dgu must not overlap"):
        kernels.swiglu_backward(gu, gu[:, :4].copy(), dgu=gu)


def test_rope_rejects_bad_input(rng):
    x = f32(rng.standard_normal((4, 2, 8)))
    cos, sin = kernels.rope_table(10, 8)
    with pytest.raises(ValueError, match=r"rope_forward: pos\[2\] = 10 is outside \[0, 10\)"):
        kernels.rope_forward(x, np.array([0, 1, 10, 3], np.int32), cos, sin)
    with pytest.raises(ValueError, match="rope_forward: cos must be float32 C-contiguous"):
        kernels.rope_forward(x, np.zeros(4, np.int32), *kernels.rope_table(10, 6))
    with pytest.raises(ValueError, match="rope_table: head_size must be even"):
        kernels.rope_table(10, 7)
    with pytest.raises(ValueError, match="rope_backward: the head size"):
        kernels.rope_backward(f32(rng.standard_normal((4, 2, 7))), np.zeros(4, np.int32), cos, sin)


@pytest.mark.parametrize("B,T,C,NH", [(1, 1, 8, 1), (2, 5, 24, 2), (1, 63, 64, 4), (2, 65, 32, 2),
                                      (1, 130, 48, 3), (2, 256, 256, 4)])
def test_attention(isa, rng, B, T, C, NH):
    qkv = f32(rng.standard_normal((B, T, 3 * C)))  # scale 1: peaked softmaxes, so the derivative matters
    out, lse = kernels.attention_forward(qkv, NH)
    ref_out, att = R.attention_forward(qkv.astype(np.float64), NH)
    assert rel_err(out, ref_out) <= TOL
    dout = f32(rng.standard_normal((B, T, C)))
    ref_dqkv = R.attention_backward(dout.astype(np.float64), qkv.astype(np.float64), att, NH)
    run = lambda nt: (kernels.attention_backward(dout, qkv, out, lse, num_threads=nt),)
    dqkv = run(1)[0]
    for part in range(3):  # q, k, v separately: each has its own scale
        sl = slice(part * C, (part + 1) * C)
        assert rel_err(dqkv[..., sl], ref_dqkv[..., sl]) <= 2 * TOL
    same_for_every_thread_count(lambda nt: kernels.attention_forward(qkv, NH, num_threads=nt) + run(nt))


def test_attention_is_causal(rng):
    qkv = f32(rng.standard_normal((1, 40, 48)))
    out, _ = kernels.attention_forward(qkv, 2)
    qkv[0, 30:] += 5.0  # changing later positions leaves earlier outputs bit for bit
    out2, _ = kernels.attention_forward(qkv, 2)
    assert np.array_equal(out[0, :30], out2[0, :30]) and not np.array_equal(out[0, 30:], out2[0, 30:])


@pytest.mark.parametrize("n", [1, 15, 4096 + 17])
def test_gelu_and_residual(isa, rng, n):
    x = f32(rng.standard_normal(n) * 4)
    x[0] = -30.0  # far tails saturate without overflow
    assert rel_err(kernels.gelu_forward(x), R.gelu_forward(x.astype(np.float64))) <= TOL
    dout = f32(rng.standard_normal(n))
    ref = R.gelu_backward(dout.astype(np.float64), x.astype(np.float64))
    assert rel_err(kernels.gelu_backward(x, dout), ref) <= TOL
    y = f32(rng.standard_normal(n))
    np.testing.assert_array_equal(kernels.residual_forward(x, y), x + y)
    same_for_every_thread_count(lambda nt: (kernels.gelu_forward(x, num_threads=nt),
                                            kernels.gelu_backward(x, dout, num_threads=nt)))


@pytest.mark.parametrize("N,V", [(1, 1), (7, 13), (64, 8192), (5, 50257)])
def test_crossentropy(isa, rng, N, V):
    logits = f32(rng.standard_normal((N, V)) * 3)
    targets = rng.integers(0, V, N).astype(np.int32)
    targets[N // 2] = -1
    valid = targets != -1
    ref_loss, probs = R.crossentropy_forward(logits.astype(np.float64)[None], targets[None])
    ref_grad = R.crossentropy_backward(probs, targets[None])[0]
    losses = kernels.crossentropy(logits.copy(), targets, write_grad=False)
    assert abs(losses.sum() / max(valid.sum(), 1) - ref_loss) <= TOL * max(1.0, abs(ref_loss))
    assert not losses[~valid].any()

    def run(nt):
        z = logits.copy()
        return kernels.crossentropy(z, targets, scale=1.0 / max(valid.sum(), 1), num_threads=nt), z

    losses2, grad = run(1)
    np.testing.assert_array_equal(losses, losses2)
    assert rel_err(grad, ref_grad) <= TOL
    same_for_every_thread_count(run)


def test_crossentropy_all_ignored(rng):
    logits = f32(rng.standard_normal((3, 5)))
    losses = kernels.crossentropy(logits, np.full(3, -1, np.int32))
    assert not losses.any() and not logits.any()


def test_crossentropy_rejects_bad_targets(rng):
    with pytest.raises(ValueError, match=r"crossentropy: targets\[1\] = 5 is outside -1 or \[0, 5\)"):
        kernels.crossentropy(f32(rng.standard_normal((2, 5))), np.array([0, 5], np.int32))


def test_sum_squares(rng):
    x = f32(rng.standard_normal(300_001))
    expected = float((x.astype(np.float64) ** 2).sum())
    assert abs(kernels.sum_squares(x) - expected) <= 1e-12 * expected
    assert len({kernels.sum_squares(x, num_threads=nt) for nt in THREAD_COUNTS}) == 1
