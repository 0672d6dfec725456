"""The architectures, each described once in its own module (``gpt2``, ``llama``) with the same parts:

- ``parameter_shapes(config)``: state-dict names and shapes, in buffer order; ``stacked(config)``: the groups of
  tensors laid out back to back so that one GEMM serves them (llama's q/k/v and gate/up), by the name the weight
  table gives the stack;
- ``activation_shapes(config, B, T)``: (per layer, once, backward scratch) buffer shapes of a training step;
- ``init_weights(views, config, rng)``: the initialisation;
- ``weight_table(views, config)``: the tensors as the forward description names them (applied to the gradient
  buffer's views, the matching gradients);
- ``forward(run, w, b, idx, logits)``: the ops in order, each on named buffers, computed by an *executor* ``run``;
- ``backward(run, w, gw, a, idx)``: the same sequence in exact reverse (training only).

Training (``Model``) runs ``forward`` with GEMMs into the step's activation arena, keeping what the backward needs;
the decoder's prefill (``Decoder``) runs it over one prompt with weights packed for few rows and an attention that
also fills the KV cache. Both executors give every row the same bits, so a prefill's logits equal the training
forward's.

An executor has ``embedding(idx, wte, wpe, out)`` (wpe None: no position table), ``layernorm(x, weights, out, mean,
rstd)``, ``rmsnorm(x, weight, out, rstd)``, ``linear(x, weights, out, residual=None, gelu_out=None)``
(``residual``: out = residual + x · wᵀ + b; ``gelu_out``: also gelu(out)), ``qk_rotary(qkv_in, norms, qkv,
rstd)`` (QK-norm, when ``norms`` is (q_norm, k_norm), then rotary positions), ``attention(layer, qkv, out, lse)``,
``swiglu(gu, out)`` and ``logits_rows(x)`` (the rows whose logits are wanted: all of them in training, the last one
in prefill). ``weights`` are whatever the executor's table holds for a layer's name: (weight, bias or None) for
training, a ``kernels.PackedLinear`` for prefill.

Shapes: B sequences of T positions, C = d_model, H the MLP width, NH heads of hs; row-wise buffers are [B·T, width],
qkv [B, T, 3C] (q, k, v; heads contiguous), the attention's output [B, T, C] and its log-sum-exps [B, NH, T].
"""

from __future__ import annotations

from . import gpt2, llama

__all__ = ["architecture", "gpt2", "llama"]


def architecture(config):
    """The module that describes config.arch."""
    return {"gpt2": gpt2, "llama": llama}[config.arch]
