"""Inference over a KV cache: prefill a prompt once, then one token at a time.

A ``Decoder`` holds a copy of the model's weight matrices packed for ``linear_forward_packed`` (panels of
``kernels.PANEL`` output columns, streamed once per step for all the rows of the step) and, per layer, a key and a
value cache for ``slots`` sequences of up to context_length tokens (layout in csrc/cllm.h: keys transposed). It is a
snapshot: changes to the model's weights after it was made are not seen. Not for concurrent use.

``prefill`` runs a prompt through the layers kernel by kernel (the GEMM for many rows); ``decode`` is one kernel
call for all its rows (``kernels.GptDecodeStep``). Every kernel gives a row the bits the training forward gives it,
so the logits of both equal, bit for bit, those of ``Model.forward`` on the whole sequence (tests/test_generate.py).
Shapes: C = d_model, H = mlp_ratio·C, V vocabulary, NH heads, hs = C/NH, T prompt tokens, M rows of a step.
"""

from __future__ import annotations

import operator

import numpy as np

from .. import kernels as K
from ..runtime.threads import effective_cpu_count, resolve_num_threads

__all__ = ["Decoder"]

# Prefill: up to this many rows the packed path (weights packed once) beats the GEMM (which repacks them per call),
# clearly at 2 threads (M = 128: 330 vs 160 GFLOP/s), within ~13% either way at 1 thread; both give the same bits.
PACKED_MAX_ROWS = 256
MATRICES = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


class Decoder:
    """Packed weights and a KV cache for ``slots`` sequences of ``model``; see the module's docstring."""

    def __init__(self, model, slots: int = 1, *, num_threads=None):
        if isinstance(slots, bool) or not isinstance(slots, (int, np.integer)) or slots < 1:
            raise ValueError(f"Decoder: slots must be an integer >= 1 (got {slots!r})")
        cfg = self.config = model.config
        self.num_threads = resolve_num_threads(num_threads, "Decoder: num_threads")
        # The decode step is one parallel region whose threads meet at spinning barriers: with more threads than
        # CPUs a spinner holds the core a worker needs (4 threads on 2 CPUs: 187 tokens/s instead of 2,200).
        # The step gives the same bits for any count, so it runs on at most the usable CPUs.
        self._step_threads = min(self.num_threads, effective_cpu_count())
        C, H, T, NH = cfg.d_model, cfg.mlp_ratio * cfg.d_model, cfg.context_length, cfg.n_heads
        self.capacity = T  # tokens a slot holds: the model has no positions beyond
        Tk = -(-T // K.KV_ALIGN) * K.KV_ALIGN
        p = model.state_dict()
        self._wte, self._wpe = p["transformer.wte.weight"], p["transformer.wpe.weight"]
        self._lnf = (p["transformer.ln_f.weight"], p["transformer.ln_f.bias"])
        self._head = K.pack_linear_weights(self._wte)  # the tied output head
        self._layers, self._unpacked = [], []
        for i in range(cfg.n_layers):
            w = lambda name, i=i: p[f"transformer.h.{i}.{name}"]
            self._unpacked.append({name: w(name + ".weight") for name in MATRICES})
            self._layers.append({
                "ln_1": (w("ln_1.weight"), w("ln_1.bias")), "ln_2": (w("ln_2.weight"), w("ln_2.bias")),
                **{name: (K.pack_linear_weights(w(name + ".weight")), w(name + ".bias")) for name in MATRICES},
                "kcache": np.zeros((slots, NH, C // NH, Tk), np.float32),
                "vcache": np.zeros((slots, NH, Tk, C // NH), np.float32),
            })
        self.lengths = [0] * slots  # tokens cached per slot
        self._step = K.GptDecodeStep(wte=self._wte, wpe=self._wpe, ln_f=self._lnf, head=self._head,
                                     layers=self._layers, max_rows=slots)
        shapes = {"x": (T, C), "ln": (T, C), "mean": (T,), "rstd": (T,), "qkv": (T, 3 * C), "att": (T, C),
                  "tmp": (T, C), "fc": (T, H), "lse": (NH * T,)}
        self._prompt = {k: np.empty(s, np.float32) for k, s in shapes.items()}  # prefill's buffers, for T rows

    @property
    def slots(self) -> int:
        return len(self.lengths)

    def prefill(self, slot: int, ids) -> np.ndarray:
        """Run ids (1 to context_length token ids) through the model as the whole content of cache slot ``slot``;
        returns the logits [V] (a new array) that follow the last of them."""
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)) or not 0 <= slot < self.slots:
            raise ValueError(f"Decoder.prefill: slot must be an integer in [0, {self.slots}) (got {slot!r})")
        ids = np.ascontiguousarray(ids, dtype=np.int32).reshape(1, -1)
        T, NH, nt = ids.shape[1], self.config.n_heads, self.num_threads
        if not 1 <= T <= self.capacity:
            raise ValueError(f"Decoder.prefill: ids must hold 1 to {self.capacity} tokens (got {T})")
        b = {k: v[:T] for k, v in self._prompt.items()}
        x = b["x"]
        K.embedding_forward(ids, self._wte, self._wpe, out=x.reshape(1, T, -1), num_threads=nt)
        for layer, unpacked in zip(self._layers, self._unpacked):
            linear = lambda name, inp, out: self._linear(inp, unpacked[name], *layer[name], out)  # noqa: B023
            K.layernorm_forward(x, *layer["ln_1"], out=b["ln"], mean=b["mean"], rstd=b["rstd"], num_threads=nt)
            linear("attn.c_attn", b["ln"], b["qkv"])
            K.attention_cache_store(b["qkv"], layer["kcache"], layer["vcache"], int(slot), num_threads=nt)
            K.attention_forward(b["qkv"].reshape(1, T, -1), NH, out=b["att"].reshape(1, T, -1),
                                lse=self._prompt["lse"][:NH * T].reshape(1, NH, T), num_threads=nt)
            linear("attn.c_proj", b["att"], b["tmp"])
            K.residual_forward(x, b["tmp"], out=x, num_threads=nt)
            K.layernorm_forward(x, *layer["ln_2"], out=b["ln"], mean=b["mean"], rstd=b["rstd"], num_threads=nt)
            linear("mlp.c_fc", b["ln"], b["fc"])
            K.gelu_forward(b["fc"], out=b["fc"], num_threads=nt)
            linear("mlp.c_proj", b["fc"], b["tmp"])
            K.residual_forward(x, b["tmp"], out=x, num_threads=nt)
        self.lengths[slot] = T
        ln, _, _ = K.layernorm_forward(x[-1:], *self._lnf, num_threads=nt)  # only the last position's logits
        return K.linear_forward_packed(ln, self._head, n=self.config.vocab_size, num_threads=nt)[0]

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

    def _linear(self, x, w, packed, bias, out):
        """out = x · wᵀ + b: the packed path up to PACKED_MAX_ROWS rows, the GEMM above (the same bits)."""
        if x.shape[0] <= PACKED_MAX_ROWS:
            return K.linear_forward_packed(x, packed, bias, n=w.shape[0], out=out, num_threads=self.num_threads)
        return K.linear_forward(x, w, bias, out=out, num_threads=self.num_threads)
