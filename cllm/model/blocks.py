"""The forward pass of each architecture, written once.

``gpt2_forward`` names the ops of a GPT-2 in order, each on named buffers; an *executor* ``run`` says how each op
is computed. Training (``Model``) runs it with GEMMs into the step's activation arena, keeping what the backward
needs; the decoder's prefill (``Decoder``) runs it over one prompt with weights packed for few rows and an attention
that also fills the KV cache. Both executors give every row the same bits, so a prefill's logits equal the training
forward's. The backward (``Model._backward``) is this sequence in exact reverse. A second architecture is a second
description beside this one, with its own ops in the backend.

An executor has: ``embedding(idx, wte, wpe, out)``, ``layernorm(x, weights, out, mean, rstd)``, ``linear(x,
weights, out, residual=None, gelu_out=None)`` (``residual``: out = residual + x · wᵀ + b; ``gelu_out``: also
gelu(out)), ``attention(layer, qkv, out, lse)`` and ``logits_rows(x)`` (the rows whose logits are wanted: all of
them in training, the last one in prefill). ``weights`` are whatever the executor's table holds for a layer's
name: (weight, bias) for training, a ``kernels.PackedLinear`` for prefill.

Shapes: B sequences of T positions, C = d_model, H the MLP width; row-wise buffers are [B·T, width], qkv
[B, T, 3C] (q, k, v; heads contiguous), the attention's output [B, T, C] and its log-sum-exps [B, NH, T].
"""

from __future__ import annotations

__all__ = ["GPT2_LAYER", "gpt2_block", "gpt2_forward"]

# A GPT-2 layer's weights by name (each a weight and a bias: state dict "transformer.h.{i}.{name}.weight|bias").
GPT2_LAYER = ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")


def gpt2_block(run, i: int, w: dict, x, a: dict, out) -> None:
    """Layer i: res2 = x + attn(ln_1(x)); out = res2 + mlp(ln_2(res2)). x, out [BT, C]; w: the layer's weights
    by GPT2_LAYER name; a: its buffers (``parameters.activation_shapes``' per-layer names)."""
    run.layernorm(x, w["ln_1"], a["ln1"], a["ln1_mean"], a["ln1_rstd"])
    run.linear(a["ln1"], w["attn.c_attn"], a["qkv"])
    run.attention(i, a["qkv"], a["atty"], a["lse"])
    run.linear(a["atty"], w["attn.c_proj"], a["res2"], residual=x)
    run.layernorm(a["res2"], w["ln_2"], a["ln2"], a["ln2_mean"], a["ln2_rstd"])
    run.linear(a["ln2"], w["mlp.c_fc"], a["fch"], gelu_out=a["fcg"])  # fcg = gelu(fch)
    run.linear(a["fcg"], w["mlp.c_proj"], out, residual=a["res2"])


def gpt2_forward(run, w: dict, b: dict, idx, logits) -> None:
    """Token + position embedding, the blocks, ln_f, the tied head. idx [B, T] int32 -> logits [rows, V].

    w: "wte" [V, C], "wpe" [T, C], "ln_f", "head" (the executor's weights for them), "layers" (per layer, by
    GPT2_LAYER name). b: "res" (the residual stream before each layer and after the last, L + 1 buffers [BT, C]),
    "layers" (per layer, the block's buffers), "lnf", "lnf_mean", "lnf_rstd" (for logits_rows' rows)."""
    run.embedding(idx, w["wte"], w["wpe"], b["res"][0])
    for i, (layer, buffers) in enumerate(zip(w["layers"], b["layers"])):
        gpt2_block(run, i, layer, b["res"][i], buffers, b["res"][i + 1])
    run.layernorm(run.logits_rows(b["res"][-1]), w["ln_f"], b["lnf"], b["lnf_mean"], b["lnf_rstd"])
    run.linear(b["lnf"], w["head"], logits)
