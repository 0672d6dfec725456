"""AdamW over a model's flat parameter buffer: one fused kernel per step."""
from __future__ import annotations

import math

import numpy as np

from .. import kernels as K
from ..runtime import checks
from ..runtime.threads import get_num_threads

__all__ = ["AdamW"]


class AdamW:
    """AdamW over a model's flat parameter buffer: one fused kernel per step (PyTorch's update rule).

    Decoupled weight decay applies to the 2-D weight matrices only (``cllm.model.is_decayed``: not biases,
    LayerNorm parameters or the position embedding). Gradients are clipped to a global L2 norm of
    ``grad_clip`` (None or 0: no clipping) as torch.nn.utils.clip_grad_norm_ does; the norm is summed in double
    in an order that does not depend on the thread count. Bias corrections are computed once per step.
    """

    def __init__(self, model, lr=6e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, grad_clip=1.0, *,
                 exclude=()):
        """``exclude``: state-dict names this AdamW leaves alone (another optimizer's: Muon's matrices)."""
        def number(name, value, low, high=math.inf, low_open=False):
            ok = checks.is_number(value) and math.isfinite(value)
            if not ok or value < low or (low_open and value == low) or value > high:
                raise ValueError(f"AdamW: {name} must be a number in {'(' if low_open else '['}{low}, {high}] "
                                 f"(got {value!r})")
            return float(value)

        self.model = model
        self.lr = number("lr", lr, 0.0, low_open=True)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"AdamW: betas must be a pair (beta1, beta2) (got {betas!r})")
        self.betas = (number("betas[0]", betas[0], 0.0, 1.0), number("betas[1]", betas[1], 0.0, 1.0))
        if max(self.betas) >= 1.0:
            raise ValueError(f"AdamW: betas must be < 1 (got {betas!r})")
        self.eps = number("eps", eps, 0.0, low_open=True)
        self.weight_decay = number("weight_decay", weight_decay, 0.0)
        self.grad_clip = None if not grad_clip else number("grad_clip", grad_clip, 0.0, low_open=True)
        self.m = np.zeros_like(model.params)
        self.v = np.zeros_like(model.params)
        self.step_count = 0
        starts, decay = model.decay_segments()
        excluded = set(exclude)
        decay[[i for i, name in enumerate(model.layout) if name in excluded]] = 2  # adamw_step skips them
        self._segments = (starts, decay)

    kind = "AdamW"

    def hyperparameters(self) -> dict:
        """What a checkpoint records of this optimizer's settings."""
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay,
                "grad_clip": self.grad_clip}

    def grad_norm(self) -> float:
        """The global L2 norm of the model's current gradients."""
        return math.sqrt(K.sum_squares(self.model.grad_buffer, num_threads=get_num_threads()))

    def clip_scale(self, norm: float) -> float:
        """The factor clipping multiplies gradients of global norm ``norm`` by (1 when not clipping)."""
        return 1.0 if self.grad_clip is None else min(1.0, self.grad_clip / (norm + 1e-6))

    def step(self, lr=None) -> float:
        """Clip, then update the parameters in place with learning rate ``lr`` (default: the one given at
        construction, e.g. from ``lr_at``). Returns the gradient norm before clipping."""
        lr = self.lr if lr is None else float(lr)
        if not (math.isfinite(lr) and lr >= 0.0):
            raise ValueError(f"AdamW.step: lr must be a finite number >= 0 (got {lr!r})")
        nt = get_num_threads()
        norm = self.grad_norm()
        scale = self.clip_scale(norm)
        self.step_count += 1
        K.adamw_step(self.model.params, self.model.grad_buffer, self.m, self.v, *self._segments, lr=lr,
                     beta1=self.betas[0], beta2=self.betas[1], eps=self.eps, weight_decay=self.weight_decay,
                     step=self.step_count, grad_scale=scale, num_threads=nt)
        return norm

    def state_dict(self) -> dict:
        """The optimizer's state (moments and step), for checkpoints."""
        return {"m": self.m, "v": self.v, "step": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        for name in ("m", "v"):
            value = np.asarray(state[name])
            if value.shape != self.m.shape:
                raise ValueError(f"AdamW.load_state_dict: {name} must have shape {list(self.m.shape)} "
                                 f"(got {list(value.shape)})")
        self.m[...] = state["m"]
        self.v[...] = state["v"]
        self.step_count = int(state["step"])
