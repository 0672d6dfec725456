"""The decode-step kernels: linear_forward_packed and attention_decode / attention_cache_store, against float64
references, bitwise against the forward kernels whose rows they must reproduce, and across thread counts."""

import numpy as np
import pytest

import reference as R
from cllm import kernels

from conftest import f32, rel_err, same_for_every_thread_count

TOL = 1e-5


def test_pack_linear_weights_layout(rng):
    w = f32(rng.standard_normal((70, 5)))
    wp = kernels.pack_linear_weights(w)
    P = kernels.PANEL
    assert wp.shape == (3, 5, P) and wp.flags.c_contiguous
    for n in (0, 31, 32, 69):
        np.testing.assert_array_equal(wp[n // P, :, n % P], w[n])
    assert not wp[2, :, 70 - 2 * P:].any()  # padding past N


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (1, 256, 768), (2, 1024, 256), (5, 24, 37), (13, 300, 70),
                                   (4, 64, 8192)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_forward_packed(isa, rng, M, K, N, bias):
    x, w = f32(rng.standard_normal((M, K))), f32(rng.standard_normal((N, K)))
    b = f32(rng.standard_normal(N)) if bias else None
    wp = kernels.pack_linear_weights(w)
    y = kernels.linear_forward_packed(x, wp, b, n=N)
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + (0.0 if b is None else b)
    assert rel_err(y, ref) <= TOL
    np.testing.assert_array_equal(y, kernels.linear_forward(x, w, b))  # the GEMM's bits, row by row
    np.testing.assert_array_equal(y[-1:], kernels.linear_forward_packed(x[-1:], wp, b, n=N))  # any M
    same_for_every_thread_count(lambda nt: (kernels.linear_forward_packed(x, wp, b, n=N, num_threads=nt),),
                                equal_nan=True)


def test_linear_forward_packed_empty_and_errors(rng):
    w = f32(rng.standard_normal((40, 8)))
    wp = kernels.pack_linear_weights(w)
    assert kernels.linear_forward_packed(np.zeros((0, 8), np.float32), wp, n=40).shape == (0, 40)
    with pytest.raises(ValueError, match=r"linear_forward_packed: n must be the packed weight's output count, "
                                         r"in \(32, 64\] \(got 30\)"):
        kernels.linear_forward_packed(np.zeros((1, 8), np.float32), wp, n=30)
    with pytest.raises(ValueError, match=r"linear_forward_packed: x must be float32 C-contiguous \[\?, 8\]"):
        kernels.linear_forward_packed(np.zeros((1, 9), np.float32), wp, n=40)
    with pytest.raises(TypeError, match=r"wp must be float32"):
        kernels.linear_forward_packed(np.zeros((1, 8), np.float32), wp.astype(np.float64), n=40)
    with pytest.raises(ValueError, match=r"b must be float32 C-contiguous \[40\]"):
        kernels.linear_forward_packed(np.zeros((1, 8), np.float32), wp, np.zeros(41, np.float32), n=40)


def empty_cache(S, NH, hs, Tk, fill=np.nan):
    """A cache whose unused cells hold NaN: the kernels must never read them."""
    return np.full((S, NH, hs, Tk), fill, np.float32), np.full((S, NH, Tk, hs), fill, np.float32)


def test_attention_cache_store_layout(rng):
    T, C, NH, Tk = 5, 12, 3, 16
    hs = C // NH
    qkv = f32(rng.standard_normal((T, 3 * C)))
    kc, vc = empty_cache(2, NH, hs, Tk)
    kernels.attention_cache_store(qkv, kc, vc, 1)
    k, v = qkv[:, C:2 * C].reshape(T, NH, hs), qkv[:, 2 * C:].reshape(T, NH, hs)
    np.testing.assert_array_equal(kc[1, :, :, :T], k.transpose(1, 2, 0))
    np.testing.assert_array_equal(vc[1, :, :T], v.transpose(1, 0, 2))
    assert not kc[1, :, :, T:].any()  # keys past T are zeroed
    assert np.isnan(kc[0]).all() and np.isnan(vc[0]).all()  # other slots untouched


@pytest.mark.parametrize("T,C,NH", [(1, 8, 1), (5, 24, 3), (70, 64, 4), (130, 48, 3), (200, 256, 4)])
def test_attention_decode_matches_forward_rows(isa, rng, T, C, NH):
    """Prefill half a sequence, decode the rest one token at a time: every decoded row has the forward's bits."""
    hs, Tk = C // NH, -(-T // 16) * 16
    qkv = f32(rng.standard_normal((1, T, 3 * C)))
    out, _ = kernels.attention_forward(qkv, NH)
    ref, _ = R.attention_forward(qkv.astype(np.float64), NH)
    kc, vc = empty_cache(3, NH, hs, Tk)
    P = max(1, T // 2)
    kernels.attention_cache_store(qkv[0, :P].copy(), kc, vc, 2)
    decoded = [kernels.attention_decode(qkv[0, t:t + 1].copy(), kc, vc, np.array([2], np.int32),
                                        np.array([t], np.int32))[0] for t in range(P, T)]
    if decoded:
        np.testing.assert_array_equal(np.stack(decoded), out[0, P:])
        assert rel_err(np.stack(decoded), ref[0, P:]) <= TOL


def test_attention_decode_batch_and_threads(isa, rng):
    """Rows of one step use their own slots and positions; each row as if alone; same bits for every thread count."""
    C, NH, Tk, lengths = 192, 6, 256, (0, 60, 160, 250)  # enough work for 8 threads
    hs = C // NH
    seqs = [f32(rng.standard_normal((n + 1, 3 * C))) for n in lengths]  # the last row of each is the new token
    slots = np.array([3, 0, 2, 1], np.int32)  # not in row order
    pos = np.array(lengths, np.int32)
    kc0, vc0 = empty_cache(4, NH, hs, Tk)
    for s, n, q in zip(slots, lengths, seqs):
        if n:
            kernels.attention_cache_store(q[:n].copy(), kc0, vc0, int(s))
    step = f32(np.stack([q[-1] for q in seqs]))

    def run(nt):
        kc, vc = kc0.copy(), vc0.copy()
        out = kernels.attention_decode(step, kc, vc, slots, pos, num_threads=nt)
        return out, kc, vc

    out = run(1)[0]
    for m, q in enumerate(seqs):
        full, _ = kernels.attention_forward(q[None], NH)
        np.testing.assert_array_equal(out[m], full[0, -1])
    same_for_every_thread_count(run, equal_nan=True)


def test_attention_decode_rejects_bad_input(rng):
    C, NH, Tk = 8, 2, 16
    kc, vc = empty_cache(2, NH, C // NH, Tk, fill=0.0)
    qkv = np.zeros((2, 3 * C), np.float32)
    one = lambda *v: np.array(v, np.int32)
    with pytest.raises(ValueError, match=r"attention_decode: slot must hold distinct cache slots in \[0, 2\) "
                                         r"\(got \[1, 1\]\)"):
        kernels.attention_decode(qkv, kc, vc, one(1, 1), one(0, 0))
    with pytest.raises(ValueError, match=r"slot must hold distinct cache slots in \[0, 2\) \(got \[0, 2\]\)"):
        kernels.attention_decode(qkv, kc, vc, one(0, 2), one(0, 0))
    with pytest.raises(ValueError, match=r"attention_decode: pos must be in \[0, 16\), the cache's capacity"):
        kernels.attention_decode(qkv, kc, vc, one(0, 1), one(0, 16))
    with pytest.raises(TypeError, match=r"attention_decode: pos must be int32"):
        kernels.attention_decode(qkv, kc, vc, one(0, 1), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"qkv must be float32 C-contiguous \[\?, 24\]"):
        kernels.attention_decode(np.zeros((2, 3 * C + 1), np.float32), kc, vc, one(0, 1), one(0, 0))
    with pytest.raises(ValueError, match=r"kcache must be \[S, NH, hs, Tk\] .* Tk a multiple of 16"):
        kernels.attention_decode(qkv, kc[..., :8].copy(), vc[:, :, :8].copy(), one(0, 1), one(0, 0))
    with pytest.raises(ValueError, match=r"vcache must be float32 C-contiguous \[2, 2, 16, 4\]"):
        kernels.attention_decode(qkv, kc, vc[:1].copy(), one(0, 1), one(0, 0))
    with pytest.raises(ValueError, match=r"attention_cache_store: qkv must have 1 to 16 rows"):
        kernels.attention_cache_store(np.zeros((17, 3 * C), np.float32), kc, vc, 0)
    with pytest.raises(ValueError, match=r"attention_cache_store: slot must be an integer in \[0, 2\) \(got 2\)"):
        kernels.attention_cache_store(qkv, kc, vc, 2)


def test_gpt_decode_step(isa, rng):
    """The whole-model step (csrc/kernels/decode.c) built by cllm.model.decoder.Decoder: Model.forward's bits at every row's
    position, the same for every thread count, and its checks."""
    import cllm
    from cllm.model.decoder import Decoder

    cfg = cllm.ModelConfig(vocab_size=70, context_length=128, d_model=192, n_layers=2, n_heads=3)  # work for threads
    model = cllm.Model(cfg, seed=2)
    model.params *= 3
    seqs = [rng.integers(0, 70, n) for n in (128, 9, 90)]
    decoder = Decoder(model, slots=3)
    for b, s in enumerate(seqs):
        decoder.prefill(b, s[:-1])
    step = decoder._step  # kernels.GptDecodeStep over the decoder's weights and caches
    ids, slots, pos = [int(s[-1]) for s in seqs], [0, 1, 2], [s.size - 1 for s in seqs]
    snapshot = [(kcache.copy(), vcache.copy()) for kcache, vcache in decoder._caches]

    def run(nt):
        for (kcache, vcache), (k, v) in zip(decoder._caches, snapshot):
            kcache[...], vcache[...] = k, v
        return (step(ids, slots, pos, num_threads=nt).copy(),)

    logits = run(1)[0]
    for b, s in enumerate(seqs):
        np.testing.assert_array_equal(logits[b], model.forward(s[None])[0, -1])
    same_for_every_thread_count(run, equal_nan=True)
    np.testing.assert_array_equal(step(np.array(ids[1:2]), [1], pos[1:2])[0], logits[1])  # any integer sequences
    with pytest.raises(ValueError, match=r"GptDecodeStep: ids must be integers in \[0, 70\) \(got \[70\]\)"):
        step([70], [0], [0])
    with pytest.raises(ValueError, match=r"GptDecodeStep: slot must hold distinct cache slots \(got \[1, 1\]\)"):
        step([1, 2], [1, 1], [0, 0])
    with pytest.raises(ValueError, match=r"GptDecodeStep: pos must be integers in \[0, 128\) \(got \[128\]\)"):
        step([1], [0], [128])
    with pytest.raises(ValueError, match=r"GptDecodeStep: ids, slot and pos must hold the same number of rows, 1 to 3"):
        step([1, 1, 1, 1], [0, 1, 2, 0], [0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"GptDecodeStep: pos must be integers"):
        step([1], [0], [0.5])
