"""Inference over a KV cache: prefill a prompt once, then one token at a time.

A ``Decoder`` holds the model's weight matrices made ready for few-row products (``kernels.PackedLinear``: packed
by panels, streamed once per step for all the rows of the step) and, per layer, a key and a value cache for
``slots`` sequences of up to context_length tokens (``kernels.kv_cache``). It is a snapshot: changes to the model's
weights after it was made are not seen. Not for concurrent use.

``prefill`` runs a prompt through the model's forward description (``blocks.gpt2_forward``) with an executor whose
linear layers are packed and whose attention also stores the prompt's keys and values; ``decode`` is one kernel
call for all its rows (``kernels.GptDecodeStep``, over a table of these weights). Every kernel gives a row the bits the
training forward gives it, so the logits of both equal, bit for bit, those of ``Model.forward`` on the whole
sequence (tests/test_generate.py). Shapes: C = d_model, V vocabulary, NH heads, hs = C/NH, T prompt tokens.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from .. import kernels as K
from ..runtime.checks import is_integer
from ..runtime.threads import effective_cpu_count, resolve_num_threads
from .blocks import GPT2_LAYER, gpt2_forward
from .parameters import activation_shapes

__all__ = ["Decoder"]

# The decode table's field (kernels.DECODE_LAYER) for each of a GPT-2 layer's weights.
DECODE_FIELDS = {"ln_1": "ln1", "attn.c_attn": "attn", "attn.c_proj": "attn_proj", "ln_2": "ln2",
                 "mlp.c_fc": "fc", "mlp.c_proj": "fc_proj"}
LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


class Decoder:
    """Packed weights and a KV cache for ``slots`` sequences of ``model``; see the module's docstring."""

    def __init__(self, model, slots: int = 1, *, num_threads=None):
        if not is_integer(slots) or slots < 1:
            raise ValueError(f"Decoder: slots must be an integer >= 1 (got {slots!r})")
        cfg = self.config = model.config
        self.num_threads = resolve_num_threads(num_threads, "Decoder: num_threads")
        # The decode step is one parallel region whose threads meet at spinning barriers: with more threads than
        # CPUs a spinner holds the core a worker needs (4 threads on 2 CPUs: 187 tokens/s instead of 2,200).
        # The step gives the same bits for any count, so it runs on at most the usable CPUs.
        self._step_threads = min(self.num_threads, effective_cpu_count())
        self.capacity = cfg.context_length  # tokens a slot holds: the model has no positions beyond
        p = model.state_dict()
        pair = lambda name: (p[name + ".weight"], p[name + ".bias"])
        self._caches = [K.kv_cache(slots, cfg.n_heads, cfg.head_dim, self.capacity) for _ in range(cfg.n_layers)]
        layers = [{name: K.PackedLinear(*pair(f"transformer.h.{i}.{name}")) if name in LINEARS
                   else pair(f"transformer.h.{i}.{name}") for name in GPT2_LAYER} for i in range(cfg.n_layers)]
        wte = p["transformer.wte.weight"]
        self._weights = {"wte": wte, "wpe": p["transformer.wpe.weight"], "ln_f": pair("transformer.ln_f"),
                         "head": K.PackedLinear(wte), "layers": layers}  # the tied output head
        table = [{DECODE_FIELDS[name]: w for name, w in layer.items()} | {"cache": cache}
                 for layer, cache in zip(layers, self._caches)]
        self._step = K.GptDecodeStep(wte=wte, wpe=self._weights["wpe"], ln_f=self._weights["ln_f"],
                                  head=self._weights["head"], layers=table, max_rows=slots)
        self.lengths = [0] * slots  # tokens cached per slot
        self._arena = _PrefillArena(cfg)

    @property
    def slots(self) -> int:
        return len(self.lengths)

    def prefill(self, slot: int, ids) -> np.ndarray:
        """Run ids (1 to context_length token ids) through the model as the whole content of cache slot ``slot``;
        returns the logits [V] (a new array) that follow the last of them."""
        if not is_integer(slot) or not 0 <= slot < self.slots:
            raise ValueError(f"Decoder.prefill: slot must be an integer in [0, {self.slots}) (got {slot!r})")
        ids = np.ascontiguousarray(ids, dtype=np.int32).reshape(1, -1)
        T = ids.shape[1]
        if not 1 <= T <= self.capacity:
            raise ValueError(f"Decoder.prefill: ids must hold 1 to {self.capacity} tokens (got {T})")
        logits = np.empty((1, self.config.vocab_size), np.float32)
        run = _PrefillRun(self._caches, int(slot), T, self.config.n_heads, self.num_threads)
        gpt2_forward(run, self._weights, self._arena.buffers(T), ids, logits)
        self.lengths[slot] = T
        return logits[0]

    def decode(self, slots, ids) -> np.ndarray:
        """One step: ids[m] is the next token of the sequence in cache slot slots[m] (distinct slots, each with
        room for one more token). Returns the logits [M, V] that follow them: a view, overwritten by the next step.
        (Plain Python on the few rows: the time between two steps is what a waiting thread must spin across.)"""
        slots, ids = [operator.index(s) for s in slots], [operator.index(t) for t in ids]
        if len(ids) != len(slots):
            raise ValueError(f"Decoder.decode: ids must hold one token per slot ({len(slots)}), got {len(ids)}")
        for s in slots:
            if not 0 <= s < self.slots:
                raise ValueError(f"Decoder.decode: slots must be in [0, {self.slots}) (got {slots})")
            if self.lengths[s] >= self.capacity:
                raise ValueError(f"Decoder.decode: slot {s} is full ({self.capacity} tokens, the context length): "
                                 "prefill it again with a shorter window")
        logits = self._step(ids, slots, [self.lengths[s] for s in slots], num_threads=self._step_threads)
        for s in slots:
            self.lengths[s] += 1
        return logits


