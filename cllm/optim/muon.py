"""Muon for a model's hidden matrices, AdamW for the rest: one optimizer object over the flat parameter buffer.

Muon (Keller Jordan et al., 2024) replaces each hidden weight matrix's update by the orthogonalised momentum: with
G the gradient of an [A, B] matrix W, momentum μ and the buffer M,

    M = μ·M + (1-μ)·G;   U = (1-μ)·G + μ·M (Nesterov) or M;   O = NS(U);
    W = W·(1 - lr·wd) - lr·√max(1, A/B)·O

where NS is 5 steps of the quintic Newton–Schulz iteration X = a·X + (b·XXᵀ + c·(XXᵀ)²)·X from X = U/‖U‖ (on the
shorter side: Uᵀ when A > B), coefficients (a, b, c) = (3.4445, -4.7750, 2.0315): torch.optim.Muon's update
(which runs NS in bfloat16; ours runs in float32 on cllm's GEMM, so that every thread count gives the same bits).
Which matrices are hidden: every 2-D weight but the embeddings and the output head (``is_hidden_matrix``); the
embeddings, head, norms and biases get AdamW at ``adamw_lr``.
"""

from __future__ import annotations

import math

import numpy as np

from .. import kernels as K
from ..runtime import checks
from ..runtime.threads import get_num_threads
from .adamw import AdamW

__all__ = ["NS_COEFFICIENTS", "Muon", "is_hidden_matrix", "newton_schulz"]

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
_NOT_HIDDEN = ("transformer.wte.weight", "transformer.wpe.weight", "model.embed_tokens.weight", "lm_head.weight")


def is_hidden_matrix(name: str, shape: tuple) -> bool:
    """Whether Muon updates the tensor: a 2-D weight that is not an embedding or the output head."""
    return len(shape) == 2 and name not in _NOT_HIDDEN


def newton_schulz(g, steps: int = 5, coefficients=NS_COEFFICIENTS, eps: float = 1e-7, *, num_threads=None):
    """An approximately orthogonal matrix with g's singular vectors: ``steps`` quintic Newton–Schulz iterations from
    g / max(‖g‖_F, eps), on the shorter side. g [A, B] float32 -> [A, B] float32 (a new array); every product is a
    cllm GEMM, so the bits do not depend on num_threads."""
    if not isinstance(g, np.ndarray) or g.dtype != np.float32 or g.ndim != 2:
        raise TypeError(f"newton_schulz: g must be a float32 matrix (got {getattr(g, 'dtype', type(g).__name__)} "
                        f"{list(getattr(g, 'shape', []))})")
    a, b, c = (float(x) for x in coefficients)
    tall = g.shape[0] > g.shape[1]
    x = np.ascontiguousarray(g.T if tall else g)  # [r, c] with r <= c
    norm = math.sqrt(K.sum_squares(x, num_threads=num_threads))
    x = x * np.float32(1.0 / max(norm, eps))
    r = x.shape[0]
    gram, update = np.empty((r, r), np.float32), np.empty((r, r), np.float32)
    for _ in range(steps):
        K.linear_forward(x, x, out=gram, num_threads=num_threads)  # X·Xᵀ
        K.linear_forward(gram, gram, out=update, num_threads=num_threads)  # (X·Xᵀ)², X·Xᵀ being symmetric
        update *= np.float32(c)
        update += np.float32(b) * gram
        y = K.linear_forward(update, np.ascontiguousarray(x.T), num_threads=num_threads)  # (b·XXᵀ + c·(XXᵀ)²)·X
        y += np.float32(a) * x
        x = y
    return np.ascontiguousarray(x.T) if tall else x


