"""The PyTorch peer of cllm.Model with ``arch="llama"``: a compact Llama / Qwen3 with HF's state-dict names and
nn.Linear layouts, so that cllm's weights load into it (and into transformers' LlamaForCausalLM / Qwen3ForCausalLM)
and the two can be compared and timed side by side.

Pre-RMSNorm (``F.rms_norm``), separate q/k/v projections, optional QK-norm (Qwen3: RMSNorm over each head of q and
k, before the rotation), rotary embeddings as HF's ``apply_rotary_pos_emb`` (x·cos + rotate_half(x)·sin), causal
``F.scaled_dot_product_attention``, SwiGLU MLP (``F.silu(gate) * up``), no biases, output head tied or untied.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .torch_gpt import load_from_numpy

__all__ = ["Llama"]


class RMSNorm(nn.Module):
    def __init__(self, width, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(width)), eps

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, C, NH, qk_norm, eps):
        super().__init__()
        self.n_heads, self.hs = NH, C // NH
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(C, C, bias=False) for _ in range(4))
        if qk_norm:
            self.q_norm, self.k_norm = RMSNorm(self.hs, eps), RMSNorm(self.hs, eps)
        self.qk_norm = qk_norm

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        shape = (B, T, self.n_heads, self.hs)
        q, k, v = self.q_proj(x).view(shape), self.k_proj(x).view(shape), self.v_proj(x).view(shape)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, NH, T, hs)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(C, H, bias=False), nn.Linear(C, H, bias=False)
        self.down_proj = nn.Linear(H, C, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg.d_model, cfg.n_heads, cfg.qk_norm, cfg.norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg.d_model, cfg.hidden_size)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):  # HF's "model." prefix
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)


class Llama(nn.Module):
    """cfg: a cllm.ModelConfig with arch="llama" (only its fields are read)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Body(cfg)
        if not cfg.tie_embeddings:
            self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        hs = cfg.head_dim
        inv_freq = cfg.rope_theta ** (-torch.arange(0, hs, 2, dtype=torch.float64) / hs)
        angles = torch.arange(cfg.context_length, dtype=torch.float64)[:, None] * inv_freq[None, :]
        emb = torch.cat((angles, angles), dim=-1)  # HF: cat((freqs, freqs), -1)
        self.register_buffer("cos", emb.cos().float(), persistent=False)
        self.register_buffer("sin", emb.sin().float(), persistent=False)

    def load_from_numpy(self, state: dict[str, np.ndarray]):
        """Copy weights from arrays with exactly this model's state-dict names and shapes (cllm's state_dict())."""
        load_from_numpy(self, state)

    def forward(self, idx, targets=None):
        """idx (B, T) int64 -> logits (B, T, V); loss = mean cross-entropy over targets != -1."""
        T = idx.shape[1]
        cos, sin = self.cos[:T], self.sin[:T]
        x = self.model.embed_tokens(idx)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        x = self.model.norm(x)
        head = self.model.embed_tokens.weight if self.cfg.tie_embeddings else self.lm_head.weight
        logits = F.linear(x, head)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss
