"""The language model: one flat float32 parameter buffer, forward and backward as a sequence of kernel calls.

The architecture (``config.arch``: GPT-2 or Llama) is described in ``cllm.model.arch``; this file runs it. Every op
is a kernel reached through ``cllm.kernels`` (ARCHITECTURE.md "Backends"), so a GPU backend can replace them without
touching this file. Shapes: B batch, T positions, C = d_model, NH heads, H the MLP width, V vocabulary, BT = B·T.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import numpy as np

from . import checkpoint
from . import generate as _generate
from .. import kernels as K
from .arch import architecture
from .config import ModelConfig
from .parameters import activation_shapes, is_decayed, memory_estimate, parameter_layout, parameter_views
from ..runtime.threads import get_num_threads

__all__ = ["Model"]


class Model:
    """A language model (``config.arch``: "gpt2" or "llama") whose parameters live in one contiguous float32 buffer
    (``params``), with gradients in a second one of the same layout (``grad_buffer``)."""

    def __init__(self, config: ModelConfig, seed: int = 0, *, params: np.ndarray | None = None):
        """A new model with its architecture's initialisation from ``seed``; or, with ``params``, a model over that
        existing flat float32 buffer (laid out as ``parameter_layout(config)``, used without a copy: how
        ``cllm.load`` maps a file)."""
        if not isinstance(config, ModelConfig):
            raise TypeError(f"Model: config must be a cllm.ModelConfig (got {type(config).__name__})")
        self.config = config
        self._arch = architecture(config)
        self.tokenizer = None
        self.training_summary: dict = {}  # what the trainer reports about this model's training; saved with it
        self._layout, size = parameter_layout(config)
        if params is None:
            self.params = np.zeros(size, dtype=np.float32)
        elif params.dtype != np.float32 or params.shape != (size,) or not params.flags.c_contiguous:
            raise ValueError(f"Model: params must be a contiguous float32 buffer of {size} elements "
                             f"(got {params.dtype} {list(params.shape)})")
        else:
            self.params = params
        self._p, self._weights = self._views(self.params)
        self._grad_buffer = None  # allocated by the first backward: inference never needs it
        if params is None:
            self._arch.init_weights(self._p, config, np.random.default_rng(seed))
        # llama's rotary tables: cos, sin [context_length, head_dim / 2]
        self._rope = K.rope_table(config.context_length, config.head_dim, config.rope_theta) \
            if config.arch == "llama" else None
        self._acts = None  # activation buffers for the last (B, T), reused while it stays the same
        self.profile = None  # {op: seconds} while profiling() is active

    # --- parameters ---------------------------------------------------------------------------------------

    def _views(self, flat: np.ndarray) -> tuple[dict, dict]:
        """(state-dict views, the architecture's weight table) of a flat buffer of this model's layout."""
        views, stacks = parameter_views(self.config, flat, self._layout)
        return views, self._arch.weight_table({**views, **stacks}, self.config)

    @property
    def grad_buffer(self) -> np.ndarray:
        """The gradients, in the layout of ``params`` (allocated on first use)."""
        if self._grad_buffer is None:
            self._grad_buffer = np.zeros_like(self.params, subok=False)
            self._g, self._gweights = self._views(self._grad_buffer)
        return self._grad_buffer

    @property
    def layout(self) -> dict[str, tuple[int, tuple]]:
        """name -> (offset in elements into ``params``, shape), in buffer order."""
        return dict(self._layout)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Views into the parameter buffer, by name (writing to them changes the model)."""
        return dict(self._p)

    def grads(self) -> dict[str, np.ndarray]:
        """Views into the gradient buffer, same names and shapes as ``state_dict()``."""
        self.grad_buffer  # noqa: B018 (allocates on first use)
        return dict(self._g)

    def load_state_dict(self, state: dict) -> None:
        """Copy parameters in; the names and shapes must be exactly those of ``state_dict()``."""
        missing, unexpected = self._layout.keys() - state.keys(), state.keys() - self._layout.keys()
        if missing or unexpected:
            raise ValueError(f"load_state_dict: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
        for name, (_, shape) in self._layout.items():
            value = np.asarray(state[name])
            if value.shape != shape:
                raise ValueError(f"load_state_dict: {name} must have shape {list(shape)} (got {list(value.shape)})")
        for name in self._layout:
            self._p[name][...] = state[name]

    def decay_segments(self) -> tuple[np.ndarray, np.ndarray]:
        """(seg_start [n+1] int64, decay [n] uint8) over the flat buffer: segment i is tensor i (with the
        padding after it) and is weight-decayed iff ``is_decayed`` (used by cllm.optim.AdamW)."""
        starts = [offset for offset, _ in self._layout.values()] + [self.params.size]
        decay = [is_decayed(name) for name in self._layout]
        return np.array(starts, dtype=np.int64), np.array(decay, dtype=np.uint8)

    @property
    def n_params(self) -> int:
        return self.config.n_params

    # --- forward and backward -----------------------------------------------------------------------------

    def _check_ids(self, ids, name: str, allow_ignore: bool = False) -> np.ndarray:
        """An integer array [B, T] with 1 <= T <= context_length, as int32; ids out of range name a position."""
        a = np.asarray(ids)
        if a.ndim != 2 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
            raise ValueError(f"Model: {name} must be an integer array [B, T] (got {a.dtype} {list(a.shape)})")
        B, T = a.shape
        if B < 1 or not 1 <= T <= self.config.context_length:
            raise ValueError(f"Model: {name} must be [B, T] with B >= 1 and 1 <= T <= context_length = "
                             f"{self.config.context_length} (got {list(a.shape)})")
        low, V = (-1 if allow_ignore else 0), self.config.vocab_size
        bad = (a < low) | (a >= V)
        if bad.any():
            pos = tuple(int(i) for i in np.argwhere(bad)[0])
            allowed = f"-1 or [0, {V})" if allow_ignore else f"[0, {V})"
            raise ValueError(f"Model: {name}{list(pos)} = {int(a[pos])} is outside {allowed}")
        return np.ascontiguousarray(a, dtype=np.int32)

    def memory_estimate(self, batch: int, seq: int) -> dict:
        """Bytes a training step on [batch, seq] needs (see ``memory_estimate``)."""
        return memory_estimate(self.config, batch, seq)

    def _activations(self, B: int, T: int) -> dict:
        """Buffers for every activation the backward needs, allocated once per (B, T)."""
        if self._acts is not None and self._acts["shape"] == (B, T):
            return self._acts
        self._acts = None  # free the old set first
        layer, once, scratch = activation_shapes(self.config, B, T)
        *layers, once, scratch = K.float32_views([layer] * self.config.n_layers + [once, scratch])
        self._acts = {"shape": (B, T), "layers": layers, **once, **scratch}
        self._acts["res"] = [self._acts["res0"]] + [la["res"] for la in layers]  # the residual stream, by block
        self._acts["pos"] = np.tile(np.arange(T, dtype=np.int32), B)  # each row's position (rotary embeddings)
        return self._acts

    def _op(self, name: str, fn, *args, **kwargs):
        """Call a kernel, timing it by name while profiling."""
        if self.profile is None:
            return fn(*args, **kwargs)
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.profile[name] += time.perf_counter() - start
        return result

    @contextlib.contextmanager
    def profiling(self):
        """``with model.profiling() as times:`` accumulates seconds per kernel (forward and backward by op)."""
        self.profile = defaultdict(float)
        try:
            yield self.profile
        finally:
            self.profile = None

    def _forward(self, idx: np.ndarray, logits: np.ndarray, nt: int) -> None:
        """The forward pass (the architecture's ``forward``) on the activation arena, keeping what the backward
        needs."""
        self._arch.forward(_TrainingRun(self, idx.shape, nt), self._weights, self._acts, idx, logits)

    def forward(self, idx) -> np.ndarray:
        """Logits [B, T, V] (float32, a new array) for token ids idx [B, T] (any integer dtype)."""
        idx = self._check_ids(idx, "idx")
        B, T = idx.shape
        self._activations(B, T)
        logits = np.empty((B * T, self.config.vocab_size), dtype=np.float32)
        self._forward(idx, logits, get_num_threads())
        return logits.reshape(B, T, -1)

    def token_losses(self, idx, targets, *, ranks: bool = False):
        """Cross-entropy of each target [B, T] given idx [B, T] (0 where the target is -1), float32; no gradients.
        With ``ranks``, also the rank of each target among the logits [B, T] int64 (how many are larger: 0 means
        top-1; a tie counts for the target; 0 where the target is -1): ``(losses, ranks)``."""
        idx, targets = self._check_pair(idx, targets)
        a = self._activations(*idx.shape)
        nt = get_num_threads()
        self._forward(idx, a["logits"], nt)
        flat = targets.reshape(-1)
        losses = K.crossentropy(a["logits"], flat, write_grad=False, num_threads=nt).reshape(idx.shape)
        if not ranks:
            return losses
        target_logit = a["logits"][np.arange(flat.size), np.maximum(flat, 0)]
        rank = (a["logits"] > target_logit[:, None]).sum(axis=1) * (flat != -1)
        return losses, rank.reshape(idx.shape)

    def forward_backward(self, idx, targets, *, accumulate: bool = False, loss_scale: float = 1.0) -> float:
        """Mean cross-entropy of predicting targets [B, T] (-1 = ignore) from idx [B, T]; leaves the gradients of
        ``loss_scale`` × that loss in ``grads()`` (added to the ones already there with ``accumulate=True``: with
        k equal micro-batches and ``loss_scale=1/k`` they sum to the gradient of the whole batch's mean loss).
        Returns the mean loss (unscaled); 0.0, with zero gradients, when every target is -1."""
        idx, targets = self._check_pair(idx, targets)
        B, T = idx.shape
        nt = get_num_threads()
        a = self._activations(B, T)
        grads = self.grad_buffer
        if not accumulate:
            grads.fill(0.0)
        n_valid = int(np.count_nonzero(targets != -1))
        if n_valid == 0:
            return 0.0
        self._forward(idx, a["logits"], nt)
        losses = self._op("crossentropy", K.crossentropy, a["logits"], targets.reshape(-1),
                          scale=float(loss_scale) / n_valid, losses=a["losses"], num_threads=nt)
        self._backward(idx, nt)
        return float(np.sum(losses, dtype=np.float64) / n_valid)

    def _check_pair(self, idx, targets) -> tuple[np.ndarray, np.ndarray]:
        idx = self._check_ids(idx, "idx")
        targets = self._check_ids(targets, "targets", allow_ignore=True)
        if targets.shape != idx.shape:
            raise ValueError(f"Model: targets must have idx's shape {list(idx.shape)} (got {list(targets.shape)})")
        return idx, targets

    def _backward(self, idx: np.ndarray, nt: int) -> None:
        """Gradients from the logits' gradient (left in a["logits"] by the cross-entropy), in exact reverse."""
        self._arch.backward(_TrainingRun(self, idx.shape, nt), self._weights, self._gweights, self._acts, idx)

    # --- generation (cllm/model/generate.py) ------------------------------------------------------------------

    def generate(self, prompt, max_new_tokens: int = 256, **sampling):
        """The text that follows prompt (a str; or a list of str -> a list). sampling: temperature, top_k, top_p,
        repetition_penalty, seed, stop (strings), use_cache. Needs ``tokenizer``. See
        ``cllm.model.generate.generate``."""
        return _generate.generate(self, prompt, max_new_tokens, **sampling)

    def generate_stream(self, prompt: str, max_new_tokens: int = 256, **sampling):
        """``generate`` as an iterator of text pieces, none of which ends inside a UTF-8 character."""
        return _generate.generate_stream(self, prompt, max_new_tokens, **sampling)

    def generate_ids(self, ids, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None, repetition_penalty: float = 1.0, seed: int | None = None,
                     use_cache: bool = True, *, stop=None):
        """The token ids that follow ids (or, for a list of sequences, a list of lists): temperature 0 = greedy;
        top_k, top_p filter; repetition_penalty as CTRL's; a fixed seed reproduces; generation ends at a ``stop``
        id. With or without the KV cache, the same ids. See ``cllm.model.generate.generate_ids``."""
        return _generate.generate_ids(self, ids, max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed,
                                      use_cache, stop=stop)

    # --- files ------------------------------------------------------------------------------------------------

    def save(self, path, optimizer=None, trainer_state: dict | None = None) -> None:
        """Write this model (config, weights, tokenizer, training summary) to a .cllm file, atomically; with
        ``optimizer`` (a cllm.optim.AdamW) and ``trainer_state`` (JSON-able) it is a checkpoint to resume from.
        The format: docs/format.md; read back with ``cllm.load``."""
        checkpoint.save(path, self, optimizer=optimizer, trainer_state=trainer_state)


def _rows(a: np.ndarray) -> np.ndarray:
    """a as [rows, last dimension] (a view)."""
    return a.reshape(-1, a.shape[-1])


class _TrainingRun:
    """The architectures' executor for training and evaluation (``cllm.model.arch``): kernels over a step's
    activation arena (fused residual and GELU epilogues in the GEMMs), each call timed by its kernel's name while
    profiling. The backward uses its ``op``, ``nt``, and the rotary tables and positions."""

    def __init__(self, model: Model, shape: tuple, nt: int):
        self.op, self.shape, self.nt, self.n_heads = model._op, shape, nt, model.config.n_heads
        self.eps = model.config.norm_eps
        self.pos = model._acts["pos"]
        self.cos, self.sin = model._rope or (None, None)

    def embedding(self, idx, wte, wpe, out):
        self.op("embedding_forward", K.embedding_forward, idx, wte, wpe, out=out.reshape(*self.shape, -1),
                num_threads=self.nt)

    def layernorm(self, x, w, out, mean, rstd):
        self.op("layernorm_forward", K.layernorm_forward, x, w[0], w[1], out=out, mean=mean, rstd=rstd,
                num_threads=self.nt)

    def rmsnorm(self, x, w, out, rstd):
        self.op("rmsnorm_forward", K.rmsnorm_forward, x, w, eps=self.eps, out=out, rstd=rstd, num_threads=self.nt)

    def linear(self, x, w, out, residual=None, gelu_out=None):
        self.op("linear_forward", K.linear_forward, _rows(x), w[0], w[1], out=_rows(out), residual=residual,
                gelu_out=gelu_out, num_threads=self.nt)

    def qk_rotary(self, qkv_in, norms, qkv, rstd):
        q_norm, k_norm = norms or (None, None)
        self.op("qk_rotary_forward", K.qk_rotary_forward, qkv_in, self.n_heads, self.pos, self.cos, self.sin,
                q_norm=q_norm, k_norm=k_norm, eps=self.eps, out=_rows(qkv), rstd=rstd, num_threads=self.nt)

    def attention(self, layer, qkv, out, lse):
        self.op("attention_forward", K.attention_forward, qkv, self.n_heads, out=out, lse=lse, num_threads=self.nt)

    def swiglu(self, gu, out):
        self.op("swiglu_forward", K.swiglu_forward, gu, out=out, num_threads=self.nt)

    def logits_rows(self, x):
        return x
