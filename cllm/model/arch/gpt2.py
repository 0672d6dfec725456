"""GPT-2: token + learned position embedding; L blocks of x += attn(ln_1(x)); x += mlp(ln_2(x)) with a GELU MLP;
ln_f; logits = x · wteᵀ (the output head tied to the token embedding). nanoGPT's state-dict names. The parts every
architecture has are listed in ``cllm.model.arch``."""

from __future__ import annotations

import math

import numpy as np

from ... import kernels as K

__all__ = ["LAYER", "activation_shapes", "backward", "block", "forward", "init_weights", "parameter_shapes", "stacked",
           "weight_table"]

# A layer's weights by name (each a weight and a bias: state dict "transformer.h.{i}.{name}.weight|bias").
LAYER = ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")


def parameter_shapes(config) -> dict[str, tuple]:
    """State-dict names and shapes (nanoGPT names, PyTorch nn.Linear [out, in] layouts), in buffer order."""
    V, T, C, H = config.vocab_size, config.context_length, config.d_model, config.hidden_size
    shapes = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (T, C)}
    for i in range(config.n_layers):
        p = f"transformer.h.{i}."
        shapes.update({
            p + "ln_1.weight": (C,), p + "ln_1.bias": (C,),
            p + "attn.c_attn.weight": (3 * C, C), p + "attn.c_attn.bias": (3 * C,),
            p + "attn.c_proj.weight": (C, C), p + "attn.c_proj.bias": (C,),
            p + "ln_2.weight": (C,), p + "ln_2.bias": (C,),
            p + "mlp.c_fc.weight": (H, C), p + "mlp.c_fc.bias": (H,),
            p + "mlp.c_proj.weight": (C, H), p + "mlp.c_proj.bias": (C,),
        })
    shapes.update({"transformer.ln_f.weight": (C,), "transformer.ln_f.bias": (C,)})
    return shapes


def stacked(config) -> dict[str, tuple]:
    """No stacks: c_attn is already one [3C, C] matrix."""
    return {}


def activation_shapes(config, B: int, T: int) -> tuple[dict, dict, dict]:
    """(per layer, once, backward scratch): name -> shape of every buffer a training step on [B, T] uses."""
    C, H, V, NH = config.d_model, config.hidden_size, config.vocab_size, config.n_heads
    BT = B * T
    layer = {"ln1": (BT, C), "ln1_mean": (BT,), "ln1_rstd": (BT,), "qkv": (B, T, 3 * C), "atty": (B, T, C),
             "lse": (B, NH, T), "res2": (BT, C), "ln2": (BT, C), "ln2_mean": (BT,), "ln2_rstd": (BT,),
             "fch": (BT, H), "fcg": (BT, H), "res": (BT, C)}  # res: the block's output
    once = {"res0": (BT, C), "lnf": (BT, C), "lnf_mean": (BT,), "lnf_rstd": (BT,), "logits": (BT, V),
            "losses": (BT,)}
    scratch = {"dres": (BT, C), "dtmp": (BT, C), "dqkv": (B, T, 3 * C), "dfc": (BT, H)}
    return layer, once, scratch


def init_weights(views: dict, config, rng) -> None:
    """N(0, 0.02) for matrices and embeddings, N(0, 0.02/√(2L)) for the residual projections (c_proj),
    biases 0, LayerNorm weights 1 (GPT-2's initialisation)."""
    proj_std = 0.02 / math.sqrt(2 * config.n_layers)
    for name, view in views.items():
        if name.endswith(".bias"):
            view[...] = 0.0
        elif "ln_" in name:
            view[...] = 1.0
        else:
            std = proj_std if name.endswith("c_proj.weight") else 0.02
            view[...] = rng.standard_normal(view.shape, dtype=np.float32) * np.float32(std)


def weight_table(v: dict, config) -> dict:
    """The tensors as ``forward`` names them: (weight, bias) views, by LAYER name per layer."""
    pair = lambda name: (v[name + ".weight"], v[name + ".bias"])
    return {"wte": v["transformer.wte.weight"], "wpe": v["transformer.wpe.weight"], "ln_f": pair("transformer.ln_f"),
            "head": (v["transformer.wte.weight"], None),  # the tied head
            "layers": [{name: pair(f"transformer.h.{i}.{name}") for name in LAYER} for i in range(config.n_layers)]}


