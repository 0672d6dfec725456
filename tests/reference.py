"""GPT-2 in float64 numpy with a hand-written backward pass: the oracle the C kernels and cllm.Model are tested against.

Every layer is a `<layer>_forward` / `<layer>_backward` pair; the model runs them in order and the backward in
exact reverse. Dimension names: B batch, T time, C channels (d_model), NH heads, hs = C/NH head size,
OC output channels, V vocabulary. Parameters use the nanoGPT state-dict names and PyTorch nn.Linear layouts
(weight [OC, C], y = x·Wᵀ + b), the same as cllm.Model.state_dict().
"""

import numpy as np

__all__ = ["param_shapes", "init_params", "forward", "loss_and_grads"]

LN_EPS = 1e-5
GELU_SCALE = np.sqrt(2.0 / np.pi)


# ----------------------------------------------------------------------------------------------------------------
# layers


def encoder_forward(wte, wpe, idx):
    # wte is (V,C), wpe is (maxT,C), idx is (B,T) -> out is (B,T,C)
    T = idx.shape[1]
    return wte[idx] + wpe[:T]


def encoder_backward(dout, idx, wte_shape, wpe_shape):
    # dout is (B,T,C), idx is (B,T) -> dwte is (V,C), dwpe is (maxT,C)
    T = idx.shape[1]
    dwte = np.zeros(wte_shape)
    np.add.at(dwte, idx, dout)  # a token seen twice gets both contributions
    dwpe = np.zeros(wpe_shape)
    dwpe[:T] = dout.sum(axis=0)
    return dwte, dwpe


def layernorm_forward(x, weight, bias):
    # x is (B,T,C), weight and bias are (C,) -> out is (B,T,C); cache holds xhat (B,T,C) and rstd (B,T,1)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased, as PyTorch
    rstd = 1.0 / np.sqrt(var + LN_EPS)
    xhat = (x - mean) * rstd
    return xhat * weight + bias, (xhat, rstd)


def layernorm_backward(dout, cache, weight):
    # dout is (B,T,C), weight is (C,) -> dx is (B,T,C), dweight and dbias are (C,)
    xhat, rstd = cache
    dweight = (dout * xhat).sum(axis=(0, 1))
    dbias = dout.sum(axis=(0, 1))
    dxhat = dout * weight
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, dweight, dbias


def rmsnorm_forward(x, weight, eps=1e-6):
    # x is (..., C), weight is (C,) -> out is (..., C); cache holds x and rstd (..., 1)
    rstd = 1.0 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
    return x * rstd * weight, (x, rstd)


def rmsnorm_backward(dout, cache, weight):
    # dout is (..., C), weight is (C,) -> dx is (..., C), dweight is (C,)
    x, rstd = cache
    xhat = x * rstd
    dweight = (dout * xhat).reshape(-1, x.shape[-1]).sum(axis=0)
    dxhat = dout * weight
    dx = rstd * (dxhat - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, dweight


def rope_forward(x, pos, theta=10_000.0, inverse=False):
    # x is (M,H,hs), pos is (M,) -> out is (M,H,hs): HF Llama's x·cos + rotate_half(x)·sin, rotate_half(x) =
    # (-x[hs/2:], x[:hs/2]), at angles pos·theta^(-2i/hs); inverse rotates back (the backward of a rotation)
    half = x.shape[-1] // 2
    angles = np.asarray(pos, np.float64)[:, None] * theta ** (-np.arange(0, 2 * half, 2) / (2 * half))
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :] * (-1 if inverse else 1)
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def rope_backward(dout, pos, theta=10_000.0):
    # dout is (M,H,hs) -> dx is (M,H,hs)
    return rope_forward(dout, pos, theta, inverse=True)


def swiglu_forward(gu):
    # gu is (..., 2H): [gate | up] -> out is (..., H) = silu(gate)·up, silu(g) = g·σ(g)
    half = gu.shape[-1] // 2
    g, u = gu[..., :half], gu[..., half:]
    return g / (1.0 + np.exp(-g)) * u


def swiglu_backward(dout, gu):
    # dout is (..., H), gu is (..., 2H) -> dgu is (..., 2H)
    half = gu.shape[-1] // 2
    g, u = gu[..., :half], gu[..., half:]
    s = 1.0 / (1.0 + np.exp(-g))
    return np.concatenate([dout * u * s * (1.0 + g * (1.0 - s)), dout * g * s], axis=-1)


