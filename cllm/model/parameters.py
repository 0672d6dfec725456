"""Where a GPT's numbers live: the state-dict names and shapes in buffer order, the flat buffer's layout, which
tensors are weight-decayed, and the buffers (and bytes) a training step needs."""

from __future__ import annotations

import math

from .config import ModelConfig

__all__ = ["activation_shapes", "is_decayed", "memory_estimate", "parameter_layout", "parameter_shapes"]

ALIGN = 16  # floats: every tensor of the flat buffers starts on a 64-byte boundary


def parameter_shapes(config: ModelConfig) -> dict[str, tuple]:
    """State-dict names and shapes (nanoGPT names, PyTorch nn.Linear [out, in] layouts), in buffer order."""
    V, T, C, H = config.vocab_size, config.context_length, config.d_model, config.mlp_ratio * config.d_model
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


def parameter_layout(config: ModelConfig) -> tuple[dict[str, tuple[int, tuple]], int]:
    """({name: (offset, shape)}, total size) of the flat parameter buffer, in elements: the tensors in
    ``parameter_shapes`` order, each starting on a multiple of ALIGN (64 bytes), zeros in between."""
    layout, offset = {}, 0
    for name, shape in parameter_shapes(config).items():
        layout[name] = (offset, shape)
        offset += -(-math.prod(shape) // ALIGN) * ALIGN
    return layout, offset


def activation_shapes(config: ModelConfig, B: int, T: int) -> tuple[dict, dict, dict]:
    """(per layer, once, backward scratch): name -> shape of every buffer a training step on [B, T] uses."""
    C, H, V, NH = config.d_model, config.mlp_ratio * config.d_model, config.vocab_size, config.n_heads
    BT = B * T
    layer = {"ln1": (BT, C), "ln1_mean": (BT,), "ln1_rstd": (BT,), "qkv": (B, T, 3 * C), "atty": (B, T, C),
             "lse": (B, NH, T), "res2": (BT, C), "ln2": (BT, C), "ln2_mean": (BT,), "ln2_rstd": (BT,),
             "fch": (BT, H), "fcg": (BT, H), "res": (BT, C)}  # res: the block's output
    once = {"res0": (BT, C), "lnf": (BT, C), "lnf_mean": (BT,), "lnf_rstd": (BT,), "logits": (BT, V),
            "losses": (BT,)}
    scratch = {"dres": (BT, C), "dtmp": (BT, C), "dqkv": (B, T, 3 * C), "dfc": (BT, H)}
    return layer, once, scratch


def memory_estimate(config: ModelConfig, batch: int, seq: int) -> dict:
    """Bytes a training step on [batch, seq] needs: parameters, gradients and AdamW moments (16 bytes per
    parameter), the activations kept for the backward, and the backward's scratch."""
    layer, once, scratch = activation_shapes(config, batch, seq)
    nbytes = lambda shapes: 4 * sum(math.prod(s) for s in shapes.values())
    params = 4 * parameter_layout(config)[1]
    return {"parameters": params, "gradients": params, "optimizer": 2 * params,
            "activations": config.n_layers * nbytes(layer) + nbytes(once), "scratch": nbytes(scratch)}


def is_decayed(name: str) -> bool:
    """AdamW's weight decay applies to the 2-D weight matrices (the token embedding / tied head included), not to
    biases or LayerNorm parameters. nanoGPT decays every parameter of 2 or more dimensions, the position embedding
    included; we leave the position embedding out too: it is a table of offsets, one per position, as a bias is,
    and decay would only pull it towards 0 without regularising what the model computes."""
    return name.endswith(".weight") and "ln_" not in name and name != "transformer.wpe.weight"
