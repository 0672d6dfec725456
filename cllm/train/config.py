"""The options of a training run (``cllm.train(data, **options)``), validated, with their defaults."""

from __future__ import annotations

import dataclasses
import os

from ..model.config import PRESETS, ModelConfig
from ..optim.schedules import SCHEDULES
from ..runtime import checks

__all__ = ["TrainConfig"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything ``cllm.train`` needs besides the data, with the defaults it documents (docs/training.md).

    ``model``: a preset name ("tiny", "mini", "small", "base": its widths and depth, with the vocabulary taken from the
    data's tokenizer rounded up to a multiple of 64 and context_length = seq_len; in the architecture ``arch`` with
    ``qk_norm`` and ``tie_embeddings``) or a ModelConfig (used as is; those three must then be left as they are).
    ``init``: a .cllm model to fine-tune (``cllm import`` makes one of a transformers checkpoint): its config,
    weights and tokenizer, which must be the data's; ``model``, ``arch``, ``qk_norm`` and ``tie_embeddings`` are
    then not used.
    ``optimizer``: "adamw" (at ``lr``), or "muon" (Muon at ``muon_lr`` for the hidden matrices, AdamW at ``lr``
    for the rest; both follow the schedule). ``seq_len_start``: a sequence-length schedule, doubling from this
    length (a power-of-two fraction of seq_len) to seq_len over the first ``seq_len_warmup`` of the run, each
    window of seq_len cut into shorter sequences (the same tokens per step); evaluation is always at seq_len.
    ``batch_size`` is the global batch in sequences of ``seq_len`` tokens; ``micro_batch`` (None: chosen to fit
    memory) must divide it. The run ends after ``epochs`` passes over the training windows, or earlier at
    ``max_steps``, after ``time_budget`` seconds, or when the validation loss has not improved for ``patience``
    evaluations. ``warmup`` None: 5% of the planned steps (at most 1,000; at most 100 with a time budget). ``eval_every`` / ``checkpoint_every``
    None: at every tenth of the run's progress (steps, or the time budget, whichever is further along).
    """

    model: object = "small"
    arch: str = "gpt2"
    qk_norm: bool = False
    tie_embeddings: bool = True
    init: str | None = None
    num_threads: int | None = None
    batch_size: int = 128
    seq_len: int = 512
    epochs: int = 1
    max_steps: int | None = None
    time_budget: float | None = None
    lr: float = 6e-4
    min_lr: float | None = None
    warmup: int | None = None
    schedule: str = "cosine"
    optimizer: str = "adamw"
    muon_lr: float = 0.02
    seq_len_start: int | None = None
    seq_len_warmup: float = 0.5
    weight_decay: float = 0.1
    grad_clip: float | None = 1.0
    micro_batch: int | None = None
    eval_every: int | None = None
    eval_tokens: int = 32_768
    patience: int | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int = 3
    output: str = "model.cllm"
    resume: bool = True
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        def integer(name, low, optional=False):  # stored as a Python int: the config goes into JSON
            object.__setattr__(self, name, checks.integer(getattr(self, name), f"TrainConfig: {name}", low,
                                                          optional=optional))

        def number(name, low, optional=False, open_low=False):
            value = getattr(self, name)
            checks.number(value, f"TrainConfig: {name}", low, low_open=open_low, optional=optional)
            if value is not None and not isinstance(value, (int, float)):
                object.__setattr__(self, name, float(value))  # a numpy scalar, which JSON cannot take

        if not isinstance(self.output, (str, os.PathLike)):
            raise ValueError(f"TrainConfig: output must be a path (got {self.output!r})")
        object.__setattr__(self, "output", os.fspath(self.output))
        if self.init is not None:
            if not isinstance(self.init, (str, os.PathLike)):
                raise ValueError(f"TrainConfig: init must be the path of a .cllm model (got {self.init!r})")
            if isinstance(self.model, ModelConfig):
                raise ValueError("TrainConfig: give init (a model file to start from) or a ModelConfig, not both")
            object.__setattr__(self, "init", os.fspath(self.init))
        if not (isinstance(self.model, ModelConfig) or self.model in PRESETS):
            raise ValueError(f"TrainConfig: model must be one of {sorted(PRESETS)} or a cllm.ModelConfig "
                             f"(got {self.model!r})")
        for name in ("batch_size", "seq_len", "epochs", "eval_tokens", "keep_checkpoints"):
            integer(name, 1)
        for name in ("num_threads", "max_steps", "micro_batch", "eval_every", "patience", "checkpoint_every",
                     "seq_len_start"):
            integer(name, 1, optional=True)
        integer("warmup", 0, optional=True)
        integer("seed", 0)
        number("lr", 0, open_low=True)
        number("min_lr", 0, optional=True)
        number("weight_decay", 0)
        number("grad_clip", 0, optional=True, open_low=True)
        number("time_budget", 0, optional=True, open_low=True)
        number("muon_lr", 0, open_low=True)
        number("seq_len_warmup", 0)
        if self.seq_len_warmup > 1:
            raise ValueError(f"TrainConfig: seq_len_warmup must be a fraction of the run in [0, 1] (got "
                             f"{self.seq_len_warmup!r})")
        if self.seq_len_start is not None:
            ratio = self.seq_len // self.seq_len_start
            if self.seq_len % self.seq_len_start or ratio & (ratio - 1):
                raise ValueError(f"TrainConfig: seq_len_start must be seq_len / 2^k (seq_len = {self.seq_len}; got "
                                 f"{self.seq_len_start})")
        if self.optimizer not in ("adamw", "muon"):
            raise ValueError(f"TrainConfig: optimizer must be 'adamw' or 'muon' (got {self.optimizer!r})")
        if isinstance(self.model, ModelConfig):
            for name, default in (("arch", "gpt2"), ("qk_norm", False), ("tie_embeddings", True)):
                if getattr(self, name) != default:
                    raise ValueError(f"TrainConfig: {name} is the ModelConfig's to say when model is one")
        else:
            ModelConfig.preset("tiny", arch=self.arch, qk_norm=self.qk_norm, tie_embeddings=self.tie_embeddings)
        if self.min_lr is not None and self.min_lr > self.lr:
            raise ValueError(f"TrainConfig: min_lr must be <= lr = {self.lr} (got {self.min_lr!r})")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig: schedule must be one of {SCHEDULES} (got {self.schedule!r})")
        if self.micro_batch is not None and self.batch_size % self.micro_batch:
            raise ValueError(f"TrainConfig: micro_batch must divide batch_size = {self.batch_size} "
                             f"(got {self.micro_batch})")
        if isinstance(self.model, ModelConfig) and self.seq_len > self.model.context_length:
            raise ValueError(f"TrainConfig: seq_len {self.seq_len} is longer than the model's context_length "
                             f"{self.model.context_length}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if isinstance(self.model, ModelConfig):
            d["model"] = self.model.to_dict()
        return d
