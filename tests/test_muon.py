"""cllm.optim.Muon: Newton–Schulz against float64, one step against a float64 transcription of torch.optim.Muon's
update (AdamW for the other tensors), bitwise across thread counts, its state in checkpoints."""

import math

import numpy as np
import pytest

import cllm
from cllm import ModelConfig
from cllm.model.parameters import is_decayed
from cllm.optim.muon import NS_COEFFICIENTS, is_hidden_matrix, newton_schulz

from conftest import THREAD_COUNTS, rel_err

CONFIGS = {"gpt2": ModelConfig(vocab_size=37, context_length=13, d_model=24, n_layers=2, n_heads=3),
           "llama": ModelConfig(37, 13, 24, 2, 3, arch="llama", mlp_hidden=40, qk_norm=True, tie_embeddings=False)}


def ns64(g, steps=5, eps=1e-7):
    """torch.optim.Muon's _zeropower_via_newtonschulz in float64 (torch runs it in bfloat16)."""
    a, b, c = NS_COEFFICIENTS
    x = g.astype(np.float64)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / max(np.linalg.norm(x), eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


@pytest.mark.parametrize("shape", [(24, 24), (72, 24), (24, 96), (5, 37), (256, 1024)])
def test_newton_schulz_against_float64(rng, shape):
    g = rng.standard_normal(shape).astype(np.float32)
    out = newton_schulz(g)
    assert out.shape == shape and rel_err(out, ns64(g)) <= 1e-5
    sv = np.linalg.svd(out.astype(np.float64), compute_uv=False)
    assert 0.5 < sv.min() and sv.max() < 1.5  # near-orthogonal: singular values in the iteration's band
    for nt in THREAD_COUNTS:
        assert np.array_equal(newton_schulz(g, num_threads=nt), out)


def reference_step(params, grads, bufs, m, v, step, *, lr, adamw_lr, momentum, wd, adamw_wd, betas, eps, clip):
    """float64: clip by the global norm, then torch.optim.Muon's _single_tensor_muon on the hidden matrices and
    torch.optim.AdamW on the rest."""
    norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
    scale = min(1.0, clip / (norm + 1e-6))
    out = {}
    for name, p in params.items():
        g = grads[name] * scale
        if is_hidden_matrix(name, p.shape):
            bufs[name] = bufs[name] + (1 - momentum) * (g - bufs[name])  # buf.lerp_(grad, 1 - momentum)
            update = g + momentum * (bufs[name] - g)  # grad.lerp(buf, momentum)
            A, B = p.shape
            out[name] = p * (1 - lr * wd) - lr * math.sqrt(max(1, A / B)) * ns64(update)
        else:
            b1, b2 = betas
            m[name] = b1 * m[name] + (1 - b1) * g
            v[name] = b2 * v[name] + (1 - b2) * g * g
            decay = adamw_wd if is_decayed(name) else 0.0
            denom = np.sqrt(v[name]) / math.sqrt(1 - b2 ** step) + eps
            out[name] = p * (1 - adamw_lr * decay) - adamw_lr / (1 - b1 ** step) * m[name] / denom
    return out


@pytest.mark.parametrize("arch", CONFIGS)
def test_muon_steps_match_torch_formula(arch, rng):
    config = CONFIGS[arch]
    model = cllm.Model(config, seed=1)
    hyper = dict(lr=0.02, adamw_lr=3e-3, momentum=0.95, wd=0.1, adamw_wd=0.1, betas=(0.9, 0.95), eps=1e-8, clip=1.0)
    opt = cllm.optim.Muon(model, lr=hyper["lr"], momentum=hyper["momentum"], weight_decay=hyper["wd"],
                          adamw_lr=hyper["adamw_lr"], betas=hyper["betas"], eps=hyper["eps"],
                          adamw_weight_decay=hyper["adamw_wd"], grad_clip=hyper["clip"])
    params = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    zeros = lambda: {k: np.zeros_like(v) for k, v in params.items()}
    bufs, m, v = zeros(), zeros(), zeros()
    hidden = [n for n, p in params.items() if is_hidden_matrix(n, p.shape)]
    assert hidden and all("embed" not in n and "wte" not in n and "lm_head" not in n for n in hidden)
    for step in (1, 2, 3):  # momentum and bias corrections at work
        idx, targets = rng.integers(0, 37, (2, 13)), rng.integers(0, 37, (2, 13))
        model.forward_backward(idx, targets)
        grads = {k: g.astype(np.float64) for k, g in model.grads().items()}
        params = reference_step(params, grads, bufs, m, v, step, **hyper)
        opt.step()
        for name, ref in params.items():
            got = model.state_dict()[name]
            assert np.abs(got - ref).max() <= 1e-5 * max(np.abs(ref).max(), 1e-3), (step, name)
        params = {k: w.astype(np.float64) for k, w in model.state_dict().items()}  # follow ours: no drift
    # the schedule's rate scales both: step(lr) moves Muon by lr / adamw_lr of its own rate
    before = model.params.copy()
    model.forward_backward(idx, targets)
    opt.step(lr=0.0)
    assert np.array_equal(model.params, before)


def test_muon_bitwise_across_thread_counts(rng):
    idx, targets = rng.integers(0, 37, (3, 13)), rng.integers(0, 37, (3, 13))

    def run(nt):
        with cllm.threads(nt):
            model = cllm.Model(CONFIGS["llama"], seed=2)
            opt = cllm.optim.Muon(model)
            for _ in range(3):
                model.forward_backward(idx, targets)
                opt.step()
            return model.params.copy(), opt.m.copy(), opt.v.copy()

    first = run(THREAD_COUNTS[0])
    for nt in THREAD_COUNTS[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(first, run(nt)))


def test_muon_state_in_checkpoint(tmp_path, rng):
    model = cllm.Model(CONFIGS["gpt2"], seed=3)
    opt = cllm.optim.Muon(model, lr=0.03)
    idx, targets = rng.integers(0, 37, (2, 13)), rng.integers(0, 37, (2, 13))
    model.forward_backward(idx, targets)
    opt.step()
    model.save(tmp_path / "c.cllm", optimizer=opt, trainer_state={"step": 1})
    f = cllm.model.read(tmp_path / "c.cllm")
    assert f.optimizer["type"] == "Muon" and f.optimizer["hyperparameters"]["lr"] == 0.03
    resumed = cllm.optim.Muon(f.model, lr=0.03)
    resumed.load_state_dict(f.optimizer)
    for m_, o in ((model, opt), (f.model, resumed)):
        m_.forward_backward(idx, targets)
        o.step()
    assert np.array_equal(model.params, f.model.params) and np.array_equal(opt.m, resumed.m)


def test_muon_validation():
    model = cllm.Model(CONFIGS["gpt2"])
    with pytest.raises(ValueError, match="Muon: momentum must be < 1"):
        cllm.optim.Muon(model, momentum=1.0)
    with pytest.raises(ValueError, match="Muon: lr must be a finite number > 0"):
        cllm.optim.Muon(model, lr=0)
    with pytest.raises(TypeError, match="newton_schulz: g must be a float32 matrix"):
        newton_schulz(np.zeros(3, np.float32))
