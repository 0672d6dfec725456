"""The trainer's state: what a checkpoint holds besides the weights and the optimizer, so that a resumed run
continues the same computation. Saved as a JSON object (``trainer_state`` of a .cllm checkpoint) whose keys are the
field names."""

from __future__ import annotations

import dataclasses

__all__ = ["TrainerState"]

STATE_FORMAT = 1  # the version of the keys below; a checkpoint with another one is refused


@dataclasses.dataclass
class TrainerState:
    config: dict  # TrainConfig.to_dict() of the run that started it
    data: dict  # TokenData.fingerprint() of the shards and tokenizer it trains on
    micro_batch: int  # chosen once, at the start: the bits of a step depend on it
    planned_steps: int
    warmup: int
    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0  # seconds of training over all sessions
    last_loss: float | None = None
    best_val_loss: float | None = None
    evals_since_best: int = 0
    evals: list[dict] = dataclasses.field(default_factory=list)  # the "eval" records of metrics.jsonl
    tenths: dict = dataclasses.field(default_factory=lambda: {"eval": 0, "checkpoint": 0})  # of progress, done
    format: int = STATE_FORMAT

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, state: dict, path) -> TrainerState:
        """The state saved in checkpoint ``path``; ValueError naming it when it is not one this version reads."""
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or not required <= state.keys() \
                or not state.keys() <= names:
            raise ValueError(f"train: checkpoint {path} holds no trainer state of format {STATE_FORMAT} (keys "
                             f"{sorted(state) if isinstance(state, dict) else state!r}): resume=False starts over")
        return cls(**state)

    @property
    def last_eval(self) -> dict:
        return self.evals[-1] if self.evals else {}