def qk_rotary_forward(qkv, NH, pos, q_norm=None, k_norm=None, eps=1e-6, theta=10_000.0):
    # qkv is (M, 3C) rows of q, k, v (heads contiguous) -> out (M, 3C): q and k per head through RMSNorm with
    # q_norm / k_norm (hs,) when given (QK-norm), then RoPE at pos (M,); v unchanged. cache for the backward.
    M = qkv.shape[0]
    q, k, v = (a.reshape(M, NH, -1) for a in np.split(qkv, 3, axis=-1))
    caches = []
    if q_norm is not None:
        (q, qc), (k, kc) = rmsnorm_forward(q, q_norm, eps), rmsnorm_forward(k, k_norm, eps)
        caches = [qc, kc]
    q, k = rope_forward(q, pos, theta), rope_forward(k, pos, theta)
    return np.concatenate([a.reshape(M, -1) for a in (q, k, v)], axis=-1), caches


def qk_rotary_backward(dout, NH, pos, caches, q_norm=None, k_norm=None, theta=10_000.0):
    # dout is (M, 3C) -> dqkv (M, 3C), and (dq_norm, dk_norm) with QK-norm
    M = dout.shape[0]
    dq, dk, dv = (a.reshape(M, NH, -1) for a in np.split(dout, 3, axis=-1))
    dq, dk = rope_backward(dq, pos, theta), rope_backward(dk, pos, theta)
    dnorms = ()
    if q_norm is not None:
        (dq, dqw), (dk, dkw) = rmsnorm_backward(dq, caches[0], q_norm), rmsnorm_backward(dk, caches[1], k_norm)
        dnorms = (dqw, dkw)
    return np.concatenate([a.reshape(M, -1) for a in (dq, dk, dv)], axis=-1), dnorms


def matmul_forward(x, weight, bias):
    # x is (B,T,C), weight is (OC,C), bias is (OC,) -> out is (B,T,OC)
    return x @ weight.T + bias


def matmul_backward(dout, x, weight):
    # dout is (B,T,OC), x is (B,T,C), weight is (OC,C) -> dx is (B,T,C), dweight is (OC,C), dbias is (OC,)
    OC, C = weight.shape
    dx = dout @ weight
    dweight = dout.reshape(-1, OC).T @ x.reshape(-1, C)
    dbias = dout.sum(axis=(0, 1))
    return dx, dweight, dbias


def _split_heads(a, NH):
    # a is (B,T,C) -> (B,NH,T,hs), head h being channels [h*hs, (h+1)*hs)
    B, T, C = a.shape
    return a.reshape(B, T, NH, C // NH).transpose(0, 2, 1, 3)


def _merge_heads(a):
    # a is (B,NH,T,hs) -> (B,T,C), heads concatenated in order
    B, NH, T, hs = a.shape
    return a.transpose(0, 2, 1, 3).reshape(B, T, NH * hs)


def attention_forward(qkv, NH):
    # qkv is (B,T,3C): q, k, v are its consecutive C-wide thirds -> out is (B,T,C), att is (B,NH,T,T)
    q, k, v = (_split_heads(a, NH) for a in np.split(qkv, 3, axis=-1))
    hs = q.shape[-1]
    T = q.shape[2]
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)  # (B,NH,T,T)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)  # key position after the query position
    scores = np.where(future, -np.inf, scores)
    scores = scores - scores.max(axis=-1, keepdims=True)  # the diagonal is never masked: the max is finite
    att = np.exp(scores)
    att /= att.sum(axis=-1, keepdims=True)
    return _merge_heads(att @ v), att


def attention_backward(dout, qkv, att, NH):
    # dout is (B,T,C), qkv is (B,T,3C), att is (B,NH,T,T) -> dqkv is (B,T,3C)
    q, k, v = (_split_heads(a, NH) for a in np.split(qkv, 3, axis=-1))
    hs = q.shape[-1]
    dy = _split_heads(dout, NH)  # (B,NH,T,hs)
    datt = dy @ v.transpose(0, 1, 3, 2)  # (B,NH,T,T)
    dv = att.transpose(0, 1, 3, 2) @ dy
    dscores = att * (datt - (datt * att).sum(axis=-1, keepdims=True))  # softmax backward; 0 where masked
    dq = dscores @ k / np.sqrt(hs)
    dk = dscores.transpose(0, 1, 3, 2) @ q / np.sqrt(hs)
    return np.concatenate([_merge_heads(dq), _merge_heads(dk), _merge_heads(dv)], axis=-1)


