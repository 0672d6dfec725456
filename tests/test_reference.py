"""The float64 reference GPT (tests/reference.py) checked against itself: analytic gradients against central
finite differences, the forward against a naive loop-by-loop GPT-2, ignored targets, causality."""

import math

import numpy as np
import pytest

import reference
from cllm.model.config import ModelConfig

CONFIG = ModelConfig(vocab_size=11, context_length=5, d_model=8, n_layers=2, n_heads=2)
LLAMA = {  # hs 4: QK-norm over 4 values; mlp_hidden odd so that gate and up are of unequal-looking widths
    "llama tied qk_norm": ModelConfig(11, 5, 8, 2, 2, arch="llama", mlp_hidden=7, qk_norm=True, norm_eps=1e-2,
                                      rope_theta=100.0),
    "llama untied": ModelConfig(11, 5, 8, 2, 2, arch="llama", mlp_hidden=12, tie_embeddings=False),
}
STD = 0.3  # larger than the training init, so that attention is far from uniform and every path matters
FD_EPS = 1e-5
FD_TOL = 1e-6  # relative, plus FD_ATOL for the difference quotient's rounding (about 1e-16·loss / FD_EPS)
FD_ATOL = 1e-9


def batch(B, T, seed, ignore=()):
    """Token ids and targets [B, T]; positions in `ignore` (pairs (b, t)) get target -1."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, CONFIG.vocab_size, size=(B, T))
    idx[0, 0] = idx[-1, -1]  # a repeated token: its embedding row collects two gradients
    targets = rng.integers(0, CONFIG.vocab_size, size=(B, T))
    for b, t in ignore:
        targets[b, t] = -1
    return idx, targets


def loss_of(params, idx, targets, config=CONFIG):
    """Mean cross-entropy from forward()'s logits, written independently of the reference's own."""
    logits = reference.forward(params, config, idx)
    valid = targets != -1
    if not valid.any():
        return 0.0
    logsumexp = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    picked = np.take_along_axis(logits, np.maximum(targets, 0)[..., None], axis=-1)[..., 0]
    return float(((logsumexp - picked) * valid).sum() / valid.sum())


def numerical_grad(params, idx, targets, name, flat_indices, config=CONFIG):
    values = params[name].reshape(-1)  # a view: editing it edits params[name]
    out = []
    for i in flat_indices:
        saved = values[i]
        values[i] = saved + FD_EPS
        plus = loss_of(params, idx, targets, config)
        values[i] = saved - FD_EPS
        minus = loss_of(params, idx, targets, config)
        values[i] = saved
        out.append((plus - minus) / (2 * FD_EPS))
    return np.array(out)


CASES = {  # name -> (B, T, ignored positions)
    "some ignored": (2, 4, [(0, 1), (1, 3)]),
    "T = context_length": (2, CONFIG.context_length, []),
    "T = 1": (2, 1, [(1, 0)]),
    "B = 1": (1, 3, []),
}


def check_gradients(config, B, T, ignore, seed):
    idx, targets = batch(B, T, seed=seed, ignore=ignore)
    params = reference.init_params(config, seed=1, std=STD)
    loss, grads = reference.loss_and_grads(params, config, idx, targets)
    assert loss == pytest.approx(loss_of(params, idx, targets, config), rel=1e-12)
    assert list(grads) == list(params)
    for name, analytic in grads.items():
        assert analytic.shape == params[name].shape and analytic.dtype == np.float64, name
        numeric = numerical_grad(params, idx, targets, name, range(analytic.size), config)  # every element: cheap
        got = analytic.reshape(-1)
        excess = np.abs(got - numeric) - (FD_TOL * np.maximum(np.abs(got), np.abs(numeric)) + FD_ATOL)
        i = excess.argmax()
        assert excess[i] <= 0, f"{name}[{i}]: analytic {got[i]:.10e}, numerical {numeric[i]:.10e}"


@pytest.mark.parametrize("case", CASES)
def test_gradients_match_finite_differences(case):
    check_gradients(CONFIG, *CASES[case], seed=len(case))


@pytest.mark.parametrize("arch", LLAMA)
@pytest.mark.parametrize("case", ["some ignored", "T = context_length"])
def test_llama_gradients_match_finite_differences(arch, case):
    check_gradients(LLAMA[arch], *CASES[case], seed=len(case))


def test_unused_position_rows_get_zero_gradient():
    idx, targets = batch(2, 3, seed=3)
    _, grads = reference.loss_and_grads(reference.init_params(CONFIG, std=STD), CONFIG, idx, targets)
    dwpe = grads["transformer.wpe.weight"]
    assert not dwpe[3:].any() and np.abs(dwpe[:3]).min(axis=1).max() > 0


def test_all_targets_ignored_gives_zero_loss_and_zero_grads():
    idx, _ = batch(2, 4, seed=4)
    targets = np.full_like(idx, -1)
    params = reference.init_params(CONFIG, std=STD)
    loss, grads = reference.loss_and_grads(params, CONFIG, idx, targets)
    assert loss == 0.0
    assert set(grads) == set(params)
    for name, g in grads.items():
        assert g.shape == params[name].shape and not g.any(), name


def test_ignored_positions_do_not_count():
    idx, targets = batch(2, 4, seed=5, ignore=[(0, 0), (1, 2)])
    params = reference.init_params(CONFIG, std=STD)
    loss, grads = reference.loss_and_grads(params, CONFIG, idx, targets)
    other = targets.copy()
    other[0, 0], other[1, 2] = 3, 7  # what the ignored positions would have been; now drop them by weight
    logits = reference.forward(params, CONFIG, idx)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    per_position = -np.take_along_axis(logp, other[..., None], axis=-1)[..., 0]
    assert loss == pytest.approx(per_position[targets != -1].mean(), rel=1e-12)


def test_forward_logits_are_the_ones_loss_and_grads_uses(monkeypatch):
    idx, targets = batch(2, 5, seed=6)
    params = reference.init_params(CONFIG, std=STD)
    seen = []
    original = reference.crossentropy_forward

    def spy(logits, targets):
        seen.append(logits.copy())
        return original(logits, targets)

    monkeypatch.setattr(reference, "crossentropy_forward", spy)
    reference.loss_and_grads(params, CONFIG, idx, targets)
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], reference.forward(params, CONFIG, idx))


def test_attention_is_causal():
    idx, targets = batch(2, 5, seed=8)
    params = reference.init_params(CONFIG, std=STD)
    logits = reference.forward(params, CONFIG, idx)
    for t in range(1, 5):
        changed = idx.copy()
        changed[:, t] = (changed[:, t] + 1) % CONFIG.vocab_size
        other = reference.forward(params, CONFIG, changed)
        np.testing.assert_allclose(other[:, :t], logits[:, :t], rtol=1e-13, atol=1e-13)
        assert np.abs(other[:, t:] - logits[:, t:]).min(axis=-1).max() > 1e-6  # later positions do see it
    # and no gradient flows from a position's loss into a later token
    only_first = np.full_like(targets, -1)
    only_first[:, 0] = targets[:, 0]
    _, grads = reference.loss_and_grads(params, CONFIG, idx, only_first)
    assert not grads["transformer.wpe.weight"][1:].any()


def naive_forward(params, config, idx):
    """GPT-2 written loop by loop from its definition, sharing no code with the reference."""
    p, NH, C = params, config.n_heads, config.d_model
    hs = C // NH

    def ln(x, name):
        return (x - x.mean()) / math.sqrt(x.var() + 1e-5) * p[name + ".weight"] + p[name + ".bias"]

    def linear(x, name):
        return p[name + ".weight"] @ x + p[name + ".bias"]

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    B, T = idx.shape
    out = np.zeros((B, T, config.vocab_size))
    for b in range(B):
        xs = [p["transformer.wte.weight"][idx[b, t]] + p["transformer.wpe.weight"][t] for t in range(T)]
        for i in range(config.n_layers):
            h = f"transformer.h.{i}."
            qkv = [linear(ln(x, h + "ln_1"), h + "attn.c_attn") for x in xs]
            q, k, v = ([row[j * C:(j + 1) * C] for row in qkv] for j in range(3))
            ys = []
            for t in range(T):
                y = np.zeros(C)
                for head in range(NH):
                    s = slice(head * hs, (head + 1) * hs)
                    scores = np.array([q[t][s] @ k[u][s] / math.sqrt(hs) for u in range(t + 1)])
                    w = np.exp(scores - scores.max())
                    w /= w.sum()
                    y[s] = sum(w[u] * v[u][s] for u in range(t + 1))
                ys.append(y)
            xs = [x + linear(y, h + "attn.c_proj") for x, y in zip(xs, ys)]
            xs = [x + linear(gelu(linear(ln(x, h + "ln_2"), h + "mlp.c_fc")), h + "mlp.c_proj") for x in xs]
        for t in range(T):
            out[b, t] = p["transformer.wte.weight"] @ ln(xs[t], "transformer.ln_f")
    return out


@pytest.mark.parametrize("n_heads,mlp_ratio", [(1, 4), (2, 4), (4, 2)])
def test_forward_matches_naive_gpt2(n_heads, mlp_ratio):
    config = ModelConfig(vocab_size=11, context_length=5, d_model=8, n_layers=2, n_heads=n_heads, mlp_ratio=mlp_ratio)
    params = reference.init_params(config, seed=2, std=STD)
    idx = np.random.default_rng(9).integers(0, 11, size=(2, 5))
    np.testing.assert_allclose(reference.forward(params, config, idx), naive_forward(params, config, idx),
                               rtol=1e-12, atol=1e-12)


def test_init_params_names_shapes_and_seed():
    config = ModelConfig.preset("tiny")
    params = reference.init_params(config)
    assert list(params) == list(reference.param_shapes(config))
    assert sum(v.size for v in params.values()) == config.n_params
    assert all(v.dtype == np.float64 and v.shape == reference.param_shapes(config)[k] for k, v in params.items())
    assert all(v.std() > 0 for v in params.values())  # biases and LayerNorm parameters are not constants
    again = reference.init_params(config, seed=0)
    assert all(np.array_equal(params[k], again[k]) for k in params)
    other = reference.init_params(config, seed=1)
    assert not np.array_equal(params["transformer.wte.weight"], other["transformer.wte.weight"])


def test_tiny_preset_runs_and_starts_near_uniform():
    config = ModelConfig.preset("tiny")
    params = reference.init_params(config)
    idx = np.random.default_rng(10).integers(0, config.vocab_size, size=(2, config.context_length))
    logits = reference.forward(params, config, idx)
    assert logits.shape == (2, config.context_length, config.vocab_size) and logits.dtype == np.float64
    loss, _ = reference.loss_and_grads(params, config, idx, np.roll(idx, -1, axis=1))
    assert abs(loss - math.log(config.vocab_size)) < 0.1


def test_bad_input_is_rejected():
    params = reference.init_params(CONFIG)
    with pytest.raises(ValueError, match="T <= 5"):
        reference.forward(params, CONFIG, np.zeros((1, 6), dtype=np.int64))
    with pytest.raises(ValueError, match="idx values"):
        reference.forward(params, CONFIG, np.full((1, 2), 11))
    with pytest.raises(ValueError, match="targets values"):
        reference.loss_and_grads(params, CONFIG, np.zeros((1, 2), dtype=np.int64), np.full((1, 2), -2))


def assert_gradients(loss, pairs):
    """Each (gradient, array) pair: the analytic gradient of loss() with respect to the array (changed in place
    and restored) against central differences."""
    for grad, array in pairs:
        for i in np.ndindex(array.shape):
            saved = array[i]
            array[i] = saved + FD_EPS
            up = loss()
            array[i] = saved - FD_EPS
            down = loss()
            array[i] = saved
            numeric = (up - down) / (2 * FD_EPS)
            assert abs(grad[i] - numeric) <= FD_TOL * abs(numeric) + FD_ATOL, (i, grad[i], numeric)


def test_rmsnorm_gradients_match_finite_differences():
    """The reference RMSNorm's backward against central differences of a random linear function of its output."""
    rng = np.random.default_rng(3)
    x, w, probe = rng.standard_normal((3, 7)), rng.standard_normal(7), rng.standard_normal((3, 7))
    eps = 1e-2  # large enough to matter in the derivative
    dx, dw = reference.rmsnorm_backward(probe, reference.rmsnorm_forward(x, w, eps)[1], w)
    assert_gradients(lambda: float((reference.rmsnorm_forward(x, w, eps)[0] * probe).sum()), ((dx, x), (dw, w)))


