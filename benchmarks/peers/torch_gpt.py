"""The PyTorch peer of cllm.Model: a compact GPT-2 (nanoGPT-like) with the same state-dict names, shapes and
architecture, so that cllm's weights load into it and the two can be compared and timed side by side.

Pre-LayerNorm (eps 1e-5), learned positions, GELU tanh approximation, q/k/v as consecutive thirds of c_attn's
output with heads contiguous, causal scaled-dot-product attention, output head tied to the token embedding.
``forward_cached`` is its inference path with a KV cache (preallocated per layer, as HF's StaticCache): prefill a
prompt, then one token at a time, the logits of the last position only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["GPT", "load_from_numpy", "make_optimizer", "train_step"]


def load_from_numpy(module: nn.Module, state: dict[str, np.ndarray]) -> None:
    """Copy weights into ``module`` from arrays with exactly its state-dict names and shapes."""
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise KeyError(f"load_from_numpy: state names differ (missing {missing[:5]}, unexpected {unexpected[:5]})")
    with torch.no_grad():
        for name, dst in own.items():
            src = torch.from_numpy(np.ascontiguousarray(state[name], dtype=np.float32))
            if src.shape != dst.shape:
                raise ValueError(f"load_from_numpy: {name} must have shape {list(dst.shape)} (got {list(src.shape)})")
            dst.copy_(src)


class CausalSelfAttention(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.n_heads = NH
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)

    def forward(self, x, cache=None, pos=0):
        """cache: None, or this layer's (k, v) [B, NH, Tmax, hs] holding positions < pos; x's T tokens are stored at
        pos .. pos+T-1 and attend to everything up to themselves."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # each (B, T, C); head h is columns h·hs .. (h+1)·hs
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, NH, T, hs)
        if cache is not None:
            if T > 1 and pos > 0:
                raise NotImplementedError("CausalSelfAttention: several new tokens after cached ones")
            cache[0][:, :, pos:pos + T] = k
            cache[1][:, :, pos:pos + T] = v
            k, v = cache[0][:, :, :pos + T], cache[1][:, :, :pos + T]
        # causal within a prompt; a single new token sees every cached one (is_causal would hide them)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, C, hidden):
        super().__init__()
        self.c_fc = nn.Linear(C, hidden)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(hidden, C)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, C, NH, hidden):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C, eps=1e-5)
        self.attn = CausalSelfAttention(C, NH)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5)
        self.mlp = MLP(C, hidden)

    def forward(self, x, cache=None, pos=0):
        x = x + self.attn(self.ln_1(x), cache, pos)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, context_length, d_model, n_layers, n_heads, mlp_ratio=4):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"GPT: d_model must be divisible by n_heads (got d_model={d_model}, n_heads={n_heads})")
        self.vocab_size, self.context_length = vocab_size, context_length
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, d_model),
            wpe=nn.Embedding(context_length, d_model),
            h=nn.ModuleList(Block(d_model, n_heads, mlp_ratio * d_model) for _ in range(n_layers)),
            ln_f=nn.LayerNorm(d_model, eps=1e-5),
        ))
        self.apply(self._init_weights)  # GPT-2's init; replaced by load_from_numpy when cllm's weights are copied in
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / (2 * n_layers) ** 0.5)

    @classmethod
    def from_config(cls, cfg):
        """cfg: any object with vocab_size, context_length, d_model, n_layers, n_heads (and optionally mlp_ratio)."""
        return cls(cfg.vocab_size, cfg.context_length, cfg.d_model, cfg.n_layers, cfg.n_heads,
                   getattr(cfg, "mlp_ratio", 4))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def load_from_numpy(self, state: dict[str, np.ndarray]):
        """Copy weights from a dict of arrays with exactly this model's state-dict names and shapes
        (e.g. cllm's ``Model.state_dict()``)."""
        load_from_numpy(self, state)

    def forward(self, idx, targets=None):
        """idx (B, T) int64 -> logits (B, T, V); loss = mean cross-entropy over targets != -1 (None without targets)."""
        B, T = idx.shape
        if T > self.context_length:
            raise ValueError(f"GPT.forward: sequence length must be <= {self.context_length} (got {T})")
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = F.linear(x, self.transformer.wte.weight)  # the tied output head
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss


    def new_cache(self, batch: int):
        """Per layer, (k, v) buffers [batch, NH, context_length, hs] for ``forward_cached``."""
        attn = self.transformer.h[0].attn
        NH, hs = attn.n_heads, attn.c_attn.in_features // attn.n_heads
        shape = (batch, NH, self.context_length, hs)
        return [(torch.zeros(shape), torch.zeros(shape)) for _ in self.transformer.h]

    @torch.inference_mode()
    def forward_cached(self, idx, cache, pos: int):
        """Inference with a KV cache: idx (B, T) are the tokens at positions pos .. pos+T-1 (a prompt at pos 0, or one
        new token per sequence); their keys and values go into cache. Returns the logits (B, V) of the last one."""
        B, T = idx.shape
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(pos, pos + T, device=idx.device))
        for block, layer_cache in zip(self.transformer.h, cache):
            x = block(x, layer_cache, pos)
        return F.linear(self.transformer.ln_f(x[:, -1]), self.transformer.wte.weight)


def make_optimizer(model, lr=6e-4, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8):
    """AdamW with weight decay on wte and every Linear weight; none on biases, LayerNorm and wpe (cllm's choice)."""
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and n != "transformer.wpe.weight"]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and n != "transformer.wpe.weight")]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)  # fused: its fastest CPU path


def train_step(model, opt, idx, targets, grad_clip=1.0) -> float:
    """One full training step: zero grads, forward, backward, clip the global gradient norm, AdamW step."""
    opt.zero_grad(set_to_none=True)
    _, loss = model(idx, targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.item()
