"""Inference over a KV cache: prefill a prompt once, then one token at a time.

A ``Decoder`` holds the model's weight matrices made ready for few-row products (``kernels.PackedLinear``: packed
by panels, streamed once per step for all the rows of the step) and, per layer, a key and a value cache for
``slots`` sequences of up to context_length tokens (``kernels.kv_cache``). It is a snapshot: changes to the model's
weights after it was made are not seen. Not for concurrent use.

``prefill`` runs a prompt through the architecture's forward description (``cllm.model.arch``) with an executor
whose linear layers are packed and whose attention also stores the prompt's keys and values. ``decode`` is, for
gpt2, one kernel call for all its rows (``kernels.GptDecodeStep``, over a table of these weights); for llama, the
same description run over the step's rows (``_DecodeRun``: each row rotated at its own position, attention over
its slot's cache). Every kernel gives a row the bits the training forward gives it, so the logits of both equal, bit
for bit, those of ``Model.forward`` on the whole sequence (tests/test_generate.py). Shapes: C = d_model,
V vocabulary, NH heads, hs = C/NH, T prompt tokens, M rows of a decode step.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from .. import kernels as K
from ..runtime.checks import is_integer
from ..runtime.threads import effective_cpu_count, resolve_num_threads
from .arch import architecture, gpt2
from .parameters import activation_shapes

__all__ = ["Decoder"]

# The decode table's field (kernels.DECODE_LAYER) for each of a GPT-2 layer's weights.
DECODE_FIELDS = dict(zip(gpt2.LAYER, ("ln1", "attn", "attn_proj", "ln2", "fc", "fc_proj")))


def _packed(table):
    """A weight table with every linear layer's (weight, bias) packed (kernels.PackedLinear): the layers are the
    pairs whose weight is a matrix; norms' pairs and single tensors stay as they are."""
    if isinstance(table, dict):
        return {name: _packed(value) for name, value in table.items()}
    if isinstance(table, list):
        return [_packed(value) for value in table]
    if isinstance(table, tuple) and table[0].ndim == 2:
        return K.PackedLinear(*table)
    return table


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
        self._arch = architecture(cfg)
        self._caches = [K.kv_cache(slots, cfg.n_heads, cfg.head_dim, self.capacity) for _ in range(cfg.n_layers)]
        self._rope = model._rope
        self._weights = _packed(model._weights)
        if cfg.arch == "gpt2":
            w = self._weights
            table = [{DECODE_FIELDS[name]: weights for name, weights in layer.items()} | {"cache": cache}
                     for layer, cache in zip(w["layers"], self._caches)]
            self._step = K.GptDecodeStep(wte=w["wte"], wpe=w["wpe"], ln_f=w["ln_f"], head=w["head"], layers=table,
                                         max_rows=slots)
        else:
            self._step = _DecodeStep(self, slots)
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
        run = _PrefillRun(self, int(slot), T)
        self._arch.forward(run, self._weights, self._arena.buffers(T), ids, logits)
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
    """The buffers of a forward over one sequence of up to ``positions`` rows (default: context_length), allocated
    once (kernels.float32_views); ``buffers(T, rows)`` views their first elements in T's shapes (each C-contiguous),
    with the final norm's buffers for the last ``rows`` of them. One set of layer buffers serves every layer, and
    the residual stream alternates between two buffers."""

    def __init__(self, cfg, positions: int | None = None):
        self.cfg = cfg
        layer, once, _ = activation_shapes(cfg, 1, positions or cfg.context_length)
        flat = {name: (math.prod(shape),) for name, shape in {**layer, **once}.items()}
        self._flat = K.float32_views([flat])[0]
        self._cached = None

    def buffers(self, T: int, rows: int = 1) -> dict:
        if self._cached is not None and self._cached[0] == (T, rows):
            return self._cached[1]
        layer, once, _ = activation_shapes(self.cfg, 1, T)
        view = lambda name, shape: self._flat[name][:math.prod(shape)].reshape(shape)
        la = {name: view(name, shape) for name, shape in layer.items()}
        ring = [view("res0", once["res0"]), view("res", layer["res"])]
        b = {"layers": [la] * self.cfg.n_layers, "res": [ring[i % 2] for i in range(self.cfg.n_layers + 1)],
             **{name: view(name, (rows, *once[name][1:])) for name in ("lnf", "lnf_mean", "lnf_rstd") if name in once}}
        self._cached = ((T, rows), b)
        return b


