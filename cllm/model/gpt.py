"""The GPT model: one flat float32 parameter buffer, forward and backward as a sequence of kernel calls.

Architecture (GPT-2): token + learned position embedding; L blocks of x += attn(ln_1(x)); x += mlp(ln_2(x));
ln_f; logits = x · wteᵀ (the output head is tied to the token embedding). Every op is a kernel reached through
``cllm.kernels`` (ARCHITECTURE.md "Backends"), so a GPU backend can replace them without touching this file.
Shapes: B batch, T positions, C = d_model, NH heads, H = mlp_ratio·C, V vocabulary, BT = B·T.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict

import numpy as np

from . import checkpoint
from . import generate as _generate
from .. import kernels as K
from .blocks import GPT2_LAYER, gpt2_forward
from .config import ModelConfig
from .parameters import activation_shapes, is_decayed, memory_estimate, parameter_layout
from ..runtime.threads import get_num_threads

__all__ = ["Model"]


class Model:
    """A GPT-2 style language model whose parameters live in one contiguous float32 buffer (``params``), with
    gradients in a second one of the same layout (``grad_buffer``)."""

    def __init__(self, config: ModelConfig, seed: int = 0, *, params: np.ndarray | None = None):
        """A new model with GPT-2's initialisation from ``seed``; or, with ``params``, a model over that existing
        flat float32 buffer (laid out as ``parameter_layout(config)``, used without a copy: how ``cllm.load``
        maps a file)."""
        if not isinstance(config, ModelConfig):
            raise TypeError(f"Model: config must be a cllm.ModelConfig (got {type(config).__name__})")
        self.config = config
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
        self._p = self._views(self.params)
        self._weights = self._weight_table()
        self._grad_buffer = None  # allocated by the first backward: inference never needs it
        if params is None:
            self._init_weights(seed)
        self._acts = None  # activation buffers for the last (B, T), reused while it stays the same
        self.profile = None  # {op: seconds} while profiling() is active

    # --- parameters ---------------------------------------------------------------------------------------

    def _views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return {name: flat[o:o + math.prod(shape)].reshape(shape) for name, (o, shape) in self._layout.items()}

    def _weight_table(self) -> dict:
        """The weights as ``blocks.gpt2_forward`` names them: (weight, bias) views of the parameter buffer."""
        p = self._p
        pair = lambda name: (p[name + ".weight"], p[name + ".bias"])
        return {"wte": p["transformer.wte.weight"], "wpe": p["transformer.wpe.weight"],
                "ln_f": pair("transformer.ln_f"), "head": (p["transformer.wte.weight"], None),  # the tied head
                "layers": [{name: pair(f"transformer.h.{i}.{name}") for name in GPT2_LAYER}
                           for i in range(self.config.n_layers)]}

    @property
    def grad_buffer(self) -> np.ndarray:
        """The gradients, in the layout of ``params`` (allocated on first use)."""
        if self._grad_buffer is None:
            self._grad_buffer = np.zeros_like(self.params, subok=False)
            self._g = self._views(self._grad_buffer)
        return self._grad_buffer

    @property
    def layout(self) -> dict[str, tuple[int, tuple]]:
        """name -> (offset in elements into ``params``, shape), in buffer order."""
        return dict(self._layout)

    def _init_weights(self, seed: int) -> None:
        """N(0, 0.02) for matrices and embeddings, N(0, 0.02/√(2L)) for the residual projections (c_proj),
        biases 0, LayerNorm weights 1 (GPT-2's initialisation)."""
        rng = np.random.default_rng(seed)
        proj_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, view in self._p.items():
            if name.endswith(".bias"):
                view[...] = 0.0
            elif "ln_" in name:
                view[...] = 1.0
            else:
                std = proj_std if name.endswith("c_proj.weight") else 0.02
                view[...] = rng.standard_normal(view.shape, dtype=np.float32) * np.float32(std)

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
        """The forward pass (blocks.gpt2_forward) on the activation arena, keeping what the backward needs."""
        gpt2_forward(_TrainingRun(self, idx.shape, nt), self._weights, self._acts, idx, logits)

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
        B, T = idx.shape
        a, p, g, op = self._acts, self._p, self._g, self._op
        C = self.config.d_model
        dres, dtmp = a["dres"], a["dtmp"]
        op("linear_backward", K.linear_backward, a["logits"], a["lnf"], p["transformer.wte.weight"], dx=dtmp,
           dw=g["transformer.wte.weight"], bias=False, accumulate=True, num_threads=nt)
        dres.fill(0.0)
        op("layernorm_backward", K.layernorm_backward, dtmp, a["res"][-1], p["transformer.ln_f.weight"],
           a["lnf_mean"], a["lnf_rstd"], dres, g["transformer.ln_f.weight"], g["transformer.ln_f.bias"],
           num_threads=nt)
        for i in reversed(range(self.config.n_layers)):  # dres: the gradient of the residual stream
            w, la = f"transformer.h.{i}.", a["layers"][i]
            op("linear_backward", K.linear_backward, dres, la["fcg"], p[w + "mlp.c_proj.weight"], dx=a["dfc"],
               dw=g[w + "mlp.c_proj.weight"], db=g[w + "mlp.c_proj.bias"], accumulate=True, gelu_x=la["fch"],
               num_threads=nt)  # dfc: the gradient of fch, through the GELU
            op("linear_backward", K.linear_backward, a["dfc"], la["ln2"], p[w + "mlp.c_fc.weight"], dx=dtmp,
               dw=g[w + "mlp.c_fc.weight"], db=g[w + "mlp.c_fc.bias"], accumulate=True, num_threads=nt)
            op("layernorm_backward", K.layernorm_backward, dtmp, la["res2"], p[w + "ln_2.weight"], la["ln2_mean"],
               la["ln2_rstd"], dres, g[w + "ln_2.weight"], g[w + "ln_2.bias"], num_threads=nt)
            op("linear_backward", K.linear_backward, dres, la["atty"].reshape(B * T, C), p[w + "attn.c_proj.weight"],
               dx=dtmp, dw=g[w + "attn.c_proj.weight"], db=g[w + "attn.c_proj.bias"], accumulate=True,
               num_threads=nt)
            op("attention_backward", K.attention_backward, dtmp.reshape(B, T, C), la["qkv"], la["atty"], la["lse"],
               dqkv=a["dqkv"], num_threads=nt)
            op("linear_backward", K.linear_backward, a["dqkv"].reshape(B * T, 3 * C), la["ln1"],
               p[w + "attn.c_attn.weight"], dx=dtmp, dw=g[w + "attn.c_attn.weight"], db=g[w + "attn.c_attn.bias"],
               accumulate=True, num_threads=nt)
            op("layernorm_backward", K.layernorm_backward, dtmp, a["res"][i], p[w + "ln_1.weight"], la["ln1_mean"],
               la["ln1_rstd"], dres, g[w + "ln_1.weight"], g[w + "ln_1.bias"], num_threads=nt)
        op("embedding_backward", K.embedding_backward, dres.reshape(B, T, C), idx, g["transformer.wte.weight"],
           g["transformer.wpe.weight"], num_threads=nt)

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
    """``blocks.gpt2_forward``'s executor for training and evaluation: kernels over a step's activation arena
    (fused residual and GELU epilogues in the GEMMs), each call timed by its kernel's name while profiling."""

    def __init__(self, model: Model, shape: tuple, nt: int):
        self.op, self.shape, self.nt, self.n_heads = model._op, shape, nt, model.config.n_heads

    def embedding(self, idx, wte, wpe, out):
        self.op("embedding_forward", K.embedding_forward, idx, wte, wpe, out=out.reshape(*self.shape, -1),
                num_threads=self.nt)

    def layernorm(self, x, w, out, mean, rstd):
        self.op("layernorm_forward", K.layernorm_forward, x, w[0], w[1], out=out, mean=mean, rstd=rstd,
                num_threads=self.nt)

    def linear(self, x, w, out, residual=None, gelu_out=None):
        self.op("linear_forward", K.linear_forward, _rows(x), w[0], w[1], out=_rows(out), residual=residual,
                gelu_out=gelu_out, num_threads=self.nt)

    def attention(self, layer, qkv, out, lse):
        self.op("attention_forward", K.attention_forward, qkv, self.n_heads, out=out, lse=lse, num_threads=self.nt)

    def logits_rows(self, x):
        return x
