"""cllm.Model and cllm.optim.AdamW against the float64 reference GPT; determinism across thread counts."""

import math

import numpy as np
import pytest

import cllm
import reference as R
from cllm import ModelConfig
from cllm.model.parameters import is_decayed

from conftest import THREAD_COUNTS, rel_err

TOL = 1e-4


def model_with_reference_weights(config, seed=1, std=0.02):
    params = R.init_params(config, seed=seed, std=std)
    model = cllm.Model(config)
    model.load_state_dict(params)
    return model, {k: v.astype(np.float32).astype(np.float64) for k, v in params.items()}


def check_against_reference(config, B, T, std, rng, ignore=()):
    model, params = model_with_reference_weights(config, std=std)
    idx = rng.integers(0, config.vocab_size, (B, T))
    targets = rng.integers(0, config.vocab_size, (B, T))
    for pos in ignore:
        targets[pos] = -1
    assert rel_err(model.forward(idx), R.forward(params, config, idx)) <= TOL
    loss = model.forward_backward(idx, targets)
    ref_loss, ref_grads = R.loss_and_grads(params, config, idx, targets)
    assert abs(loss - ref_loss) <= TOL * abs(ref_loss)
    grads = model.grads()
    for name, ref in ref_grads.items():
        if name.endswith("c_attn.bias"):  # the key third's gradient is exactly 0 in theory, rounding noise here
            C = config.d_model
            ref, got = np.delete(ref, np.s_[C:2 * C]), np.delete(grads[name], np.s_[C:2 * C])
            assert np.abs(grads[name][C:2 * C]).max() <= 1e-6 * np.abs(got).max()
        else:
            got = grads[name]
        if not ref.any():  # exactly 0 in theory (T = 1: one key, so q and k do not matter), rounding noise here
            assert np.abs(got).max() <= 1e-6, name
            continue
        assert rel_err(got, ref) <= TOL, name


ODD = ModelConfig(vocab_size=37, context_length=13, d_model=24, n_layers=2, n_heads=3)  # hs = 8, V prime


@pytest.mark.parametrize("B,T", [(1, 1), (2, 13), (1, 13), (3, 7)])
def test_odd_config_against_reference(isa, rng, B, T):
    check_against_reference(ODD, B, T, std=0.3, rng=rng, ignore=[(0, 0)] if T > 1 else [])


def test_tiny_preset_against_reference(isa, rng):
    check_against_reference(ModelConfig.preset("tiny"), 2, 64, std=0.1, rng=rng, ignore=[(1, 5), (1, 6)])


def test_small_preset_against_reference(rng):
    check_against_reference(ModelConfig.preset("small"), 2, 256, std=0.02, rng=rng)


LLAMA_ODD = dict(vocab_size=37, context_length=13, d_model=24, n_layers=2, n_heads=3, arch="llama", mlp_hidden=40)


@pytest.mark.parametrize("tie_embeddings", [True, False])
@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("B,T", [(1, 1), (2, 13), (3, 7)])
def test_llama_against_reference(isa, rng, B, T, tie_embeddings, qk_norm):
    config = ModelConfig(**LLAMA_ODD, tie_embeddings=tie_embeddings, qk_norm=qk_norm)
    check_against_reference(config, B, T, std=0.3, rng=rng, ignore=[(0, 0)] if T > 1 else [])


@pytest.mark.parametrize("qk_norm", [False, True])
def test_llama_tiny_preset_against_reference(isa, rng, qk_norm):
    config = ModelConfig.preset("tiny", arch="llama", qk_norm=qk_norm, tie_embeddings=not qk_norm)
    check_against_reference(config, 2, 64, std=0.1, rng=rng, ignore=[(1, 5), (1, 6)])


def test_all_targets_ignored(rng):
    model = cllm.Model(ODD)
    model.grad_buffer.fill(1.0)
    loss = model.forward_backward(rng.integers(0, 37, (2, 5)), np.full((2, 5), -1))
    assert loss == 0.0 and not model.grad_buffer.any()


