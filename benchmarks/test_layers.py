"""The GPT layers' kernels against PyTorch CPU, at the reference model's shapes (preset "small": B 16, T 256,
C 256, NH 4, hs 64, H = 4C = 1024, V 8192; BT = 4096 rows; quick mode: B 4 and fewer rounds), at each of
conftest.THREADS (cllm: ``num_threads``; torch: ``torch.set_num_threads``), the peer measured first so that the
ratio lands in ours' extra_info. Without torch, ours is measured alone.

What is timed, each side in its own natural layout (inputs built and copied outside the timed function):

- attention forward: ``attention_forward(qkv [B,T,3C])`` -> out, lse, vs
  ``F.scaled_dot_product_attention(q, k, v, is_causal=True)`` on contiguous [B,NH,T,hs] q, k, v.
- attention backward: ``attention_backward(dout, qkv, out, lse)`` -> dqkv, vs the backward alone of that SDPA call:
  the graph is built once and ``torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)`` is timed, which
  runs only SDPA's backward node (fresh gradients each call, nothing accumulates). FLOP: 2·2·B·NH·(T(T+1)/2)·hs
  for the forward (QKᵀ and PV over the causal triangle), 2.5× that for the backward (dV, dP, dQ, dK, and the
  recomputed QKᵀ), the same count for both sides.
- layernorm and rmsnorm [BT, C], gelu [BT, 4C] (tanh approximation): forward vs ``F.layer_norm`` /
  ``F.rms_norm`` / ``F.gelu``; backward vs ``torch.autograd.grad`` of that call with retain_graph. Unit: elements
  of x per second.
- rope (rotary embedding) on q [BT, NH, hs]: ``rope_forward`` / ``rope_backward`` with the positions of each row
  vs HF Llama's ``apply_rotary_pos_emb`` (x·cos + rotate_half(x)·sin) on [B, NH, T, hs] and its autograd
  backward. Unit: elements of q per second.
- qk_rotary: QK-norm (RMSNorm over each head) and rope on q and k of qkv [BT, 3C], v copied, in one pass
  (``qk_rotary_forward``; the backward in place) vs HF Qwen3's ``q_norm(q.view(B, T, NH, hs)).transpose(1, 2)``
  (the same for k) then ``apply_rotary_pos_emb``, and its autograd backward. Unit: elements of qkv per second.
- swiglu: ``swiglu_forward(gu [BT, 2H])`` (gate | up rows) vs HF LlamaMLP's ``F.silu(gate) * up`` on two [BT, H]
  tensors, and the backward vs ``torch.autograd.grad`` wrt (gate, up). Unit: elements of the [BT, H] output
  per second.
- crossentropy: the fused loss + gradient ``crossentropy(logits [BT,V], targets, scale=1/BT)`` vs
  ``F.cross_entropy`` (mean) forward + ``torch.autograd.grad`` wrt the logits. Our kernel overwrites its logits
  with the gradient, so each round's (untimed) setup copies the logits into both sides' input buffers. Unit:
  logits per second.
- adamw: ``cllm.optim.AdamW(model).step()`` over the flat buffer of preset small (grad-norm, clipping to 1.0 and
  the update) vs ``clip_grad_norm_`` + ``torch.optim.AdamW(fused=True)`` over tensors of the state dict's shapes,
  the same decay groups and hyper-parameters. Unit: parameters per second.
- embedding forward: ``embedding_forward(idx, wte, wpe)`` vs ``F.embedding(idx, wte) + wpe``; backward:
  ``embedding_backward`` vs ``torch.autograd.grad`` of that expression wrt (wte, wpe). Unit: elements of the
  [B, T, C] output per second.

Fairness notes: cllm writes into buffers it is given while torch allocates its results (that is how each is
used in a training step). cllm's backward kernels for layernorm, rmsnorm and embedding *add* into gradients that the
model zeroes once per step (one memset of the whole gradient buffer, not timed here); torch returns fresh
gradients, so its figures include zero-filling them (for the embedding, the [V, C] dwte: 8 MB). torch's
cross-entropy allocates [BT, V] tensors (128 MB: the log-softmax, the gradient) on every call, which glibc maps
fresh from the OS: their page faults are a large part of its time, as they are in a torch training step.

Before the first timing, each cllm case runs both sides once and asserts ours matches torch's to 1e-4 relative
max-norm (max |ours - torch| / max |torch|) on every output (for AdamW: the parameters and both moments), when
torch is installed.
"""