class _PrefillArena:
    """The buffers of a prefill, allocated once for context_length positions (kernels.float32_views); ``buffers(T)``
    views their first elements in T's shapes (each C-contiguous). One set of layer buffers serves every layer, and
    the residual stream alternates between two buffers."""

    def __init__(self, cfg):
        self.cfg = cfg
        layer, once, _ = activation_shapes(cfg, 1, cfg.context_length)
        flat = {name: (math.prod(shape),) for name, shape in {**layer, **once}.items()}
        self._flat = K.float32_views([flat])[0]
        self._cached = None

    def buffers(self, T: int) -> dict:
        if self._cached is not None and self._cached[0] == T:
            return self._cached[1]
        layer, once, _ = activation_shapes(self.cfg, 1, T)
        view = lambda name, shape: self._flat[name][:math.prod(shape)].reshape(shape)
        la = {name: view(name, shape) for name, shape in layer.items()}
        ring = [view("res0", once["res0"]), view("res", layer["res"])]
        C = self.cfg.d_model
        b = {"layers": [la] * self.cfg.n_layers, "res": [ring[i % 2] for i in range(self.cfg.n_layers + 1)],
             "lnf": view("lnf", (1, C)), "lnf_mean": view("lnf_mean", (1,)), "lnf_rstd": view("lnf_rstd", (1,))}
        self._cached = (T, b)
        return b


class _PrefillRun:
    """``blocks.gpt2_forward``'s executor for one prompt of T tokens in cache slot ``slot``: packed (or GEMM) linear
    layers with the residual add and GELU as separate kernels (the bits of the training GEMM's fused epilogues),
    attention that first stores each layer's keys and values, logits for the last position only."""

    def __init__(self, caches, slot: int, T: int, n_heads: int, nt: int):
        self.caches, self.slot, self.T, self.n_heads, self.nt = caches, slot, T, n_heads, nt

    def embedding(self, idx, wte, wpe, out):
        K.embedding_forward(idx, wte, wpe, out=out.reshape(1, self.T, -1), num_threads=self.nt)

    def layernorm(self, x, w, out, mean, rstd):
        K.layernorm_forward(x, w[0], w[1], out=out, mean=mean, rstd=rstd, num_threads=self.nt)

    def linear(self, x, w, out, residual=None, gelu_out=None):
        y = w.forward(x.reshape(-1, x.shape[-1]), out=out.reshape(-1, out.shape[-1]), num_threads=self.nt)
        if residual is not None:
            K.residual_forward(residual, y, out=y, num_threads=self.nt)
        if gelu_out is not None:
            K.gelu_forward(y, out=gelu_out, num_threads=self.nt)

    def attention(self, layer, qkv, out, lse):
        kcache, vcache = self.caches[layer]
        K.attention_cache_store(qkv.reshape(self.T, -1), kcache, vcache, self.slot, num_threads=self.nt)
        K.attention_forward(qkv, self.n_heads, out=out, lse=lse, num_threads=self.nt)

    def logits_rows(self, x):
        return x[-1:]