def test_accumulate_adds_gradients(rng):
    model = cllm.Model(ODD, seed=3)
    idx, targets = rng.integers(0, 37, (2, 9)), rng.integers(0, 37, (2, 9))
    model.forward_backward(idx, targets)
    once = model.grad_buffer.copy()
    model.forward_backward(idx, targets, accumulate=True)
    np.testing.assert_allclose(model.grad_buffer, 2 * once, rtol=1e-6, atol=1e-9)


def run_training(config, nt, steps, seed=0):
    rng = np.random.default_rng(seed)
    with cllm.threads(nt):
        model = cllm.Model(config, seed=seed)
        opt = cllm.optim.AdamW(model, lr=3e-3)
        losses, norms = [], []
        for _ in range(steps):  # counting sequences (t -> t+1 mod V): a pattern to learn
            idx = (rng.integers(0, config.vocab_size, (3, 1)) + np.arange(config.context_length)) % config.vocab_size
            losses.append(model.forward_backward(idx, (idx + 1) % config.vocab_size))
            norms.append(opt.step())
        return model.params.copy(), losses, norms, model.grad_buffer.copy()


@pytest.mark.parametrize("arch", [{}, dict(arch="llama", qk_norm=True, tie_embeddings=False)])
def test_training_bitwise_identical_across_thread_counts_and_runs(arch):
    config = ModelConfig(vocab_size=101, context_length=70, d_model=48, n_layers=2, n_heads=3, **arch)
    first = run_training(config, THREAD_COUNTS[0], 20)
    assert first[1][-1] < first[1][0]  # it learns something
    for nt in THREAD_COUNTS[1:] + (1,):  # ... and the first count again: a second run
        other = run_training(config, nt, 20)
        assert np.array_equal(first[0], other[0]) and first[1] == other[1] and first[2] == other[2]
        assert np.array_equal(first[3], other[3])


# --- parameters and validation -------------------------------------------------------------------------

@pytest.mark.parametrize("config", [ModelConfig.preset("tiny"), ModelConfig.preset("tiny", arch="llama"),
                                    ModelConfig.preset("tiny", arch="llama", qk_norm=True, tie_embeddings=False)])
def test_state_dict_names_shapes_and_one_buffer(config):
    model = cllm.Model(config)
    sd = model.state_dict()
    assert list(sd) == list(R.param_shapes(config))
    for name, shape in R.param_shapes(config).items():
        assert sd[name].shape == tuple(shape) and sd[name].dtype == np.float32
        assert np.shares_memory(sd[name], model.params)
        assert np.shares_memory(model.grads()[name], model.grad_buffer)
    assert model.n_params == config.n_params == sum(a.size for a in sd.values())


def test_llama_stacks_are_views_over_their_members():
    """q, k, v (and gate, up) lie back to back: the stacked GEMM's weight and gradient are views over them."""
    config = ModelConfig(37, 13, 24, 2, 3, arch="llama", mlp_hidden=40, qk_norm=True)
    model = cllm.Model(config, seed=2)
    layer = model._weights["layers"][1]
    sd = model.state_dict()
    p = "model.layers.1."
    qkv = np.concatenate([sd[p + f"self_attn.{n}_proj.weight"] for n in "qkv"])
    assert np.array_equal(layer["qkv_proj"][0], qkv) and np.shares_memory(layer["qkv_proj"][0], model.params)
    gate_up = np.concatenate([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]])
    assert np.array_equal(layer["gate_up_proj"][0], gate_up)
    assert model.state_dict()[p + "self_attn.q_norm.weight"].shape == (8,)
    assert not sd[p + "self_attn.o_proj.weight"].any() and not sd[p + "mlp.down_proj.weight"].any()  # zero init
    assert (sd[p + "input_layernorm.weight"] == 1).all()