class _PackedRun:
    """What prefill and the llama decode step share: packed (or GEMM) linear layers with the residual add and GELU
    as separate kernels (the bits of the training GEMM's fused epilogues), the norms, the rotary embedding at each
    row's position ``pos`` and SwiGLU."""

    def __init__(self, decoder, pos):
        self.n_heads, self.nt, self.pos = decoder.config.n_heads, decoder.num_threads, pos
        self.eps, (self.cos, self.sin) = decoder.config.norm_eps, decoder._rope or (None, None)

    def embedding(self, idx, wte, wpe, out):
        K.embedding_forward(idx, wte, wpe, out=out.reshape(*idx.shape, -1), num_threads=self.nt)

    def layernorm(self, x, w, out, mean, rstd):
        K.layernorm_forward(x, w[0], w[1], out=out, mean=mean, rstd=rstd, num_threads=self.nt)

    def rmsnorm(self, x, w, out, rstd):
        K.rmsnorm_forward(x, w, eps=self.eps, out=out, rstd=rstd, num_threads=self.nt)

    def linear(self, x, w, out, residual=None, gelu_out=None):
        y = w.forward(x.reshape(-1, x.shape[-1]), out=out.reshape(-1, out.shape[-1]), num_threads=self.nt)
        if residual is not None:
            K.residual_forward(residual, y, out=y, num_threads=self.nt)
        if gelu_out is not None:
            K.gelu_forward(y, out=gelu_out, num_threads=self.nt)

    def qk_rotary(self, qkv_in, norms, qkv, rstd):
        q_norm, k_norm = norms or (None, None)
        K.qk_rotary_forward(qkv_in, self.n_heads, self.pos, self.cos, self.sin, q_norm=q_norm, k_norm=k_norm,
                            eps=self.eps, out=qkv.reshape(qkv_in.shape), rstd=rstd, num_threads=self.nt)

    def swiglu(self, gu, out):
        K.swiglu_forward(gu, out=out, num_threads=self.nt)


class _PrefillRun(_PackedRun):
    """The executor for one prompt of T tokens in cache slot ``slot``: attention that first stores each layer's
    keys and values, logits for the last position only."""

    def __init__(self, decoder, slot: int, T: int):
        super().__init__(decoder, np.arange(T, dtype=np.int32))
        self.caches, self.slot, self.T = decoder._caches, slot, T

    def attention(self, layer, qkv, out, lse):
        kcache, vcache = self.caches[layer]
        K.attention_cache_store(qkv.reshape(self.T, -1), kcache, vcache, self.slot, num_threads=self.nt)
        K.attention_forward(qkv, self.n_heads, out=out, lse=lse, num_threads=self.nt)

    def logits_rows(self, x):
        return x[-1:]


class _DecodeRun(_PackedRun):
    """The executor for a decode step of M rows (llama): row m is the next token of the sequence in cache slot
    slot[m], at position pos[m]; attention stores its k and v there and attends over the slot's cache."""

    def __init__(self, decoder, slot, pos):
        super().__init__(decoder, pos)
        self.caches, self.slot = decoder._caches, slot

    def attention(self, layer, qkv, out, lse):
        kcache, vcache = self.caches[layer]
        K.attention_decode(qkv.reshape(len(self.pos), -1), kcache, vcache, self.slot, self.pos,
                           out=out.reshape(len(self.pos), -1), num_threads=self.nt)

    def logits_rows(self, x):
        return x


class _DecodeStep:
    """A decode step as the architecture's forward description over the step's rows (kernels.GptDecodeStep's
    interface: ``step(ids, slots, positions, num_threads) -> logits [M, V]``, a view overwritten by the next)."""

    def __init__(self, decoder, max_rows: int):
        self.decoder, cfg = decoder, decoder.config
        arena = _PrefillArena(cfg, max_rows)
        self._buffers = {M: dict(arena.buffers(M, M)) for M in range(1, max_rows + 1)}  # views of one arena
        self._logits = np.empty((max_rows, cfg.vocab_size), np.float32)

    def __call__(self, ids, slots, positions, *, num_threads=None):
        M = len(ids)
        d = self.decoder
        run = _DecodeRun(d, np.array(slots, np.int32), np.array(positions, np.int32))
        logits = self._logits[:M]
        d._arch.forward(run, d._weights, self._buffers[M], np.array(ids, np.int32).reshape(1, M), logits)
        return logits