import dataclasses
import functools
import math
from typing import Callable

import numpy as np
import pytest

import cllm
from cllm import kernels
from cllm.model.parameters import is_decayed, parameter_shapes

from conftest import THREADS, quick, settle

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # ours is still measured; the peer's cases and the check against it are skipped
    torch = F = None

CFG = cllm.ModelConfig.preset("small")
B, T, C, NH, V = quick(16, 4), CFG.context_length, CFG.d_model, CFG.n_heads, CFG.vocab_size
HS, H, BT = C // NH, CFG.mlp_ratio * C, B * CFG.context_length
LR, BETAS, EPS, WEIGHT_DECAY, GRAD_CLIP = 6e-4, (0.9, 0.95), 1e-8, 0.1, 1.0
TOL = 1e-4
N_PARAMS = sum(math.prod(shape) for shape in parameter_shapes(CFG).values())
ATTN_FLOP = 2 * 2 * B * NH * (T * (T + 1) // 2) * HS
MEGA = (1e6, "M")
GIGA = (1e9, "G")


@dataclasses.dataclass
class Case:
    fn: Callable  # the timed call
    outputs: Callable  # -> list of numpy arrays, the results of the last call, in a layout both sides share
    setup: Callable = None  # untimed, before each round


def rng(seed):
    return np.random.default_rng(seed)


# --- inputs (built once, shared by every case) -------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def attention_inputs():
    r = rng(1)
    return r.standard_normal((B, T, 3 * C), dtype=np.float32), r.standard_normal((B, T, C), dtype=np.float32)


@functools.lru_cache(maxsize=None)
def rowwise_inputs(width):
    """x, dout [BT, width] and LayerNorm's w, b [width]."""
    r = rng(2)
    x = r.standard_normal((BT, width), dtype=np.float32)
    dout = r.standard_normal((BT, width), dtype=np.float32)
    w = 1 + 0.1 * r.standard_normal(width, dtype=np.float32)
    b = 0.1 * r.standard_normal(width, dtype=np.float32)
    return x, dout, w, b


@functools.lru_cache(maxsize=None)
def crossentropy_inputs():
    r = rng(3)
    logits = 2 * r.standard_normal((BT, V), dtype=np.float32)
    return logits, r.integers(0, V, BT, dtype=np.int32)


@functools.lru_cache(maxsize=None)
def embedding_inputs():
    r = rng(4)
    idx = r.integers(0, V, (B, T), dtype=np.int32)
    wte = 0.02 * r.standard_normal((V, C), dtype=np.float32)
    wpe = 0.02 * r.standard_normal((T, C), dtype=np.float32)
    return idx, wte, wpe, r.standard_normal((B, T, C), dtype=np.float32)


def tensor(a, grad=False):
    return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_(grad)


def numpy(t):
    return t.detach().numpy()


def heads(a, grad=False):
    """[B, T, C] numpy -> [B, NH, T, hs] contiguous torch."""
    return torch.from_numpy(a).view(B, T, NH, HS).transpose(1, 2).contiguous().requires_grad_(grad)


def unheads(t):
    """[B, NH, T, hs] torch -> [B, T, C] numpy."""
    return numpy(t.transpose(1, 2).reshape(B, T, C))


# --- the cases: build(impl, threads) -> Case ----------------------------------------------------------------

def attention_forward(impl, threads):
    qkv, _ = attention_inputs()
    if impl == "cllm":
        out, lse = np.empty((B, T, C), np.float32), np.empty((B, NH, T), np.float32)
        return Case(lambda: kernels.attention_forward(qkv, NH, out=out, lse=lse, num_threads=threads),
                    lambda: [out])
    q, k, v = (heads(qkv[:, :, i * C:(i + 1) * C]) for i in range(3))
    res = {}

    def fn():
        res["out"] = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return Case(fn, lambda: [unheads(res["out"])])


def attention_backward(impl, threads):
    qkv, dout = attention_inputs()
    if impl == "cllm":
        out, lse = kernels.attention_forward(qkv, NH, num_threads=threads)
        dqkv = np.empty_like(qkv)
        return Case(lambda: kernels.attention_backward(dout, qkv, out, lse, dqkv=dqkv, num_threads=threads),
                    lambda: [dqkv])
    q, k, v = (heads(qkv[:, :, i * C:(i + 1) * C], grad=True) for i in range(3))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    dout_t, res = heads(dout), {}

    def fn():
        res["g"] = torch.autograd.grad(out, (q, k, v), dout_t, retain_graph=True)
    return Case(fn, lambda: [np.concatenate([unheads(g) for g in res["g"]], axis=2)])


def layernorm_forward(impl, threads):
    x, _, w, b = rowwise_inputs(C)
    if impl == "cllm":
        out, mean, rstd = np.empty_like(x), np.empty(BT, np.float32), np.empty(BT, np.float32)
        return Case(lambda: kernels.layernorm_forward(x, w, b, out=out, mean=mean, rstd=rstd, num_threads=threads),
                    lambda: [out])
    xt, wt, bt = tensor(x), tensor(w), tensor(b)
    res = {}

    def fn():
        res["y"] = F.layer_norm(xt, (C,), wt, bt, eps=1e-5)
    return Case(fn, lambda: [numpy(res["y"])])


def layernorm_backward(impl, threads):
    x, dout, w, b = rowwise_inputs(C)
    if impl == "cllm":
        _, mean, rstd = kernels.layernorm_forward(x, w, b, num_threads=threads)
        dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)  # added into: exact on the first call
        return Case(lambda: kernels.layernorm_backward(dout, x, w, mean, rstd, dx, dw, db, num_threads=threads),
                    lambda: [dx, dw, db])
    xt, wt, bt = tensor(x, True), tensor(w, True), tensor(b, True)
    y = F.layer_norm(xt, (C,), wt, bt, eps=1e-5)
    dout_t, res = tensor(dout), {}

    def fn():
        res["g"] = torch.autograd.grad(y, (xt, wt, bt), dout_t, retain_graph=True)
    return Case(fn, lambda: [numpy(g) for g in res["g"]])


