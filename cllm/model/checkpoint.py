"""A model in a .cllm container: what the header and tensors of a model file and of a training checkpoint mean
(``loading`` reads them back). The container itself (``cllm.formats.container``) knows nothing of models.

Header: ``model`` {architecture, config}, ``tokenizer`` (a tokenizer.json document or null), ``training`` (the
trainer's summary), and for a checkpoint ``checkpoint`` {optimizer {type, step, hyperparameters}, trainer (the
trainer's state)}. Tensors: the state dict's names, laid out as the model's flat parameter buffer (one region, so
that loading maps it whole), then the optimizer's moments ``optimizer.m``, ``optimizer.v`` in the same layout.
"""

from __future__ import annotations

from pathlib import Path

from ..formats.container import write

__all__ = ["OPTIMIZER_TENSORS", "save"]

OPTIMIZER_TENSORS = ("optimizer.m", "optimizer.v")


def save(path, model, *, optimizer=None, trainer_state: dict | None = None) -> Path:
    """Write ``model`` (and, for a checkpoint, ``optimizer`` and ``trainer_state``) to ``path`` atomically."""
    if optimizer is not None and getattr(optimizer, "model", None) is not model:
        raise ValueError("save: optimizer must be a cllm.optim.AdamW or Muon of this model")
    if trainer_state is not None and not isinstance(trainer_state, dict):
        raise TypeError(f"save: trainer_state must be a dict (got {type(trainer_state).__name__})")
    header: dict = {"model": {"architecture": model.config.arch, "config": model.config.to_dict()},
                    "tokenizer": model.tokenizer.to_hf_dict() if model.tokenizer is not None else None,
                    "training": model.training_summary}
    regions = [(model.params, model.layout)]
    checkpoint = {}
    if optimizer is not None:
        regions += [(array, {name: (0, array.shape)}) for name, array in zip(OPTIMIZER_TENSORS,
                                                                               (optimizer.m, optimizer.v))]
        checkpoint["optimizer"] = {"type": optimizer.kind, "step": optimizer.step_count,
                                   "hyperparameters": optimizer.hyperparameters()}
    if trainer_state is not None:
        checkpoint["trainer"] = trainer_state
    if checkpoint:
        header["checkpoint"] = checkpoint
    return write(path, header, regions)