def test_swiglu_gradients_match_finite_differences():
    rng = np.random.default_rng(5)
    gu, probe = rng.standard_normal((3, 8)) * 2, rng.standard_normal((3, 4))
    dgu = reference.swiglu_backward(probe, gu)
    assert_gradients(lambda: float((reference.swiglu_forward(gu) * probe).sum()), ((dgu, gu),))


@pytest.mark.parametrize("qk_norm", [False, True])
def test_qk_rotary_gradients_match_finite_differences(qk_norm):
    """QK-norm then RoPE on q and k (v passed through): the backward against central differences."""
    rng = np.random.default_rng(6)
    NH, hs, M = 2, 6, 3
    qkv, probe, pos = rng.standard_normal((M, 3 * NH * hs)), rng.standard_normal((M, 3 * NH * hs)), np.array([0, 4, 9])
    norms = {"q_norm": 1 + 0.3 * rng.standard_normal(hs), "k_norm": 1 + 0.3 * rng.standard_normal(hs)} \
        if qk_norm else {}
    forward = lambda: reference.qk_rotary_forward(qkv, NH, pos, **norms, eps=1e-2, theta=100.0)
    dqkv, dnorms = reference.qk_rotary_backward(probe, NH, pos, forward()[1], **norms, theta=100.0)
    assert_gradients(lambda: float((forward()[0] * probe).sum()), ((dqkv, qkv), *zip(dnorms, norms.values())))


def test_rope_backward_is_the_gradient_and_the_rotation_matches_hf():
    """The reference RoPE's backward against central differences, and its forward against HF Llama's formula
    x·cos + rotate_half(x)·sin written out."""
    rng = np.random.default_rng(4)
    x, probe, pos = rng.standard_normal((3, 2, 6)), rng.standard_normal((3, 2, 6)), np.array([0, 5, 17])
    dx = reference.rope_backward(probe, pos, 100.0)
    assert_gradients(lambda: float((reference.rope_forward(x, pos, 100.0) * probe).sum()), ((dx, x),))
    inv_freq = 1.0 / 100.0 ** (np.arange(0, 6, 2) / 6)
    emb = np.concatenate([pos[:, None] * inv_freq] * 2, axis=-1)[:, None, :]  # HF: cat((freqs, freqs), -1)
    rotate_half = np.concatenate([-x[..., 3:], x[..., :3]], axis=-1)
    np.testing.assert_allclose(reference.rope_forward(x, pos, 100.0), x * np.cos(emb) + rotate_half * np.sin(emb),
                               rtol=1e-12, atol=1e-12)