def rmsnorm_forward(impl, threads):
    x, _, w, _ = rowwise_inputs(C)
    if impl == "cllm":
        out, rstd = np.empty_like(x), np.empty(BT, np.float32)
        return Case(lambda: kernels.rmsnorm_forward(x, w, eps=1e-6, out=out, rstd=rstd, num_threads=threads),
                    lambda: [out])
    xt, wt = tensor(x), tensor(w)
    res = {}

    def fn():
        res["y"] = F.rms_norm(xt, (C,), wt, eps=1e-6)
    return Case(fn, lambda: [numpy(res["y"])])


def rmsnorm_backward(impl, threads):
    x, dout, w, _ = rowwise_inputs(C)
    if impl == "cllm":
        _, rstd = kernels.rmsnorm_forward(x, w, eps=1e-6, num_threads=threads)
        dx, dw = np.zeros_like(x), np.zeros_like(w)  # added into: exact on the first call
        return Case(lambda: kernels.rmsnorm_backward(dout, x, w, rstd, dx, dw, num_threads=threads),
                    lambda: [dx, dw])
    xt, wt = tensor(x, True), tensor(w, True)
    y = F.rms_norm(xt, (C,), wt, eps=1e-6)
    dout_t, res = tensor(dout), {}

    def fn():
        res["g"] = torch.autograd.grad(y, (xt, wt), dout_t, retain_graph=True)
    return Case(fn, lambda: [numpy(g) for g in res["g"]])


def rope_inputs():
    """q [BT, NH, hs] (rows b·T + t at position t), dout of its shape, and the tables for T positions."""
    x, dout = attention_inputs()[1], attention_inputs()[1][::-1].copy()
    pos = np.tile(np.arange(T, dtype=np.int32), B)
    return x.reshape(BT, NH, HS), dout.reshape(BT, NH, HS), pos, *kernels.rope_table(T, HS)


