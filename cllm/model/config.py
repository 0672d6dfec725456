"""Model configuration: an architecture ("gpt2" or "llama") and its sizes, validated, with named presets."""

from __future__ import annotations

import dataclasses
import math

from ..runtime import checks

__all__ = ["ARCHS", "PRESETS", "ModelConfig"]

ARCHS = ("gpt2", "llama")

# name -> (vocab_size, context_length, d_model, n_layers, n_heads), for either architecture
PRESETS = {
    "tiny": (512, 64, 64, 2, 2),  # 0.14 M parameters (gpt2): tests and smoke runs
    "mini": (8192, 256, 192, 4, 3),  # 3.4 M: the main job's (cllm pipeline) default, the best in 15 minutes on 2 cores
    "small": (8192, 256, 256, 4, 4),  # 5.3 M: the reference configuration of the benchmarks
    "base": (50304, 1024, 768, 12, 12),  # 124 M: GPT-2 small's shape
}

# Options that only arch="llama" has, with the value gpt2 must keep.
_LLAMA_ONLY = {"mlp_hidden": 0, "tie_embeddings": True, "qk_norm": False, "norm_eps": 1e-6, "rope_theta": 10_000.0}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """An architecture and its sizes.

    vocab_size V, context_length T (the longest sequence), d_model C, n_layers L, n_heads NH (C % NH == 0).

    ``arch="gpt2"``: pre-LayerNorm, learned positions, GELU MLP of width mlp_ratio·C, biases, tied output head.
    ``arch="llama"`` (Llama / Qwen3): pre-RMSNorm (eps ``norm_eps``), rotary positions (``rope_theta``, HF's
    half-split rotation; head size even), SwiGLU MLP of width ``mlp_hidden`` (0: 8C/3 rounded up to a multiple of
    32, Llama's ratio), no biases, ``qk_norm`` (Qwen3's RMSNorm over each head of q and k), the output head tied to
    the token embedding or its own (``tie_embeddings``).
    """

    vocab_size: int
    context_length: int
    d_model: int
    n_layers: int
    n_heads: int
    mlp_ratio: int = 4
    arch: str = "gpt2"
    mlp_hidden: int = 0
    tie_embeddings: bool = True
    qk_norm: bool = False
    norm_eps: float = 1e-6
    rope_theta: float = 10_000.0

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "d_model", "n_layers", "n_heads", "mlp_ratio"):
            object.__setattr__(self, name, checks.integer(getattr(self, name), f"ModelConfig: {name}", 1))
        object.__setattr__(self, "mlp_hidden", checks.integer(self.mlp_hidden, "ModelConfig: mlp_hidden", 0))
        for name in ("tie_embeddings", "qk_norm"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"ModelConfig: {name} must be True or False (got {getattr(self, name)!r})")
        object.__setattr__(self, "norm_eps", checks.number(self.norm_eps, "ModelConfig: norm_eps", 0.0,
                                                           low_open=True))
        object.__setattr__(self, "rope_theta", checks.number(self.rope_theta, "ModelConfig: rope_theta", 1.0,
                                                             low_open=True))
        if self.arch not in ARCHS:
            raise ValueError(f"ModelConfig: arch must be one of {ARCHS} (got {self.arch!r})")
        if self.d_model % self.n_heads:
            raise ValueError(f"ModelConfig: d_model must be divisible by n_heads (got d_model={self.d_model}, "
                             f"n_heads={self.n_heads})")
        if self.arch == "gpt2":
            for name, value in _LLAMA_ONLY.items():
                if getattr(self, name) != value:
                    raise ValueError(f"ModelConfig: {name} is an option of arch='llama' (gpt2 has {value!r}; got "
                                     f"{getattr(self, name)!r})")
        elif self.head_dim % 2:
            raise ValueError(f"ModelConfig: arch='llama' needs an even head size for its rotary embedding (got "
                             f"d_model / n_heads = {self.head_dim})")

    @classmethod
    def preset(cls, name: str, arch: str = "gpt2", **options) -> "ModelConfig":
        """One of the named sizes: "tiny", "mini" (cllm pipeline's), "small" (the reference), "base" (GPT-2 small's
        shape), in either architecture; ``options`` set the other fields (``qk_norm=True``, ...)."""
        if name not in PRESETS:
            raise ValueError(f"ModelConfig.preset: name must be one of {sorted(PRESETS)} (got {name!r})")
        return cls(*PRESETS[name], arch=arch, **options)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def hidden_size(self) -> int:
        """The MLP's width H: mlp_ratio·C for gpt2; mlp_hidden, or 8C/3 rounded up to a multiple of 32, for llama."""
        if self.arch == "gpt2":
            return self.mlp_ratio * self.d_model
        return self.mlp_hidden or 32 * math.ceil(8 * self.d_model / 3 / 32)

    @property
    def n_params(self) -> int:
        """Number of parameters (a tied output head counted once)."""
        V, T, C, L, H = self.vocab_size, self.context_length, self.d_model, self.n_layers, self.hidden_size
        if self.arch == "gpt2":
            per_layer = 2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + H * C + H + C * H + C
            return V * C + T * C + L * per_layer + 2 * C
        per_layer = 2 * C + 4 * C * C + 3 * H * C + (2 * self.head_dim if self.qk_norm else 0)
        return V * C * (1 if self.tie_embeddings else 2) + L * per_layer + C

    def to_dict(self) -> dict:
        """The fields, for a file's header; a gpt2 config leaves out llama's options (files stay as they were)."""
        d = dataclasses.asdict(self)
        if self.arch == "gpt2":
            for name in (*_LLAMA_ONLY, "arch"):
                del d[name]
        return d
