"""Model configuration: the GPT-2 architecture's sizes, validated, with named presets."""

from __future__ import annotations

import dataclasses

from ..runtime import checks

__all__ = ["PRESETS", "ModelConfig"]

# name -> (vocab_size, context_length, d_model, n_layers, n_heads)
PRESETS = {
    "tiny": (512, 64, 64, 2, 2),  # 0.14 M parameters: tests and smoke runs
    "mini": (8192, 256, 192, 4, 3),  # 3.4 M: the main job's (cllm pipeline) default, the best in 15 minutes on 2 cores
    "small": (8192, 256, 256, 4, 4),  # 5.3 M: the reference configuration of the benchmarks
    "base": (50304, 1024, 768, 12, 12),  # 124 M: GPT-2 small's shape
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of a GPT-2 style model (pre-LayerNorm, learned positions, GELU, tied output head).

    vocab_size V, context_length T (the longest sequence), d_model C, n_layers L, n_heads NH (C % NH == 0),
    mlp_ratio: the MLP's hidden width is mlp_ratio·C.
    """

    vocab_size: int
    context_length: int
    d_model: int
    n_layers: int
    n_heads: int
    mlp_ratio: int = 4

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = checks.integer(getattr(self, field.name), f"ModelConfig: {field.name}", 1)
            object.__setattr__(self, field.name, value)
        if self.d_model % self.n_heads:
            raise ValueError(f"ModelConfig: d_model must be divisible by n_heads (got d_model={self.d_model}, "
                             f"n_heads={self.n_heads})")

    @classmethod
    def preset(cls, name: str) -> "ModelConfig":
        """One of the named sizes: "tiny", "mini" (cllm pipeline's), "small" (the reference), "base" (GPT-2 small's
        shape)."""
        if name not in PRESETS:
            raise ValueError(f"ModelConfig.preset: name must be one of {sorted(PRESETS)} (got {name!r})")
        return cls(*PRESETS[name])

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_params(self) -> int:
        """Number of parameters (the output head is tied to the token embedding, so counted once)."""
        V, T, C, L, H = self.vocab_size, self.context_length, self.d_model, self.n_layers, self.mlp_ratio * self.d_model
        per_layer = 2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + H * C + H + C * H + C
        return V * C + T * C + L * per_layer + 2 * C

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