class Muon:
    """Muon over a model's hidden matrices (``is_hidden_matrix``), AdamW over the rest, as one optimizer with
    AdamW's interface (``step(lr)``, ``grad_norm``, ``state_dict``, ``m``, ``v``, ``step_count``).

    lr: Muon's rate; adamw_lr, betas, eps, adamw_weight_decay: AdamW's, for the other tensors; weight_decay:
    Muon's decoupled decay (torch.optim.Muon's default 0.1). Gradients are first clipped to a global norm of
    ``grad_clip`` as AdamW does. ``step(lr)`` takes the scheduled AdamW rate: Muon's follows the same schedule,
    lr·(scheduled / adamw_lr). State: Muon's momentum buffers live in ``m`` at their tensors' offsets (``v`` stays
    0 there), so a checkpoint holds both optimizers in the two flat buffers AdamW has.
    """

    kind = "Muon"

    def __init__(self, model, lr=0.02, momentum=0.95, nesterov=True, ns_steps=5, weight_decay=0.1, adamw_lr=6e-4,
                 betas=(0.9, 0.95), eps=1e-8, adamw_weight_decay=0.1, grad_clip=1.0):
        self.lr = checks.number(lr, "Muon: lr", 0.0, low_open=True)
        self.momentum = checks.number(momentum, "Muon: momentum", 0.0)
        if self.momentum >= 1.0:
            raise ValueError(f"Muon: momentum must be < 1 (got {momentum!r})")
        if not isinstance(nesterov, bool):
            raise TypeError(f"Muon: nesterov must be True or False (got {nesterov!r})")
        self.nesterov = nesterov
        self.ns_steps = checks.integer(ns_steps, "Muon: ns_steps", 1)
        self.weight_decay = checks.number(weight_decay, "Muon: weight_decay", 0.0)
        self.model = model
        self._hidden = [(name, offset, shape) for name, (offset, shape) in model.layout.items()
                        if is_hidden_matrix(name, shape)]
        self.adamw = AdamW(model, lr=adamw_lr, betas=betas, eps=eps, weight_decay=adamw_weight_decay,
                           grad_clip=grad_clip, exclude=[name for name, _, _ in self._hidden])

    # AdamW's interface, shared state
    m = property(lambda self: self.adamw.m)
    v = property(lambda self: self.adamw.v)
    grad_clip = property(lambda self: self.adamw.grad_clip)
    adamw_lr = property(lambda self: self.adamw.lr)

    @property
    def step_count(self) -> int:
        return self.adamw.step_count

    @step_count.setter
    def step_count(self, value: int) -> None:
        self.adamw.step_count = value

    def grad_norm(self) -> float:
        return self.adamw.grad_norm()

    def hyperparameters(self) -> dict:
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov, "ns_steps": self.ns_steps,
                "weight_decay": self.weight_decay, **{f"adamw_{k}": v for k, v in self.adamw.hyperparameters().items()}}

    def step(self, lr=None) -> float:
        """Clip, then update every tensor: AdamW at ``lr`` (default adamw_lr), Muon at lr·(lr / adamw_lr).
        Returns the gradient norm before clipping."""
        adamw_lr = self.adamw.lr if lr is None else float(lr)
        if not (math.isfinite(adamw_lr) and adamw_lr >= 0.0):
            raise ValueError(f"Muon.step: lr must be a finite number >= 0 (got {lr!r})")
        norm = self.adamw.step(adamw_lr)  # clips by the global norm, updates the non-hidden tensors
        scale = self.adamw.clip_scale(norm)
        muon_lr, mu = self.lr * adamw_lr / self.adamw.lr, np.float32(self.momentum)
        nt = get_num_threads()
        params, grads, m = self.model.params, self.model.grad_buffer, self.adamw.m
        for name, offset, (A, B) in self._hidden:
            view = lambda flat: flat[offset:offset + A * B].reshape(A, B)
            w, g, buf = view(params), view(grads) * np.float32(scale), view(m)
            buf *= mu  # M = μ·M + (1-μ)·G
            buf += (np.float32(1.0) - mu) * g
            update = g * (np.float32(1.0) - mu) + mu * buf if self.nesterov else buf
            ortho = newton_schulz(update, self.ns_steps, num_threads=nt)
            w *= np.float32(1.0 - muon_lr * self.weight_decay)
            w -= np.float32(muon_lr * math.sqrt(max(1.0, A / B))) * ortho
        return norm

    def state_dict(self) -> dict:
        return self.adamw.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.adamw.load_state_dict(state)