def torch_rope(x, cos, sin):
    """HF Llama's apply_rotary_pos_emb on q [B, NH, T, hs]: x·cos + rotate_half(x)·sin, cos/sin [T, hs]."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def rope_case(impl, threads, backward):
    x, dout, pos, cos, sin = rope_inputs()
    if impl == "cllm":
        out = np.empty_like(x)
        fn = kernels.rope_backward if backward else kernels.rope_forward
        src = dout if backward else x
        kw = "dx" if backward else "out"
        return Case(lambda: fn(src, pos, cos, sin, **{kw: out}, num_threads=threads), lambda: [out])
    as_heads = lambda a, grad=False: (torch.from_numpy(a.reshape(B, T, NH, HS)).transpose(1, 2).contiguous()
                                      .requires_grad_(grad))
    back = lambda t: numpy(t.transpose(1, 2).reshape(BT, NH, HS))
    cos_t, sin_t = (tensor(np.concatenate([a, a], axis=1)) for a in (cos, sin))  # HF's cat((freqs, freqs), -1)
    res = {}
    if not backward:
        xt = as_heads(x)

        def fn():
            res["y"] = torch_rope(xt, cos_t, sin_t)
        return Case(fn, lambda: [back(res["y"])])
    xt = as_heads(x, True)
    y, dout_t = torch_rope(xt, cos_t, sin_t), as_heads(dout)

    def fn():
        res["g"] = torch.autograd.grad(y, (xt,), dout_t, retain_graph=True)
    return Case(fn, lambda: [back(res["g"][0])])


@functools.lru_cache(maxsize=None)
def swiglu_inputs():
    """gu [BT, 2H] (gate | up rows, as the stacked gate/up GEMM writes them), dout [BT, H]."""
    r = rng(6)
    return 2 * r.standard_normal((BT, 2 * H), dtype=np.float32), r.standard_normal((BT, H), dtype=np.float32)


def swiglu_case(impl, threads, backward):
    gu, dout = swiglu_inputs()
    if impl == "cllm":
        if backward:
            dgu = np.empty_like(gu)
            return Case(lambda: kernels.swiglu_backward(gu, dout, dgu=dgu, num_threads=threads), lambda: [dgu])
        out = np.empty_like(dout)
        return Case(lambda: kernels.swiglu_forward(gu, out=out, num_threads=threads), lambda: [out])
    # HF LlamaMLP: act_fn(gate_proj(x)) * up_proj(x), two [BT, H] tensors
    g, u = (tensor(a, backward) for a in (gu[:, :H], gu[:, H:]))
    res = {}
    if not backward:
        def fn():
            res["y"] = F.silu(g) * u
        return Case(fn, lambda: [numpy(res["y"])])
    y, dout_t = F.silu(g) * u, tensor(dout)

    def fn():
        res["g"] = torch.autograd.grad(y, (g, u), dout_t, retain_graph=True)
    return Case(fn, lambda: [np.concatenate([numpy(t) for t in res["g"]], axis=1)])


@functools.lru_cache(maxsize=None)
def qk_rotary_inputs():
    """qkv [BT, 3C] as the projection writes it, dout of its shape, QK-norm weights [hs], positions, tables."""
    r = rng(7)
    qkv, dout = attention_inputs()[0].reshape(BT, 3 * C), r.standard_normal((BT, 3 * C), dtype=np.float32)
    qw, kw = (1 + 0.1 * r.standard_normal(HS, dtype=np.float32) for _ in range(2))
    return qkv, dout, qw, kw, np.tile(np.arange(T, dtype=np.int32), B), *kernels.rope_table(T, HS)


def qk_rotary_case(impl, threads, backward):
    qkv, dout, qw, kw, pos, cos, sin = qk_rotary_inputs()
    if impl == "cllm":
        out, rstd = kernels.qk_rotary_forward(qkv, NH, pos, cos, sin, q_norm=qw, k_norm=kw, num_threads=threads)
        if not backward:
            return Case(lambda: kernels.qk_rotary_forward(qkv, NH, pos, cos, sin, q_norm=qw, k_norm=kw, out=out,
                                                          rstd=rstd, num_threads=threads), lambda: [out])
        d, dqw, dkw = np.empty_like(dout), np.zeros_like(qw), np.zeros_like(kw)

        def setup():  # the kernel works in place on dqkv and adds into the norms' gradients
            np.copyto(d, dout)
            dqw.fill(0.0)
            dkw.fill(0.0)
        return Case(lambda: kernels.qk_rotary_backward(d, qkv, NH, pos, cos, sin, q_norm=qw, k_norm=kw, rstd=rstd,
                                                       dq_norm=dqw, dk_norm=dkw, num_threads=threads),
                    lambda: [d, dqw, dkw], setup=setup)
    # HF Qwen3Attention: q_norm(q_proj(x).view(B, T, NH, hs)).transpose(1, 2), the same for k, then
    # apply_rotary_pos_emb(q, k, cos, sin); v.view(B, T, NH, hs).transpose(1, 2)
    qkv_t, qw_t, kw_t = tensor(qkv, backward), tensor(qw, backward), tensor(kw, backward)
    cos_t, sin_t = (tensor(np.concatenate([a, a], axis=1)) for a in (cos, sin))

    def forward():
        q, k, v = (a.view(B, T, NH, HS) for a in qkv_t.view(B, T, 3 * C).split(C, dim=-1))
        q = F.rms_norm(q, (HS,), qw_t, eps=1e-6).transpose(1, 2)
        k = F.rms_norm(k, (HS,), kw_t, eps=1e-6).transpose(1, 2)
        return torch_rope(q, cos_t, sin_t), torch_rope(k, cos_t, sin_t), v.transpose(1, 2)
    rows = lambda ts: np.concatenate([numpy(t.transpose(1, 2).reshape(BT, C)) for t in ts], axis=1)
    res = {}
    if not backward:
        def fn():
            res["y"] = forward()
        return Case(fn, lambda: [rows(res["y"])])
    y = forward()
    douts = [torch.from_numpy(dout[:, i * C:(i + 1) * C].copy()).view(B, T, NH, HS).transpose(1, 2)
             for i in range(3)]

    def fn():
        res["g"] = torch.autograd.grad(y, (qkv_t, qw_t, kw_t), douts, retain_graph=True)
    return Case(fn, lambda: [numpy(g).reshape(g.shape[0], -1) if g.ndim > 1 else numpy(g) for g in res["g"]])


def gelu_forward(impl, threads):
    x = rowwise_inputs(H)[0]
    if impl == "cllm":
        out = np.empty_like(x)
        return Case(lambda: kernels.gelu_forward(x, out=out, num_threads=threads), lambda: [out])
    xt, res = tensor(x), {}

    def fn():
        res["y"] = F.gelu(xt, approximate="tanh")
    return Case(fn, lambda: [numpy(res["y"])])


def gelu_backward(impl, threads):
    x, dout = rowwise_inputs(H)[:2]
    if impl == "cllm":
        dx = np.empty_like(x)
        return Case(lambda: kernels.gelu_backward(x, dout, dx=dx, num_threads=threads), lambda: [dx])
    xt = tensor(x, True)
    y = F.gelu(xt, approximate="tanh")
    dout_t, res = tensor(dout), {}

    def fn():
        res["g"] = torch.autograd.grad(y, xt, dout_t, retain_graph=True)
    return Case(fn, lambda: [numpy(res["g"][0])])


def crossentropy(impl, threads):
    logits, targets = crossentropy_inputs()
    if impl == "cllm":
        buf, losses = np.empty_like(logits), np.empty(BT, np.float32)
        return Case(lambda: kernels.crossentropy(buf, targets, scale=1.0 / BT, losses=losses, num_threads=threads),
                    lambda: [np.array([losses.mean(dtype=np.float64)]), buf],
                    setup=lambda: np.copyto(buf, logits))
    lt, tt = tensor(np.empty_like(logits), True), torch.from_numpy(targets.astype(np.int64))
    res = {}

    def fn():
        loss = F.cross_entropy(lt, tt)
        res["loss"], res["g"] = loss, torch.autograd.grad(loss, lt)[0]
    return Case(fn, lambda: [np.array([res["loss"].item()]), numpy(res["g"])],
                setup=lambda: np.copyto(numpy(lt), logits))


@functools.lru_cache(maxsize=None)
def adamw_grads():
    """Random gradients by state-dict name (the flat buffer's alignment padding stays 0)."""
    r = rng(5)
    shapes = parameter_shapes(CFG)
    return {name: r.standard_normal(shape, dtype=np.float32) for name, shape in shapes.items()}


def adamw(impl, threads):
    model = cllm.Model(CFG, seed=0)
    if impl == "cllm":
        for name, g in model.grads().items():
            g[...] = adamw_grads()[name]
        opt = cllm.optim.AdamW(model, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY, grad_clip=GRAD_CLIP)

        base = model.params.ctypes.data  # positions of the parameters in the flat buffers (without the padding)
        at = np.concatenate([np.arange(p.size) + (p.ctypes.data - base) // 4 for p in model.state_dict().values()])

        def fn():
            with cllm.threads(threads):
                opt.step()
        return Case(fn, lambda: [model.params[at], opt.m[at], opt.v[at]])
    params = {name: torch.nn.Parameter(torch.from_numpy(p.copy())) for name, p in model.state_dict().items()}
    for name, p in params.items():
        p.grad = torch.from_numpy(adamw_grads()[name].copy())
    groups = [{"params": [p for n, p in params.items() if is_decayed(n)], "weight_decay": WEIGHT_DECAY},
              {"params": [p for n, p in params.items() if not is_decayed(n)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, fused=True)
    plist = list(params.values())

    def fn():
        torch.nn.utils.clip_grad_norm_(plist, GRAD_CLIP)
        opt.step()
    flat = lambda tensors: np.concatenate([numpy(t).ravel() for t in tensors])
    return Case(fn, lambda: [flat(plist)] + [flat(opt.state[p][k] for p in plist) for k in ("exp_avg", "exp_avg_sq")])


def embedding_forward(impl, threads):
    idx, wte, wpe, _ = embedding_inputs()
    if impl == "cllm":
        out = np.empty((B, T, C), np.float32)
        return Case(lambda: kernels.embedding_forward(idx, wte, wpe, out=out, num_threads=threads), lambda: [out])
    it, wte_t, wpe_t, res = torch.from_numpy(idx.astype(np.int64)), tensor(wte), tensor(wpe), {}

    def fn():
        res["out"] = F.embedding(it, wte_t) + wpe_t
    return Case(fn, lambda: [numpy(res["out"])])


def embedding_backward(impl, threads):
    idx, wte, wpe, dout = embedding_inputs()
    if impl == "cllm":
        dwte, dwpe = np.zeros_like(wte), np.zeros_like(wpe)  # added into: exact on the first call
        return Case(lambda: kernels.embedding_backward(dout, idx, dwte, dwpe, num_threads=threads),
                    lambda: [dwte, dwpe])
    it, wte_t, wpe_t = torch.from_numpy(idx.astype(np.int64)), tensor(wte, True), tensor(wpe, True)
    out = F.embedding(it, wte_t) + wpe_t
    dout_t, res = tensor(dout), {}

    def fn():
        res["g"] = torch.autograd.grad(out, (wte_t, wpe_t), dout_t, retain_graph=True)
    return Case(fn, lambda: [numpy(g) for g in res["g"]])


# kernel -> (build, suite, case, work per call, unit, table scale, rounds)
KERNELS = {
    "attention_forward": (attention_forward, "attention", f"forward B{B} T{T} NH{NH} hs{HS}", ATTN_FLOP, "FLOP",
                          GIGA, 30),
    "attention_backward": (attention_backward, "attention", f"backward B{B} T{T} NH{NH} hs{HS}", 2.5 * ATTN_FLOP,
                           "FLOP", GIGA, 20),
    "layernorm_forward": (layernorm_forward, "layernorm", f"forward [{BT}, {C}]", BT * C, "element", MEGA, 100),
    "layernorm_backward": (layernorm_backward, "layernorm", f"backward [{BT}, {C}]", BT * C, "element", MEGA, 100),
    "rmsnorm_forward": (rmsnorm_forward, "rmsnorm", f"forward [{BT}, {C}]", BT * C, "element", MEGA, 100),
    "rmsnorm_backward": (rmsnorm_backward, "rmsnorm", f"backward [{BT}, {C}]", BT * C, "element", MEGA, 100),
    "rope_forward": (functools.partial(rope_case, backward=False), "rope", f"forward [{BT}, {NH}, {HS}]", BT * C,
                     "element", MEGA, 100),
    "rope_backward": (functools.partial(rope_case, backward=True), "rope", f"backward [{BT}, {NH}, {HS}]", BT * C,
                      "element", MEGA, 100),
    "qk_rotary_forward": (functools.partial(qk_rotary_case, backward=False), "qk_rotary",
                          f"forward QK-norm + rope [{BT}, 3·{C}]", BT * C * 3, "element", MEGA, 100),
    "qk_rotary_backward": (functools.partial(qk_rotary_case, backward=True), "qk_rotary",
                           f"backward QK-norm + rope [{BT}, 3·{C}]", BT * C * 3, "element", MEGA, 100),
    "swiglu_forward": (functools.partial(swiglu_case, backward=False), "swiglu", f"forward [{BT}, 2·{H}]",
                       BT * H, "element", MEGA, 50),
    "swiglu_backward": (functools.partial(swiglu_case, backward=True), "swiglu", f"backward [{BT}, 2·{H}]",
                        BT * H, "element", MEGA, 50),
    "gelu_forward": (gelu_forward, "gelu", f"forward [{BT}, {H}]", BT * H, "element", MEGA, 50),
    "gelu_backward": (gelu_backward, "gelu", f"backward [{BT}, {H}]", BT * H, "element", MEGA, 50),
    "crossentropy": (crossentropy, "crossentropy", f"fwd+bwd [{BT}, {V}]", BT * V, "logit", MEGA, 10),
    "adamw": (adamw, "adamw", f"step+clip {N_PARAMS / 1e6:.2f}M params", N_PARAMS,
              "param", MEGA, 40),
    "embedding_forward": (embedding_forward, "embedding", f"forward BT{BT} C{C} V{V}", BT * C, "element", MEGA,
                          100),
    "embedding_backward": (embedding_backward, "embedding", f"backward BT{BT} C{C} V{V}", BT * C, "element", MEGA,
                           100),
}
CASES = [(kernel, threads, impl) for kernel in KERNELS for threads in THREADS for impl in ("torch", "cllm")]


def max_rel(ours, ref):
    """max |ours - ref| / max |ref|, in float64."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30))


def assert_matches_torch(kernel, ours, threads):
    """Run both sides once (their first call: accumulating kernels start from zero) and compare every output."""
    peer = KERNELS[kernel][0]("torch", threads)
    for case in (peer, ours):
        if case.setup:
            case.setup()
        case.fn()
    for i, (a, b) in enumerate(zip(ours.outputs(), peer.outputs(), strict=True)):
        assert a.shape == b.shape, f"{kernel} output {i}: shape {a.shape} vs torch's {b.shape}"
        err = max_rel(a, b)
        assert err < TOL, f"{kernel} output {i}: max relative error {err:.2e} vs torch (tolerance {TOL})"


@pytest.mark.parametrize("kernel,threads,impl", CASES, ids=[f"{k}-t{t}-{i}" for k, t, i in CASES])
def test_layer(benchmark, record_rate, kernel, threads, impl):
    build, suite, case_name, work, unit, scale, rounds = KERNELS[kernel]
    if torch is None and impl == "torch":
        pytest.skip("torch is not installed (pip install torch==2.13.0)")
    if torch is not None:
        torch.set_num_threads(threads)  # the peer's threads (also those of the reference run in the check)
    case = build(impl, threads)
    if impl == "cllm" and torch is not None:
        assert_matches_torch(kernel, case, threads)
    settle()
    benchmark.pedantic(case.fn, setup=case.setup, rounds=quick(rounds, 3), iterations=1, warmup_rounds=quick(3, 1))
    # the rate of the median round; record_rate rather than record only to print these units at a readable scale
    record_rate(suite, case_name, threads, impl, work / benchmark.stats.stats.median, unit, scale=scale)