def gelu_forward(x):
    # x is (B,T,4C) -> out is (B,T,4C); the tanh approximation
    return 0.5 * x * (1.0 + np.tanh(GELU_SCALE * (x + 0.044715 * x**3)))


def gelu_backward(dout, x):
    # dout and x are (B,T,4C) -> dx is (B,T,4C)
    t = np.tanh(GELU_SCALE * (x + 0.044715 * x**3))
    dt = GELU_SCALE * (1.0 + 3 * 0.044715 * x**2)
    return dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t**2) * dt)


def crossentropy_forward(logits, targets):
    # logits is (B,T,V), targets is (B,T) with -1 = ignore -> mean loss over the valid positions, probs (B,T,V)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    logsumexp = np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    logprobs = shifted - logsumexp
    valid = targets != -1
    n = valid.sum()
    if n == 0:
        return 0.0, np.exp(logprobs)
    picked = np.take_along_axis(logprobs, np.where(valid, targets, 0)[..., None], axis=-1)[..., 0]
    return float(-(picked * valid).sum() / n), np.exp(logprobs)


def crossentropy_backward(probs, targets):
    # probs is (B,T,V), targets is (B,T) -> dlogits is (B,T,V) of the mean loss
    valid = targets != -1
    n = valid.sum()
    if n == 0:
        return np.zeros_like(probs)
    dlogits = probs.copy()
    b, t = np.nonzero(valid)
    dlogits[b, t, targets[b, t]] -= 1.0
    return dlogits * (valid[..., None] / n)


# ----------------------------------------------------------------------------------------------------------------
# one transformer block: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))


def block_forward(p, x, NH):
    # p: this layer's parameters by short name ("ln_1.weight", ...); x is (B,T,C) -> out is (B,T,C), cache
    ln1, ln1_cache = layernorm_forward(x, p["ln_1.weight"], p["ln_1.bias"])
    qkv = matmul_forward(ln1, p["attn.c_attn.weight"], p["attn.c_attn.bias"])  # (B,T,3C)
    atty, att = attention_forward(qkv, NH)  # (B,T,C)
    attproj = matmul_forward(atty, p["attn.c_proj.weight"], p["attn.c_proj.bias"])
    residual2 = x + attproj
    ln2, ln2_cache = layernorm_forward(residual2, p["ln_2.weight"], p["ln_2.bias"])
    fch = matmul_forward(ln2, p["mlp.c_fc.weight"], p["mlp.c_fc.bias"])  # (B,T,4C)
    fch_gelu = gelu_forward(fch)
    fcproj = matmul_forward(fch_gelu, p["mlp.c_proj.weight"], p["mlp.c_proj.bias"])  # (B,T,C)
    cache = dict(ln1=ln1, ln1_cache=ln1_cache, qkv=qkv, att=att, atty=atty,
                 ln2=ln2, ln2_cache=ln2_cache, fch=fch, fch_gelu=fch_gelu)
    return residual2 + fcproj, cache


def block_backward(dout, p, cache, NH):
    # dout is (B,T,C) -> dx is (B,T,C), g: this layer's gradients by short name
    g = {}
    dresidual2 = dout.copy()  # the residual passes the gradient through
    dfch_gelu, g["mlp.c_proj.weight"], g["mlp.c_proj.bias"] = matmul_backward(
        dout, cache["fch_gelu"], p["mlp.c_proj.weight"])
    dfch = gelu_backward(dfch_gelu, cache["fch"])
    dln2, g["mlp.c_fc.weight"], g["mlp.c_fc.bias"] = matmul_backward(dfch, cache["ln2"], p["mlp.c_fc.weight"])
    dx_ln2, g["ln_2.weight"], g["ln_2.bias"] = layernorm_backward(dln2, cache["ln2_cache"], p["ln_2.weight"])
    dresidual2 += dx_ln2
    dx = dresidual2.copy()
    datty, g["attn.c_proj.weight"], g["attn.c_proj.bias"] = matmul_backward(
        dresidual2, cache["atty"], p["attn.c_proj.weight"])
    dqkv = attention_backward(datty, cache["qkv"], cache["att"], NH)
    dln1, g["attn.c_attn.weight"], g["attn.c_attn.bias"] = matmul_backward(
        dqkv, cache["ln1"], p["attn.c_attn.weight"])
    dx_ln1, g["ln_1.weight"], g["ln_1.bias"] = layernorm_backward(dln1, cache["ln1_cache"], p["ln_1.weight"])
    dx += dx_ln1
    return dx, g