def block(run, i: int, w: dict, x, a: dict, out) -> None:
    """Layer i: res2 = x + attn(ln_1(x)); out = res2 + mlp(ln_2(res2)). x, out [BT, C]; w: the layer's weights
    by LAYER name; a: its buffers (``activation_shapes``' per-layer names)."""
    run.layernorm(x, w["ln_1"], a["ln1"], a["ln1_mean"], a["ln1_rstd"])
    run.linear(a["ln1"], w["attn.c_attn"], a["qkv"])
    run.attention(i, a["qkv"], a["atty"], a["lse"])
    run.linear(a["atty"], w["attn.c_proj"], a["res2"], residual=x)
    run.layernorm(a["res2"], w["ln_2"], a["ln2"], a["ln2_mean"], a["ln2_rstd"])
    run.linear(a["ln2"], w["mlp.c_fc"], a["fch"], gelu_out=a["fcg"])  # fcg = gelu(fch)
    run.linear(a["fcg"], w["mlp.c_proj"], out, residual=a["res2"])


def forward(run, w: dict, b: dict, idx, logits) -> None:
    """Token + position embedding, the blocks, ln_f, the tied head. idx [B, T] int32 -> logits [rows, V].

    w: ``weight_table``'s. b: "res" (the residual stream before each layer and after the last, L + 1 buffers
    [BT, C]), "layers" (per layer, the block's buffers), "lnf", "lnf_mean", "lnf_rstd" (for logits_rows' rows)."""
    run.embedding(idx, w["wte"], w["wpe"], b["res"][0])
    for i, (layer, buffers) in enumerate(zip(w["layers"], b["layers"])):
        block(run, i, layer, b["res"][i], buffers, b["res"][i + 1])
    run.layernorm(run.logits_rows(b["res"][-1]), w["ln_f"], b["lnf"], b["lnf_mean"], b["lnf_rstd"])
    run.linear(b["lnf"], w["head"], logits)


def backward(run, w: dict, gw: dict, a: dict, idx) -> None:
    """Gradients into gw (``weight_table`` of the gradient buffer) from the logits' gradient (left in a["logits"]
    by the cross-entropy), ``forward`` in exact reverse. run: the training executor (its ``op`` and ``nt``)."""
    B, T = idx.shape
    op, nt = run.op, run.nt
    BT, C = B * T, w["wte"].shape[1]
    dres, dtmp = a["dres"], a["dtmp"]
    op("linear_backward", K.linear_backward, a["logits"], a["lnf"], w["head"][0], dx=dtmp, dw=gw["head"][0],
       bias=False, accumulate=True, num_threads=nt)
    dres.fill(0.0)
    op("layernorm_backward", K.layernorm_backward, dtmp, a["res"][-1], w["ln_f"][0], a["lnf_mean"], a["lnf_rstd"],
       dres, *gw["ln_f"], num_threads=nt)
    for i in reversed(range(len(w["layers"]))):  # dres: the gradient of the residual stream
        wl, gl, la = w["layers"][i], gw["layers"][i], a["layers"][i]
        linear_backward = lambda dy, x, name, dx, **kw: op(
            "linear_backward", K.linear_backward, dy, x, wl[name][0], dx=dx, dw=gl[name][0], db=gl[name][1],
            accumulate=True, num_threads=nt, **kw)
        linear_backward(dres, la["fcg"], "mlp.c_proj", a["dfc"], gelu_x=la["fch"])  # dfc: through the GELU
        linear_backward(a["dfc"], la["ln2"], "mlp.c_fc", dtmp)
        op("layernorm_backward", K.layernorm_backward, dtmp, la["res2"], wl["ln_2"][0], la["ln2_mean"],
           la["ln2_rstd"], dres, *gl["ln_2"], num_threads=nt)
        linear_backward(dres, la["atty"].reshape(BT, C), "attn.c_proj", dtmp)
        op("attention_backward", K.attention_backward, dtmp.reshape(B, T, C), la["qkv"], la["atty"], la["lse"],
           dqkv=a["dqkv"], num_threads=nt)
        linear_backward(a["dqkv"].reshape(BT, 3 * C), la["ln1"], "attn.c_attn", dtmp)
        op("layernorm_backward", K.layernorm_backward, dtmp, a["res"][i], wl["ln_1"][0], la["ln1_mean"],
           la["ln1_rstd"], dres, *gl["ln_1"], num_threads=nt)
    op("embedding_backward", K.embedding_backward, dres.reshape(B, T, C), idx, gw["wte"], gw["wpe"], num_threads=nt)
