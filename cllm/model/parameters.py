"""Where a model's numbers live: the state-dict names and shapes in buffer order, the flat buffer's layout (with
the stacks one GEMM serves laid out back to back), which tensors are weight-decayed, and the buffers (and bytes) a
training step needs. Each architecture's own lists are in ``cllm.model.arch``."""

from __future__ import annotations

import math

import numpy as np

from .arch import architecture
from .config import ModelConfig

__all__ = ["activation_shapes", "is_decayed", "memory_estimate", "parameter_layout", "parameter_shapes",
           "parameter_views"]

ALIGN = 16  # floats: every tensor of the flat buffers starts on a 64-byte boundary (but the 2nd.. of a stack)


def parameter_shapes(config: ModelConfig) -> dict[str, tuple]:
    """State-dict names and shapes (PyTorch nn.Linear [out, in] layouts), in buffer order."""
    return architecture(config).parameter_shapes(config)


def parameter_layout(config: ModelConfig) -> tuple[dict[str, tuple[int, tuple]], int]:
    """({name: (offset, shape)}, total size) of the flat parameter buffer, in elements: the tensors in
    ``parameter_shapes`` order, each starting on a multiple of ALIGN (64 bytes), zeros in between; but the
    tensors of a stack (``arch.stacked``: llama's q, k, v) follow each other with no gap, one matrix."""
    inner = {name for names in architecture(config).stacked(config).values() for name in names[:-1]}
    layout, offset = {}, 0
    for name, shape in parameter_shapes(config).items():
        layout[name] = (offset, shape)
        offset += math.prod(shape) if name in inner else -(-math.prod(shape) // ALIGN) * ALIGN
    return layout, offset


def parameter_views(config: ModelConfig, flat: np.ndarray, layout: dict) -> tuple[dict, dict]:
    """(state-dict views, stack views) of a flat buffer of ``layout``: each stack a [Σ rows, cols] view over its
    members."""
    views = {name: flat[o:o + math.prod(shape)].reshape(shape) for name, (o, shape) in layout.items()}
    stacks = {}
    for stack, names in architecture(config).stacked(config).items():
        o, (_, cols) = layout[names[0]]
        rows = sum(layout[n][1][0] for n in names)
        stacks[stack] = flat[o:o + rows * cols].reshape(rows, cols)
    return views, stacks


def activation_shapes(config: ModelConfig, B: int, T: int) -> tuple[dict, dict, dict]:
    """(per layer, once, backward scratch): name -> shape of every buffer a training step on [B, T] uses."""
    return architecture(config).activation_shapes(config, B, T)


def memory_estimate(config: ModelConfig, batch: int, seq: int) -> dict:
    """Bytes a training step on [batch, seq] needs: parameters, gradients and AdamW moments (16 bytes per
    parameter), the activations kept for the backward, and the backward's scratch."""
    layer, once, scratch = activation_shapes(config, batch, seq)
    nbytes = lambda shapes: 4 * sum(math.prod(s) for s in shapes.values())
    params = 4 * parameter_layout(config)[1]
    return {"parameters": params, "gradients": params, "optimizer": 2 * params,
            "activations": config.n_layers * nbytes(layer) + nbytes(once), "scratch": nbytes(scratch)}


def is_decayed(name: str) -> bool:
    """Weight decay applies to the 2-D weight matrices (embeddings and heads included), not to biases or norm
    weights (gpt2's ``ln_*``, llama's ``*norm``). nanoGPT decays every parameter of 2 or more dimensions, the
    position embedding included; we leave the position embedding out too: it is a table of offsets, one per
    position, as a bias is, and decay would only pull it towards 0 without regularising what the model computes."""
    return (name.endswith(".weight") and "ln_" not in name and "norm" not in name
            and name != "transformer.wpe.weight")