# ----------------------------------------------------------------------------------------------------------------
# the model


def param_shapes(config) -> dict:
    """Name -> shape of every parameter, in state-dict order."""
    if config.arch == "llama":
        return llama_param_shapes(config)
    V, maxT, C, L = config.vocab_size, config.context_length, config.d_model, config.n_layers
    H = config.hidden_size
    shapes = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (maxT, C)}
    for i in range(L):
        for name, shape in [("ln_1.weight", (C,)), ("ln_1.bias", (C,)),
                            ("attn.c_attn.weight", (3 * C, C)), ("attn.c_attn.bias", (3 * C,)),
                            ("attn.c_proj.weight", (C, C)), ("attn.c_proj.bias", (C,)),
                            ("ln_2.weight", (C,)), ("ln_2.bias", (C,)),
                            ("mlp.c_fc.weight", (H, C)), ("mlp.c_fc.bias", (H,)),
                            ("mlp.c_proj.weight", (C, H)), ("mlp.c_proj.bias", (C,))]:
            shapes[f"transformer.h.{i}.{name}"] = shape
    shapes["transformer.ln_f.weight"] = (C,)
    shapes["transformer.ln_f.bias"] = (C,)
    return shapes


def init_params(config, seed=0, *, std=0.02) -> dict:
    """Random float64 parameters for tests: matrices, embeddings and biases N(0, std); LayerNorm weights
    1 + N(0, 0.1²) and biases N(0, 0.1²), so that no tensor sits at a value that would hide a gradient bug."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        if ".ln_" in name or name.startswith("transformer.ln_") or "norm" in name:
            params[name] = (1.0 if name.endswith("weight") else 0.0) + 0.1 * rng.standard_normal(shape)
        else:
            params[name] = std * rng.standard_normal(shape)
    return params


def _layer(d, i):
    prefix = f"transformer.h.{i}."
    return {name[len(prefix):]: value for name, value in d.items() if name.startswith(prefix)}


def _check(params, config, idx, targets=None):
    idx = np.asarray(idx)
    if idx.ndim != 2 or idx.dtype.kind not in "iu" or not 1 <= idx.shape[1] <= config.context_length:
        raise ValueError(f"idx must be an integer array [B, T] with 1 <= T <= {config.context_length} "
                         f"(got {idx.dtype} {list(idx.shape)})")
    if idx.size and (idx.min() < 0 or idx.max() >= config.vocab_size):
        raise ValueError(f"idx values must lie in [0, {config.vocab_size}) (got {idx.min()}..{idx.max()})")
    for name, shape in param_shapes(config).items():
        if np.shape(params[name]) != shape:
            raise ValueError(f"params[{name!r}] must have shape {shape} (got {np.shape(params[name])})")
    if targets is None:
        return idx, None
    targets = np.asarray(targets)
    if targets.shape != idx.shape or targets.dtype.kind not in "iu":
        raise ValueError(f"targets must be an integer array of idx's shape {list(idx.shape)} "
                         f"(got {targets.dtype} {list(targets.shape)})")
    if ((targets < -1) | (targets >= config.vocab_size)).any():
        raise ValueError(f"targets values must be -1 (ignored) or lie in [0, {config.vocab_size})")
    return idx, targets


def _forward(params, config, idx):
    # idx is (B,T) -> logits is (B,T,V), and what the backward pass needs
    p = {name: np.asarray(value, dtype=np.float64) for name, value in params.items()}
    NH = config.n_heads
    x = encoder_forward(p["transformer.wte.weight"], p["transformer.wpe.weight"], idx)  # (B,T,C)
    caches = []
    for i in range(config.n_layers):
        x, cache = block_forward(_layer(p, i), x, NH)
        caches.append(cache)
    lnf, lnf_cache = layernorm_forward(x, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"])
    logits = lnf @ p["transformer.wte.weight"].T  # (B,T,V): the head is tied to wte, no bias
    return logits, (p, caches, lnf, lnf_cache)


def forward(params, config, idx):
    """Logits [B, T, V] (float64) of the token ids idx [B, T]."""
    idx, _ = _check(params, config, idx)
    if config.arch == "llama":
        return _llama_forward(params, config, idx)[0]
    return _forward(params, config, idx)[0]


def loss_and_grads(params, config, idx, targets):
    """Mean cross-entropy over the positions whose target is not -1 (0.0 if none), and its gradient with
    respect to every parameter (a dict of the same names and shapes)."""
    idx, targets = _check(params, config, idx, targets)
    if config.arch == "llama":
        return _llama_loss_and_grads(params, config, idx, targets)
    logits, (p, caches, lnf, lnf_cache) = _forward(params, config, idx)
    loss, probs = crossentropy_forward(logits, targets)
    NH = config.n_heads
    wte = p["transformer.wte.weight"]
    grads = {}
    # backward, in exact reverse
    dlogits = crossentropy_backward(probs, targets)  # (B,T,V)
    dlnf = dlogits @ wte  # (B,T,C)
    dwte_head = dlogits.reshape(-1, wte.shape[0]).T @ lnf.reshape(-1, wte.shape[1])  # (V,C)
    dx, grads["transformer.ln_f.weight"], grads["transformer.ln_f.bias"] = layernorm_backward(
        dlnf, lnf_cache, p["transformer.ln_f.weight"])
    for i in reversed(range(config.n_layers)):
        dx, g = block_backward(dx, _layer(p, i), caches[i], NH)
        grads.update({f"transformer.h.{i}.{name}": value for name, value in g.items()})
    dwte, grads["transformer.wpe.weight"] = encoder_backward(dx, idx, wte.shape, p["transformer.wpe.weight"].shape)
    grads["transformer.wte.weight"] = dwte + dwte_head  # the tied weight gets both uses' gradients
    return loss, {name: grads[name] for name in param_shapes(config)}


# ----------------------------------------------------------------------------------------------------------------
# Llama / Qwen3: x = x + o(attn(rope(qk_norm(q, k)), v)) of rmsnorm(x); x = x + down(silu(gate)·up) of rmsnorm(x)


def llama_param_shapes(config) -> dict:
    """HF Llama / Qwen3 names -> shapes, in state-dict order."""
    V, C, L, H, hs = config.vocab_size, config.d_model, config.n_layers, config.hidden_size, config.head_dim
    shapes = {"model.embed_tokens.weight": (V, C)}
    for i in range(L):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (C,)
        for name in ("q_proj", "k_proj", "v_proj"):
            shapes[p + f"self_attn.{name}.weight"] = (C, C)
        if config.qk_norm:
            shapes[p + "self_attn.q_norm.weight"] = shapes[p + "self_attn.k_norm.weight"] = (hs,)
        shapes[p + "self_attn.o_proj.weight"] = (C, C)
        shapes[p + "post_attention_layernorm.weight"] = (C,)
        shapes[p + "mlp.gate_proj.weight"] = shapes[p + "mlp.up_proj.weight"] = (H, C)
        shapes[p + "mlp.down_proj.weight"] = (C, H)
    shapes["model.norm.weight"] = (C,)
    if not config.tie_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def _llama_layer(d, i):
    prefix = f"model.layers.{i}."
    return {name[len(prefix):]: value for name, value in d.items() if name.startswith(prefix)}


def llama_block_forward(p, x, config):
    # p: this layer's parameters by short name; x is (B,T,C) -> out is (B,T,C), cache
    B, T, C = x.shape
    NH, eps, theta = config.n_heads, config.norm_eps, config.rope_theta
    norms = {"q_norm": p["self_attn.q_norm.weight"], "k_norm": p["self_attn.k_norm.weight"]} if config.qk_norm else {}
    h1, h1_cache = rmsnorm_forward(x, p["input_layernorm.weight"], eps)
    qkv_in = np.concatenate([h1 @ p[f"self_attn.{n}_proj.weight"].T for n in "qkv"], axis=-1).reshape(B * T, 3 * C)
    pos = np.tile(np.arange(T), B)
    qkv, qk_caches = qk_rotary_forward(qkv_in, NH, pos, **norms, eps=eps, theta=theta)
    qkv = qkv.reshape(B, T, 3 * C)
    atty, att = attention_forward(qkv, NH)
    res2 = x + atty @ p["self_attn.o_proj.weight"].T
    h2, h2_cache = rmsnorm_forward(res2, p["post_attention_layernorm.weight"], eps)
    gu = np.concatenate([h2 @ p["mlp.gate_proj.weight"].T, h2 @ p["mlp.up_proj.weight"].T], axis=-1)
    act = swiglu_forward(gu)
    cache = dict(h1=h1, h1_cache=h1_cache, pos=pos, norms=norms, qk_caches=qk_caches, qkv=qkv, att=att, atty=atty,
                 h2=h2, h2_cache=h2_cache, gu=gu, act=act)
    return res2 + act @ p["mlp.down_proj.weight"].T, cache


def llama_block_backward(dout, p, cache, config):
    # dout is (B,T,C) -> dx is (B,T,C), g: this layer's gradients by short name
    B, T, C = dout.shape
    NH, H = config.n_heads, config.hidden_size
    g = {}
    dres2 = dout.copy()
    dact, g["mlp.down_proj.weight"], _ = matmul_backward(dout, cache["act"], p["mlp.down_proj.weight"])
    dgu = swiglu_backward(dact, cache["gu"])
    dh2_g, g["mlp.gate_proj.weight"], _ = matmul_backward(dgu[..., :H], cache["h2"], p["mlp.gate_proj.weight"])
    dh2_u, g["mlp.up_proj.weight"], _ = matmul_backward(dgu[..., H:], cache["h2"], p["mlp.up_proj.weight"])
    dx2, g["post_attention_layernorm.weight"] = rmsnorm_backward(dh2_g + dh2_u, cache["h2_cache"],
                                                                 p["post_attention_layernorm.weight"])
    dres2 += dx2
    dx = dres2.copy()
    datty, g["self_attn.o_proj.weight"], _ = matmul_backward(dres2, cache["atty"], p["self_attn.o_proj.weight"])
    dqkv = attention_backward(datty, cache["qkv"], cache["att"], NH).reshape(B * T, 3 * C)
    norms = cache["norms"]
    dqkv_in, dnorms = qk_rotary_backward(dqkv, NH, cache["pos"], cache["qk_caches"], **norms,
                                         theta=config.rope_theta)
    if norms:
        g["self_attn.q_norm.weight"], g["self_attn.k_norm.weight"] = dnorms
    dqkv_in = dqkv_in.reshape(B, T, 3 * C)
    dh1 = 0.0
    for j, n in enumerate("qkv"):
        dpart, g[f"self_attn.{n}_proj.weight"], _ = matmul_backward(
            dqkv_in[..., j * C:(j + 1) * C], cache["h1"], p[f"self_attn.{n}_proj.weight"])
        dh1 = dh1 + dpart
    dx1, g["input_layernorm.weight"] = rmsnorm_backward(dh1, cache["h1_cache"], p["input_layernorm.weight"])
    return dx + dx1, g


def _llama_head(p, config):
    return p["model.embed_tokens.weight" if config.tie_embeddings else "lm_head.weight"]


def _llama_forward(params, config, idx):
    p = {name: np.asarray(value, dtype=np.float64) for name, value in params.items()}
    x = p["model.embed_tokens.weight"][idx]  # (B,T,C): no position embedding, positions are rotary
    caches = []
    for i in range(config.n_layers):
        x, cache = llama_block_forward(_llama_layer(p, i), x, config)
        caches.append(cache)
    xn, xn_cache = rmsnorm_forward(x, p["model.norm.weight"], config.norm_eps)
    return xn @ _llama_head(p, config).T, (p, caches, xn, xn_cache)


def _llama_loss_and_grads(params, config, idx, targets):
    logits, (p, caches, xn, xn_cache) = _llama_forward(params, config, idx)
    loss, probs = crossentropy_forward(logits, targets)
    head = _llama_head(p, config)
    V, C = head.shape
    grads = {}
    dlogits = crossentropy_backward(probs, targets)
    dhead = dlogits.reshape(-1, V).T @ xn.reshape(-1, C)
    dx, grads["model.norm.weight"] = rmsnorm_backward(dlogits @ head, xn_cache, p["model.norm.weight"])
    for i in reversed(range(config.n_layers)):
        dx, g = llama_block_backward(dx, _llama_layer(p, i), caches[i], config)
        grads.update({f"model.layers.{i}.{name}": value for name, value in g.items()})
    dwte = np.zeros_like(p["model.embed_tokens.weight"])
    np.add.at(dwte, idx, dx)
    if config.tie_embeddings:
        grads["model.embed_tokens.weight"] = dwte + dhead
    else:
        grads["model.embed_tokens.weight"], grads["lm_head.weight"] = dwte, dhead
    return loss, {name: grads[name] for name in param_shapes(config)}
