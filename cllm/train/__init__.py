"""Stage 4: the training loop (``train``), its options (``TrainConfig``), batches, MPI data parallelism and report."""

from .config import TrainConfig
from .trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
