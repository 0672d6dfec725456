"""Reading a model file or a training checkpoint (written by ``checkpoint.save``) back into a Model, trusting
nothing: every tensor the config needs must be in the container with its shape, and anything else wrong is a
FormatError naming the file, what is wrong and where."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from ..formats.container import Container, FormatError, open_container
from ..tokenizer import Tokenizer
from .checkpoint import OPTIMIZER_TENSORS
from .config import ARCHS, ModelConfig
from .language_model import Model
from .parameters import parameter_layout, parameter_shapes

__all__ = ["CllmFile", "FormatError", "load", "read"]


@dataclasses.dataclass
class CllmFile:
    """Everything a .cllm file holds: the model (with its tokenizer and training summary), and for a checkpoint
    the optimizer state ``{"m", "v", "step", "hyperparameters"}`` and the trainer's state (JSON)."""

    path: Path
    version: tuple
    header: dict
    model: Model
    optimizer: dict | None
    trainer_state: dict | None


def load(path, mmap: bool = True, verify: bool | None = None) -> Model:
    """The model in a .cllm file, with ``.tokenizer`` and ``.training_summary``.

    ``mmap=True`` maps the weights copy-on-write: nothing is read until used, and changes stay in memory.
    ``verify`` (default: ``not mmap``) checks every tensor's CRC-32, which reads the whole file. The structure is
    always checked. Raises FormatError for anything that is not a valid .cllm file."""
    return read(path, mmap=mmap, verify=verify).model


def read(path, *, mmap: bool = True, verify: bool | None = None) -> CllmFile:
    """Everything in a .cllm file (see ``load`` for ``mmap`` and ``verify``)."""
    verify = (not mmap) if verify is None else bool(verify)
    with open_container(path, mmap=mmap) as c:
        header = c.header
        config = _model_config(c)
        layout, n_flat = parameter_layout(config)
        _check_parameters(c, layout)
        optimizer = _optimizer(c, n_flat)
        trainer_state = c.optional_dict(header.get("checkpoint") or {}, "trainer", "header.checkpoint")
        training = c.optional_dict(header, "training", "header") or {}
        tokenizer = _tokenizer(c, config)
        params = c.flat(layout, n_flat)
        in_memory = {name: params[offset:offset + size] for name, (offset, size) in _sizes(layout).items()}
        if optimizer is not None:
            for key, name in zip(("m", "v"), OPTIMIZER_TENSORS):
                optimizer[key] = in_memory[name] = c.array(name)
        if verify:
            c.verify(in_memory)
    model = Model(config, params=params)
    model.tokenizer = tokenizer
    model.training_summary = training
    return CllmFile(c.path, c.version, header, model, optimizer, trainer_state)


def _sizes(layout: dict) -> dict[str, tuple[int, int]]:
    return {name: (offset, math.prod(shape)) for name, (offset, shape) in layout.items()}


def _model_config(c: Container) -> ModelConfig:
    model = c.get(c.header, "model", dict, "header")
    architecture = c.get(model, "architecture", str, "header.model")
    if architecture not in ARCHS:
        c.fail(f"header.model.architecture {architecture!r} is not one of {ARCHS}")
    fields = c.get(model, "config", dict, "header.model")
    if fields.get("arch", architecture) != architecture:
        c.fail(f"header.model.config.arch {fields['arch']!r} is not header.model.architecture {architecture!r}")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    try:
        config = ModelConfig(**{k: v for k, v in fields.items() if k in known} | {"arch": architecture})
    except (TypeError, ValueError) as e:
        c.fail(f"header.model.config: {e}")
    # The parameter count is a formula: check it against the file before building a layout of that size.
    if 4 * config.n_params > c.data_nbytes:
        c.fail(f"header.model.config {config.to_dict()} needs {config.n_params} parameters; the file has "
               f"{c.data_nbytes} bytes")
    n_tensors, needed = len(c.tensors), len(parameter_shapes(config))  # at most one tensor per 4 bytes, now
    if needed > n_tensors:
        c.fail(f"header.model.config {config.to_dict()} needs {needed} tensors; the file has {n_tensors}")
    return config


def _check_parameters(c: Container, layout: dict) -> None:
    for name, (_, shape) in layout.items():
        if name not in c.tensors:
            c.fail(f"header.tensors has no {name!r}, which the model config needs")
        t = c.tensors[name]
        if t["dtype"] != "float32" or tuple(t["shape"]) != shape:
            c.fail(f"header.tensors[{name!r}] must be float32 {list(shape)} (got {t['dtype']} {t['shape']})")


def _optimizer(c: Container, n_flat: int) -> dict | None:
    checkpoint = c.optional_dict(c.header, "checkpoint", "header") or {}
    state = c.optional_dict(checkpoint, "optimizer", "header.checkpoint")
    if state is None:
        return None
    where = "header.checkpoint.optimizer"
    if c.get(state, "type", str, where) not in ("AdamW", "Muon"):
        c.fail(f"{where}.type must be 'AdamW' or 'Muon' (got {state['type']!r})")
    step = c.integer(state, "step", where)
    hyper = c.get(state, "hyperparameters", dict, where)
    for name in OPTIMIZER_TENSORS:
        t = c.tensors.get(name)
        if t is None or t["dtype"] != "float32" or t["shape"] != [n_flat]:
            c.fail(f"header.tensors[{name!r}] must be float32 [{n_flat}] in a checkpoint with an optimizer "
                   f"(got {t and (t['dtype'], t['shape'])})")
    return {"type": state["type"], "step": step, "hyperparameters": hyper}


def _tokenizer(c: Container, config: ModelConfig):
    doc = c.optional_dict(c.header, "tokenizer", "header")
    if doc is None:
        return None
    try:
        tokenizer = Tokenizer.from_hf_dict(doc, "the header's tokenizer")
    except Exception as e:  # noqa: BLE001 (untrusted input: any failure of the parser means a bad file)
        c.fail(f"header.tokenizer: {e}")
    if tokenizer.vocab_size > config.vocab_size:
        c.fail(f"header.tokenizer has {tokenizer.vocab_size} tokens, more than the model's vocab_size "
               f"{config.vocab_size}")
    return tokenizer