def test_llama_config():
    cfg = ModelConfig.preset("mini", arch="llama")
    assert cfg.hidden_size == 512 and ModelConfig.preset("small", arch="llama").hidden_size == 704
    assert cfg.to_dict()["arch"] == "llama" and "arch" not in ModelConfig.preset("mini").to_dict()
    with pytest.raises(ValueError, match="qk_norm is an option of arch='llama'"):
        ModelConfig.preset("tiny", qk_norm=True)
    with pytest.raises(ValueError, match="arch must be one of"):
        ModelConfig.preset("tiny", arch="mamba")
    with pytest.raises(ValueError, match="even head size"):
        ModelConfig(37, 13, 9, 1, 3, arch="llama")
    with pytest.raises(TypeError, match="tie_embeddings must be True or False"):
        ModelConfig.preset("tiny", arch="llama", tie_embeddings=1)


def test_activation_buffers_are_disjoint_aligned_views_of_one_allocation():
    from cllm.kernels import float32_views
    from cllm.model.parameters import activation_shapes

    layer, once, scratch = activation_shapes(ModelConfig.preset("tiny"), 3, 17)  # odd sizes: ragged ends
    groups = float32_views([layer, layer, once, scratch])
    arrays = [a for group in groups for a in group.values()]
    assert [{n: a.shape for n, a in g.items()} for g in groups] == [layer, layer, once, scratch]
    base = arrays[0].base
    assert all(a.base is base and a.dtype == np.float32 and a.flags.c_contiguous for a in arrays)
    starts = sorted((a.ctypes.data, a.nbytes) for a in arrays)
    assert starts[0][0] % (2 << 20) == 0  # the first on a huge-page boundary
    assert all(s % 64 == 0 for s, _ in starts)  # every one on a cache line
    assert all(s + n <= t for (s, n), (t, _) in zip(starts, starts[1:]))  # none overlaps the next
    for i, a in enumerate(arrays):  # writing one leaves the others as they were
        a[...] = i
    assert all((a == i).all() for i, a in enumerate(arrays))


def test_initialisation():
    config = ModelConfig(vocab_size=500, context_length=64, d_model=128, n_layers=4, n_heads=4)
    sd = cllm.Model(config, seed=7).state_dict()
    assert abs(sd["transformer.wte.weight"].std() - 0.02) < 0.001
    assert abs(sd["transformer.h.0.mlp.c_fc.weight"].std() - 0.02) < 0.001
    assert abs(sd["transformer.h.0.attn.c_proj.weight"].std() - 0.02 / math.sqrt(8)) < 0.0005
    assert not sd["transformer.h.1.attn.c_attn.bias"].any()
    assert (sd["transformer.ln_f.weight"] == 1).all() and not sd["transformer.ln_f.bias"].any()
    assert np.array_equal(cllm.Model(config, seed=7).params, cllm.Model(config, seed=7).params)
    assert not np.array_equal(cllm.Model(config, seed=7).params, cllm.Model(config, seed=8).params)


def test_load_state_dict_checks_names_and_shapes():
    model = cllm.Model(ODD)
    sd = {k: v.copy() for k, v in model.state_dict().items()}
    sd["transformer.ln_f.bias"] = np.zeros(5)
    with pytest.raises(ValueError, match=r"transformer.ln_f.bias must have shape \[24\] \(got \[5\]\)"):
        model.load_state_dict(sd)
    del sd["transformer.ln_f.bias"]
    with pytest.raises(ValueError, match="missing .*transformer.ln_f.bias"):
        model.load_state_dict(sd)


def test_model_config_validation():
    with pytest.raises(ValueError, match=r"d_model must be divisible by n_heads \(got d_model=10, n_heads=3\)"):
        ModelConfig(100, 16, 10, 2, 3)
    with pytest.raises(ValueError, match=r"vocab_size must be an integer >= 1 \(got 0\)"):
        ModelConfig(0, 16, 8, 2, 2)
    with pytest.raises(ValueError, match=r"n_layers must be an integer >= 1 \(got 2.5\)"):
        ModelConfig(10, 16, 8, 2.5, 2)
    with pytest.raises(ValueError, match="preset: name must be one of"):
        ModelConfig.preset("huge")
    assert ModelConfig.preset("small") == ModelConfig(8192, 256, 256, 4, 4)


