"""The CPU backend: the one door to compiled code (ARCHITECTURE.md "Backends"), public as ``cllm.kernels``.

Model, optimizer, decoder and trainer reach the C kernels only through these functions, which also own the memory
the kernels want (``memory.float32_views``: one huge-page-aligned arena; ``decode``: weights packed by panels).
Each entry point validates dtype, rank, shape and contiguity (a clear TypeError/ValueError naming the argument,
never a crash), resolves ``num_threads`` through ``cllm.runtime.threads`` and calls ``cllm._core._kernels`` with
the GIL released. Shapes use the short names of csrc/cllm.h: x [M, K], w [N, K], b [N], y [M, N]. A GPU backend
implements the same operations (docs/architecture.md lists them with their shapes).
"""

from .attention import (KV_ALIGN, attention_backward, attention_cache_store, attention_decode, attention_forward,
                        kv_cache)
from .build import get_isa, set_isa, show_config
from .decode import DECODE_LAYER, GptDecodeStep
from .elementwise import gelu_backward, gelu_forward, residual_forward, swiglu_backward, swiglu_forward
from .layers import (crossentropy, embedding_backward, embedding_forward, layernorm_backward, layernorm_forward,
                     rmsnorm_backward, rmsnorm_forward)
from .linear import (PANEL, PackedLinear, linear_backward, linear_forward, linear_forward_packed, pack_linear_weights,
                     tree_reduce)
from .memory import float32_views
from .optimizer import adamw_step, sum_squares
from .rotary import qk_rotary_backward, qk_rotary_forward, rope_backward, rope_forward, rope_table

__all__ = ["DECODE_LAYER", "GptDecodeStep", "KV_ALIGN", "PANEL", "PackedLinear", "adamw_step", "attention_backward",
           "attention_cache_store", "attention_decode", "attention_forward", "crossentropy", "embedding_backward",
           "embedding_forward", "float32_views", "gelu_backward", "gelu_forward", "get_isa", "kv_cache",
           "layernorm_backward", "layernorm_forward", "linear_backward", "linear_forward", "linear_forward_packed",
           "pack_linear_weights", "qk_rotary_backward", "qk_rotary_forward", "residual_forward", "rmsnorm_backward",
           "rmsnorm_forward", "rope_backward", "rope_forward", "rope_table", "set_isa", "show_config", "sum_squares",
           "swiglu_backward", "swiglu_forward", "tree_reduce"]
