"""Llama / Qwen3: token embedding (no position table); L blocks of x += attn(rmsnorm(x)) with rotary positions on q
and k (and, with ``qk_norm``, Qwen3's RMSNorm over each head of q and k before them); x += down(silu(gate(h))·up(h))
with h = rmsnorm(x); a final RMSNorm; the output head tied to the embedding or its own. No biases. HF Llama's and
Qwen3's state-dict names and nn.Linear layouts, so that export is a write. The parts every architecture has are
listed in ``cllm.model.arch``."""

from __future__ import annotations

import numpy as np

from ... import kernels as K

__all__ = ["activation_shapes", "backward", "block", "forward", "init_weights", "parameter_shapes", "stacked",
           "weight_table"]


def parameter_shapes(config) -> dict[str, tuple]:
    """HF names and shapes, in buffer order: q, k, v (and gate, up) back to back, each trio one [3C, C] GEMM."""
    V, C, H, hs = config.vocab_size, config.d_model, config.hidden_size, config.head_dim
    shapes = {"model.embed_tokens.weight": (V, C)}
    for i in range(config.n_layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (C,)
        for name in ("q_proj", "k_proj", "v_proj"):
            shapes[p + f"self_attn.{name}.weight"] = (C, C)
        if config.qk_norm:
            shapes.update({p + "self_attn.q_norm.weight": (hs,), p + "self_attn.k_norm.weight": (hs,)})
        shapes.update({p + "self_attn.o_proj.weight": (C, C), p + "post_attention_layernorm.weight": (C,),
                       p + "mlp.gate_proj.weight": (H, C), p + "mlp.up_proj.weight": (H, C),
                       p + "mlp.down_proj.weight": (C, H)})
    shapes["model.norm.weight"] = (C,)
    if not config.tie_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def stacked(config) -> dict[str, tuple]:
    """The stacks one GEMM serves: name -> the state-dict names laid out back to back under it."""
    stacks = {}
    for i in range(config.n_layers):
        p = f"model.layers.{i}."
        stacks[p + "self_attn.qkv_proj.weight"] = tuple(p + f"self_attn.{n}_proj.weight" for n in "qkv")
        stacks[p + "mlp.gate_up_proj.weight"] = (p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight")
    return stacks


def activation_shapes(config, B: int, T: int) -> tuple[dict, dict, dict]:
    """(per layer, once, backward scratch): name -> shape of every buffer a training step on [B, T] uses."""
    C, H, V, NH = config.d_model, config.hidden_size, config.vocab_size, config.n_heads
    BT = B * T
    layer = {"ln1": (BT, C), "ln1_rstd": (BT,), "qkv_in": (BT, 3 * C), "qkv": (B, T, 3 * C),
             **({"qk_rstd": (BT, 2 * NH)} if config.qk_norm else {}), "atty": (B, T, C), "lse": (B, NH, T),
             "res2": (BT, C), "ln2": (BT, C), "ln2_rstd": (BT,), "gu": (BT, 2 * H), "act": (BT, H),
             "res": (BT, C)}  # qkv_in: the projection's output; qkv: rotated, the attention's input
    once = {"res0": (BT, C), "lnf": (BT, C), "lnf_rstd": (BT,), "logits": (BT, V), "losses": (BT,)}
    scratch = {"dres": (BT, C), "dtmp": (BT, C), "dqkv": (B, T, 3 * C), "dgu": (BT, 2 * H), "dact": (BT, H)}
    return layer, once, scratch


def init_weights(views: dict, config, rng) -> None:
    """N(0, 0.02) for the embedding, the head and the input projections (HF's initializer_range); zeros for the
    projections back into the residual stream (o_proj, down_proj), so that every block starts as the identity;
    norm weights 1."""
    for name, view in views.items():
        if "norm" in name:
            view[...] = 1.0
        elif name.endswith(("o_proj.weight", "down_proj.weight")):
            view[...] = 0.0
        else:
            view[...] = rng.standard_normal(view.shape, dtype=np.float32) * np.float32(0.02)


def weight_table(v: dict, config) -> dict:
    """The tensors as ``forward`` names them (v: the state dict's views and ``stacked``'s). Linear layers are
    (weight, None) pairs: no biases."""
    layers = []
    for i in range(config.n_layers):
        w = lambda name: v[f"model.layers.{i}.{name}.weight"]
        layers.append({"input_layernorm": w("input_layernorm"), "qkv_proj": (w("self_attn.qkv_proj"), None),
                       "qk_norm": (w("self_attn.q_norm"), w("self_attn.k_norm")) if config.qk_norm else None,
                       "o_proj": (w("self_attn.o_proj"), None),
                       "post_attention_layernorm": w("post_attention_layernorm"),
                       "gate_up_proj": (w("mlp.gate_up_proj"), None), "down_proj": (w("mlp.down_proj"), None)})
    head = v["model.embed_tokens.weight" if config.tie_embeddings else "lm_head.weight"]
    return {"embed": v["model.embed_tokens.weight"], "norm": v["model.norm.weight"], "head": (head, None),
            "layers": layers}


def block(run, i: int, w: dict, x, a: dict, out) -> None:
    """Layer i: res2 = x + o_proj(attn(rotary(qkv_proj(rmsnorm(x))))); out = res2 + down(swiglu(gate_up(
    rmsnorm(res2)))). x, out [BT, C]; w: the layer's ``weight_table`` entry; a: its buffers."""
    run.rmsnorm(x, w["input_layernorm"], a["ln1"], a["ln1_rstd"])
    run.linear(a["ln1"], w["qkv_proj"], a["qkv_in"])
    run.qk_rotary(a["qkv_in"], w["qk_norm"], a["qkv"], a.get("qk_rstd"))
    run.attention(i, a["qkv"], a["atty"], a["lse"])
    run.linear(a["atty"], w["o_proj"], a["res2"], residual=x)
    run.rmsnorm(a["res2"], w["post_attention_layernorm"], a["ln2"], a["ln2_rstd"])
    run.linear(a["ln2"], w["gate_up_proj"], a["gu"])
    run.swiglu(a["gu"], a["act"])
    run.linear(a["act"], w["down_proj"], out, residual=a["res2"])


def forward(run, w: dict, b: dict, idx, logits) -> None:
    """Token embedding, the blocks, the final norm, the head. idx [B, T] int32 -> logits [rows, V].
    b: "res" (L + 1 buffers [BT, C]), "layers", "lnf", "lnf_rstd"."""
    run.embedding(idx, w["embed"], None, b["res"][0])
    for i, (layer, buffers) in enumerate(zip(w["layers"], b["layers"])):
        block(run, i, layer, b["res"][i], buffers, b["res"][i + 1])
    run.rmsnorm(run.logits_rows(b["res"][-1]), w["norm"], b["lnf"], b["lnf_rstd"])
    run.linear(b["lnf"], w["head"], logits)


def backward(run, w: dict, gw: dict, a: dict, idx) -> None:
    """Gradients into gw (``weight_table`` of the gradient buffer) from the logits' gradient (in a["logits"]),
    ``forward`` in exact reverse. run: the training executor (``op``, ``nt``, and the rotary tables and positions)."""
    B, T = idx.shape
    op, nt = run.op, run.nt
    BT, C = B * T, w["embed"].shape[1]
    dres, dtmp = a["dres"], a["dtmp"]
    linear_backward = lambda dy, x, wl, gl, dx: op("linear_backward", K.linear_backward, dy, x, wl[0], dx=dx,
                                                   dw=gl[0], bias=False, accumulate=True, num_threads=nt)
    rmsnorm_backward = lambda dy, x, wn, rstd, gn: op("rmsnorm_backward", K.rmsnorm_backward, dy, x, wn, rstd, dres,
                                                      gn, num_threads=nt)  # adds into dres
    linear_backward(a["logits"], a["lnf"], w["head"], gw["head"], dtmp)
    dres.fill(0.0)
    rmsnorm_backward(dtmp, a["res"][-1], w["norm"], a["lnf_rstd"], gw["norm"])
    for i in reversed(range(len(w["layers"]))):  # dres: the gradient of the residual stream
        wl, gl, la = w["layers"][i], gw["layers"][i], a["layers"][i]
        linear_backward(dres, la["act"], wl["down_proj"], gl["down_proj"], a["dact"])
        op("swiglu_backward", K.swiglu_backward, la["gu"], a["dact"], dgu=a["dgu"], num_threads=nt)
        linear_backward(a["dgu"], la["ln2"], wl["gate_up_proj"], gl["gate_up_proj"], dtmp)
        rmsnorm_backward(dtmp, la["res2"], wl["post_attention_layernorm"], la["ln2_rstd"],
                         gl["post_attention_layernorm"])
        linear_backward(dres, la["atty"].reshape(BT, C), wl["o_proj"], gl["o_proj"], dtmp)
        op("attention_backward", K.attention_backward, dtmp.reshape(B, T, C), la["qkv"], la["atty"], la["lse"],
           dqkv=a["dqkv"], num_threads=nt)
        dqkv = a["dqkv"].reshape(BT, 3 * C)
        norms = {} if wl["qk_norm"] is None else {
            "q_norm": wl["qk_norm"][0], "k_norm": wl["qk_norm"][1], "rstd": la["qk_rstd"],
            "dq_norm": gl["qk_norm"][0], "dk_norm": gl["qk_norm"][1]}
        op("qk_rotary_backward", K.qk_rotary_backward, dqkv, la["qkv_in"], run.n_heads, run.pos, run.cos, run.sin,
           **norms, num_threads=nt)
        linear_backward(dqkv, la["ln1"], wl["qkv_proj"], gl["qkv_proj"], dtmp)
        rmsnorm_backward(dtmp, a["res"][i], wl["input_layernorm"], la["ln1_rstd"], gl["input_layernorm"])
    op("embedding_backward", K.embedding_backward, dres.reshape(B, T, C), idx, gw["embed"], num_threads=nt)