@pytest.mark.parametrize("idx,match", [
    (np.array([[1, 2, 37]]), r"idx\[0, 2\] = 37 is outside \[0, 37\)"),
    (np.array([[1, -1]]), r"idx\[0, 1\] = -1 is outside \[0, 37\)"),
    (np.zeros((1, 14), int), r"1 <= T <= context_length = 13 \(got \[1, 14\]\)"),
    (np.zeros((1, 0), int), r"got \[1, 0\]"),
    (np.zeros(5, int), r"idx must be an integer array \[B, T\]"),
    (np.zeros((1, 3)), r"idx must be an integer array \[B, T\] \(got float64 \[1, 3\]\)"),
])
def test_bad_ids(idx, match):
    model = cllm.Model(ODD)
    with pytest.raises(ValueError, match=match):
        model.forward(idx)
    with pytest.raises(ValueError, match=match):
        model.forward_backward(idx, np.zeros_like(idx))


def test_any_integer_dtype(rng):
    model = cllm.Model(ODD)
    idx = rng.integers(0, 37, (2, 6))
    ref = model.forward(idx)
    for dtype in (np.int8, np.uint8, np.int16, np.uint32, np.int64):
        np.testing.assert_array_equal(model.forward(idx.astype(dtype)), ref)
    with pytest.raises(ValueError, match=r"targets\[1, 2\] = -2 is outside -1 or \[0, 37\)"):
        bad = np.zeros((2, 6), int)
        bad[1, 2] = -2
        model.forward_backward(idx, bad)
    with pytest.raises(ValueError, match=r"targets must have idx's shape"):
        model.forward_backward(idx, np.zeros((2, 5), int))


# --- AdamW -----------------------------------------------------------------------------------------------

def adamw_reference(p, g, m, v, step, lr, b1, b2, eps, wd, decayed, clip):
    """PyTorch's AdamW with clip_grad_norm_, in float64."""
    norm = math.sqrt(float((g.astype(np.float64) ** 2).sum()))
    g = g * min(1.0, clip / (norm + 1e-6))
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = np.where(decayed, p * (1 - lr * wd), p)
    p = p - lr / (1 - b1 ** step) * m / (np.sqrt(v) / math.sqrt(1 - b2 ** step) + eps)
    return p, m, v, norm


def test_adamw_matches_pytorch_formula(rng):
    model = cllm.Model(ODD, seed=2)
    opt = cllm.optim.AdamW(model, lr=1e-2, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.3, grad_clip=0.5)
    seg_start, decay = model.decay_segments()
    decayed = np.repeat(decay.astype(bool), np.diff(seg_start))
    p, m, v = (model.params.astype(np.float64), np.zeros(model.params.size), np.zeros(model.params.size))
    for step in range(1, 6):
        model.forward_backward(rng.integers(0, 37, (2, 13)), rng.integers(0, 37, (2, 13)))
        p, m, v, norm = adamw_reference(p, model.grad_buffer.astype(np.float64), m, v, step, 1e-2, 0.8, 0.9, 1e-6,
                                        0.3, decayed, 0.5)
        assert math.isclose(opt.step(), norm, rel_tol=1e-9)
        assert rel_err(model.params, p) <= 1e-5
    sd = model.state_dict()
    names = list(sd)
    assert decay.tolist() == [is_decayed(n) for n in names]
    assert is_decayed("transformer.wte.weight") and not is_decayed("transformer.wpe.weight")
    assert not is_decayed("transformer.h.0.ln_1.weight")
    assert not is_decayed("transformer.h.0.attn.c_attn.bias")


def test_adamw_validation():
    model = cllm.Model(ODD)
    for kwargs, match in [({"lr": 0}, "lr must be a number in"), ({"betas": (0.9, 1.0)}, "betas must be < 1"),
                          ({"eps": -1}, "eps must be"), ({"weight_decay": float("nan")}, "weight_decay must be"),
                          ({"betas": 0.9}, "betas must be a pair")]:
        with pytest.raises(ValueError, match=match):
            cllm.optim.AdamW(model, **kwargs)
