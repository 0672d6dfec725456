"""The training loop: ``cllm.train(data, **options) -> TrainResult`` (options: ``cllm.TrainConfig``).

One optimizer step = one global batch of ``batch_size`` windows of ``seq_len`` tokens (cut into shorter sequences
early in the run under a sequence-length schedule, ``batches.seq_len_at``), split into equal micro-batches whose
gradients are summed along their sphere tree (``cllm.distributed.GradientSum``); then global-norm clipping and
AdamW (or Muon with AdamW) at the scheduled learning rate. Epoch e visits every training window once, in an
order fixed by (seed, e). Everything a step does is a function of the step number and the saved state, and the
kernels give the same bits for any thread count: a run resumed from a checkpoint, with any thread count, ends
with the same weights as one that was never stopped.

Under an MPI launcher (``mpiexec -n R``, docs/distributed.md) each rank computes a share of every step's
micro-batches, with the same bits as one process; rank 0 alone reads the checkpoint to start from (and
broadcasts it), writes files and shows progress, and every rank evaluates a share of the validation windows.

Beside ``output``: ``metrics.jsonl`` (a line per step, per evaluation, per epoch), ``checkpoints/`` (the last
``keep_checkpoints`` checkpoints, .cllm files with the optimizer and trainer state), and at the end ``report.md``
and ``loss.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from ..evaluate.metrics import bits_per_byte, held_out_sample
from ..formats import FormatError
from ..model import Model, load, read
from ..model.config import PRESETS, ModelConfig
from ..model.parameters import memory_estimate, parameter_layout
from ..optim import AdamW, Muon, lr_at
from ..runtime.atomic import atomic_write
from ..runtime.progress import progress_bar
from ..runtime.resources import available_memory, cpu_seconds, peak_rss
from ..runtime.signals import StopSignals
from ..runtime.threads import threads
from ..tokenizer.shards import TokenData
from .batches import Windows, seq_len_at, split_windows
from .config import TrainConfig
from .distributed import GradientSum, world
from .report import write_report
from .state import TrainerState

__all__ = ["TrainResult", "train"]

MAX_MICRO_TOKENS = 16_384  # larger micro-batches gain nothing in GEMM efficiency and only cost memory
MEMORY_FRACTION = 0.8  # of the memory available when training starts
# Options that must be equal for a resumed run to continue the same computation.
RESUME_KEYS = ("model", "init", "arch", "qk_norm", "tie_embeddings", "batch_size", "seq_len", "epochs", "max_steps",
               "lr", "min_lr", "warmup", "schedule", "optimizer", "muon_lr", "seq_len_start", "seq_len_warmup",
               "weight_decay", "grad_clip", "seed")


@dataclasses.dataclass
class TrainResult:
    """What a training run did and where it left its files."""

    output: Path
    checkpoint: Path | None
    metrics: Path
    report: Path | None
    steps: int
    tokens: int
    train_loss: float | None
    val_loss: float | None
    best_val_loss: float | None
    perplexity: float | None
    bits_per_byte: float | None
    seconds: float
    tokens_per_second: float
    stopped: str  # "epochs", "max_steps", "time_budget", "patience", "SIGINT" or "SIGTERM"
    resumed_from: Path | None = None


def train(data="tokens/", **options) -> TrainResult:
    """Train a GPT on the token shards in ``data`` (a ``cllm tokenize`` output folder); see TrainConfig."""
    with world().abort_on_error():
        try:
            config = TrainConfig(**options)
        except TypeError as e:
            raise TypeError(f"train: {e}".replace("TrainConfig.__init__() ", "")) from None
        return Trainer(data, config).run()


class Trainer:
    def __init__(self, data, config: TrainConfig):
        self.cfg = c = config
        self.world = w = world()
        self.data = TokenData(data)
        self.output = Path(c.output)
        self.folder = self.output.parent
        self.checkpoints = self.folder / "checkpoints"
        self.metrics_path = self.folder / "metrics.jsonl"
        if w.rank == 0:
            self._check_writable()
        if c.batch_size % w.size:
            raise ValueError(f"train: batch_size {c.batch_size} must be a multiple of the number of ranks "
                             f"({w.size})")
        self.init = self._init_model() if c.init is not None else None  # on every rank: each checks the data
        self.model_config = self._model_config()
        self.windows = Windows(self.data.train, c.seq_len)
        self.val_windows = Windows(self.data.val, c.seq_len)
        if len(self.windows) < c.batch_size:
            raise ValueError(f"train: the training data holds {len(self.windows)} windows of seq_len {c.seq_len} "
                             f"tokens, fewer than batch_size {c.batch_size}: lower batch_size or seq_len")
        if c.patience is not None and not len(self.val_windows):
            raise ValueError(f"train: patience needs validation data, and {self.data.directory} has no val window "
                             f"of {c.seq_len + 1} tokens")
        self.steps_per_epoch = len(self.windows) // c.batch_size
        self.planned = c.epochs * self.steps_per_epoch
        if c.max_steps is not None:
            self.planned = min(self.planned, c.max_steps)
        # default warmup: 5% of the planned steps, at most 1,000; at most 100 with a time budget, which usually
        # ends the run long before the planned steps
        self.warmup = c.warmup if c.warmup is not None else min(1000 if c.time_budget is None else 100,
                                                                round(0.05 * self.planned))
        self.token_bytes = self.data.token_bytes()

    # --- set-up checks -----------------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.folder / ".cllm-write-test"):
                pass
            os.unlink(self.folder / ".cllm-write-test")
        except OSError as e:
            raise ValueError(f"train: output folder {self.folder} is not writable ({e.strerror})") from None

    def _init_model(self) -> Model:
        """The model of ``init``, checked against the data: the same tokenizer, a context for seq_len."""
        c = self.cfg
        try:
            model = load(c.init, mmap=False)
        except OSError as e:
            raise ValueError(f"train: init {c.init}: {e.strerror} (expected a .cllm model)") from None
        mine, data = model.tokenizer, self.data.tokenizer
        if mine is None or mine.to_hf_dict() != data.to_hf_dict():
            have = "no tokenizer" if mine is None else f"a tokenizer of {mine.vocab_size:,} tokens"
            raise ValueError(f"train: {c.init} has {have}, and the data in {self.data.directory} was tokenized with "
                             f"another ({data.vocab_size:,} tokens): tokenize it again with cllm tokenize --tokenizer "
                             f"{c.init}")
        if c.seq_len > model.config.context_length:
            raise ValueError(f"train: seq_len {c.seq_len} is longer than {c.init}'s context_length "
                             f"{model.config.context_length}")
        return model

    def _model_config(self) -> ModelConfig:
        c, vocab = self.cfg, self.data.tokenizer.vocab_size
        if self.init is not None:
            return self.init.config
        if isinstance(c.model, ModelConfig):
            if c.model.vocab_size < vocab:
                raise ValueError(f"train: the model's vocab_size {c.model.vocab_size} is smaller than the data's "
                                 f"tokenizer ({vocab} tokens)")
            return c.model
        _, _, d_model, n_layers, n_heads = PRESETS[c.model]
        options = {} if c.arch == "gpt2" else {"qk_norm": c.qk_norm, "tie_embeddings": c.tie_embeddings}
        return ModelConfig(vocab_size=-(-vocab // 64) * 64, context_length=c.seq_len, d_model=d_model,
                           n_layers=n_layers, n_heads=n_heads, arch=c.arch, **options)

    def _micro_batch(self) -> int:
        """The largest divisor of batch_size / ranks whose micro-batch fits MAX_MICRO_TOKENS and this rank's
        share of the node's available memory."""
        c, w = self.cfg, self.world
        available = MEMORY_FRACTION * available_memory() / w.node_size
        size = parameter_layout(self.model_config)[1]
        need = lambda m: (sum(memory_estimate(self.model_config, m, c.seq_len).values())
                          + GradientSum.extra_bytes(c.batch_size // m, size, w.size))
        share = c.batch_size // w.size
        if c.micro_batch is not None:
            if share % c.micro_batch:
                raise ValueError(f"train: micro_batch must divide batch_size / ranks = {share} (got "
                                 f"{c.micro_batch})")
            candidates = [c.micro_batch]
        else:
            candidates = [m for m in range(share, 0, -1)
                          if share % m == 0 and (m * c.seq_len <= MAX_MICRO_TOKENS or m == 1)]
        for m in candidates:
            if need(m) <= available:
                return m
        m = candidates[-1]
        raise ValueError(f"train: a micro-batch of {m} x {c.seq_len} tokens needs {need(m) / 1e9:.2f} GB, more than "
                         f"the {available / 1e9:.2f} GB available: lower micro_batch, seq_len or the model size")

    # --- the run -----------------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        c, w = self.cfg, self.world
        nt = c.num_threads or w.default_threads()
        with threads(nt), StopSignals() as stop:
            self.model, self.opt, self.state, resumed_from = self._start()
            self.micro = self.state.micro_batch
            self.gradient_sum = GradientSum(w, c.batch_size // self.micro, self.model.params.size)
            session_start, cpu_start = time.perf_counter(), cpu_seconds()
            elapsed_before = self.state.elapsed
            # Rank 0's clock, so that every rank takes the same time-based decisions (a collective with several
            # ranks: every rank calls it at the same points).
            self.elapsed = lambda: w.bcast(elapsed_before + time.perf_counter() - session_start)
            stopped = self._loop(stop)
            self.state.elapsed = self.elapsed()
            checkpoint = self._checkpoint()
            session = {"seconds": time.perf_counter() - session_start, "cpu_seconds": cpu_seconds() - cpu_start,
                       "threads": nt, "ranks": w.size, "peak_rss": peak_rss()}
            report = None
            if stopped not in ("SIGINT", "SIGTERM") and w.rank == 0:
                self._save_output()
                report = write_report(self.folder, self.metrics_path, self._summary(), c, self.model_config, session)
        return self._result(stopped, checkpoint, report, resumed_from)

    def _start(self):
        """(model, optimizer, trainer state, checkpoint resumed from or None): rank 0's, on every rank."""
        w = self.world
        if w.size == 1:
            return self._open()
        model, opt, state, resumed_from = self._open() if w.rank == 0 else (None,) * 4
        state, resumed_from, opt_step = w.bcast((state, resumed_from, opt and opt.step_count))
        if w.rank:
            model = self.init or Model(self.model_config, seed=self.cfg.seed)
            model.tokenizer = self.data.tokenizer
            opt = self._optimizer(model)
        for a in (model.params, opt.m, opt.v):
            w.bcast_array(a)
        opt.step_count = opt_step
        return model, opt, state, resumed_from

    def _open(self):
        """``_start`` in one process: the newest readable checkpoint when resuming, else a new model."""
        c = self.cfg
        if c.resume:
            for path in sorted(self.checkpoints.glob("step_*.cllm"), reverse=True):
                try:
                    f = read(path, mmap=False, verify=True)
                except FormatError:
                    continue  # e.g. a disk error after writing: fall back to the previous one
                self._check_resumable(path, f.trainer_state or {})
                state = TrainerState.from_dict(f.trainer_state, path)
                model, opt = f.model, self._optimizer(f.model)
                opt.load_state_dict(f.optimizer)
                model.tokenizer = self.data.tokenizer
                self._truncate_metrics(state.step)
                return model, opt, state, path
        for old in self.checkpoints.glob("step_*.cllm"):
            old.unlink()
        if self.metrics_path.exists():
            self.metrics_path.unlink()
        micro_batch = self._micro_batch()  # before allocating the model: a model too large fails here
        model = self.init or Model(self.model_config, seed=c.seed)
        model.tokenizer = self.data.tokenizer
        state = TrainerState(config=c.to_dict(), data=self.data.fingerprint(), micro_batch=micro_batch,
                             planned_steps=self.planned, warmup=self.warmup)
        return model, self._optimizer(model), state, None

    def _optimizer(self, model: Model) -> AdamW | Muon:
        c = self.cfg
        if c.optimizer == "muon":
            return Muon(model, lr=c.muon_lr, weight_decay=c.weight_decay, adamw_lr=c.lr,
                        adamw_weight_decay=c.weight_decay, grad_clip=c.grad_clip)
        return AdamW(model, lr=c.lr, weight_decay=c.weight_decay, grad_clip=c.grad_clip)

    def _check_resumable(self, path: Path, state: dict) -> None:
        saved, now = state.get("config", {}), self.cfg.to_dict()
        changed = [f"{k}={saved.get(k)!r} (now {now[k]!r})" for k in RESUME_KEYS if saved.get(k) != now[k]]
        if state.get("data") != self.data.fingerprint():
            changed.append("the data (shards or tokenizer)")
        if changed:
            raise ValueError(f"train: checkpoint {path} was made with other settings: {', '.join(changed)}; pass "
                             f"the same options to resume, or resume=False (--no-resume) to start over")

    def _loop(self, stop) -> str:
        """Steps until the run ends; returns why it ended (TrainResult.stopped). Every rank takes the same
        decisions (``world.first`` of the signals, rank 0's clock), so that each makes the same collective calls;
        ranks other than 0 write their metrics to os.devnull."""
        c, st, w = self.cfg, self.state, self.world
        stopped, order, order_epoch = None, None, None
        bar = progress_bar(c.progress and w.rank == 0, total=self.planned, initial=st.step, unit="step",
                           desc="training")
        metrics = open(self.metrics_path if w.rank == 0 else os.devnull, "a", encoding="utf-8")
        try:
            while st.step < self.planned and not stopped:
                if c.time_budget is not None and self.elapsed() >= c.time_budget:
                    stopped = "time_budget"
                    break
                epoch, k = divmod(st.step, self.steps_per_epoch)
                if order_epoch != epoch:
                    order, order_epoch = self.windows.epoch_order(c.seed, epoch), epoch
                self._step(order[k * c.batch_size:(k + 1) * c.batch_size], epoch, metrics, bar)
                if self._due("eval", c.eval_every) and len(self.val_windows) and self._evaluate(metrics):
                    stopped = "patience"
                if self._due("checkpoint", c.checkpoint_every) and not stopped:
                    st.elapsed = self.elapsed()
                    self._checkpoint()
                signal = w.first(stop.signal)  # a collective: called on every step by every rank
                stopped = stopped or signal
            stopped = stopped or ("max_steps" if c.max_steps is not None and st.step >= c.max_steps else "epochs")
            evaluated = st.evals and st.evals[-1]["step"] == st.step
            if stopped not in ("SIGINT", "SIGTERM") and len(self.val_windows) and not evaluated:
                self._evaluate(metrics)
        finally:
            bar.close()
            metrics.close()
        return stopped

    def _step(self, batch, epoch: int, metrics, bar) -> None:
        """One optimizer step on the global batch (window indices), recorded in metrics.jsonl and the bar."""
        c, st = self.cfg, self.state
        tokens = c.batch_size * c.seq_len
        step_start, elapsed = time.perf_counter(), self.elapsed()
        lr = self._lr(st.step, elapsed)
        length = seq_len_at(self._progress(st.step, elapsed), c.seq_len, c.seq_len_start, c.seq_len_warmup)
        loss = self._gradients(batch, length)
        norm = self.opt.step(lr)
        st.step += 1
        st.tokens += tokens
        st.last_loss = loss
        rate, now = tokens / (time.perf_counter() - step_start), self.elapsed()
        _write(metrics, {"type": "step", "step": st.step, "epoch": epoch, "tokens": st.tokens, "loss": loss,
                         "lr": lr, "seq_len": length, "grad_norm": norm, "tokens_per_s": rate, "elapsed": now})
        if st.step % self.steps_per_epoch == 0:
            _write(metrics, {"type": "epoch", "epoch": epoch, "step": st.step, "elapsed": now})
        if c.time_budget is not None:  # the bar's end (and so its ETA) where the budget is expected to end
            bar.total = min(self.planned, max(st.step, round(st.step * c.time_budget / now)))
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{rate:,.0f}", refresh=False)
        if not math.isfinite(loss):
            raise RuntimeError(f"train: the loss became {loss} at step {st.step}: lower lr (now {c.lr}) or raise "
                               f"warmup")

    def _result(self, stopped: str, checkpoint: Path, report: Path | None, resumed_from: Path | None) -> TrainResult:
        st, last = self.state, self.state.last_eval
        return TrainResult(
            output=self.output, checkpoint=checkpoint, metrics=self.metrics_path, report=report, steps=st.step,
            tokens=st.tokens, train_loss=st.last_loss, val_loss=last.get("val_loss"),
            best_val_loss=st.best_val_loss, perplexity=last.get("perplexity"),
            bits_per_byte=last.get("bits_per_byte"), seconds=st.elapsed,
            tokens_per_second=st.tokens / st.elapsed if st.elapsed else 0.0, stopped=stopped,
            resumed_from=resumed_from)

    def _gradients(self, batch, length: int) -> float:
        """The mean loss of the global batch, its windows cut into sequences of ``length`` tokens, with its
        gradient left in the model's grad_buffer on every rank; this rank computes its share of the micro-batches.
        Losses and gradients are added in a fixed order: the same bits for any rank count."""
        model, micro, total = self.model, self.micro, self.gradient_sum
        losses = {}
        for j in total.mine():
            x, y = split_windows(*self.windows.batch(batch[j * micro:(j + 1) * micro]), length)
            losses[j] = model.forward_backward(x, y, loss_scale=1.0 / total.n)
            total.add(model.grad_buffer)
        total.finish(model.grad_buffer)
        losses = self.world.merge(losses)
        return sum(losses[j] / total.n for j in range(total.n))

    def _progress(self, step: int, elapsed: float) -> float:
        """The run's fraction done: by steps, or by the time budget when that is further along."""
        by_time = 0.0 if self.cfg.time_budget is None else elapsed / self.cfg.time_budget
        return max(step / self.planned, by_time)

    def _lr(self, step: int, elapsed: float) -> float:
        """The scheduled rate. With a time budget the schedule runs on whichever is further along, the steps or
        the time: a run cut by its budget still ends its decay at the end."""
        c = self.cfg
        if c.time_budget is not None and step >= self.warmup:
            by_time = self.warmup + round(min(1.0, elapsed / c.time_budget) * (self.planned - self.warmup))
            step = max(step, by_time)
        return lr_at(step, lr=c.lr, warmup=self.warmup, max_steps=self.planned, min_lr=c.min_lr,
                     schedule=c.schedule)

    def _due(self, what: str, every: int | None) -> bool:
        """Every ``every`` steps, or (None) at each tenth of the run's progress by steps or by time budget."""
        st = self.state
        if every is not None:
            return st.step % every == 0
        tenth = min(10, math.floor(10 * self._progress(st.step, self.elapsed()) + 1e-9))
        if tenth > st.tenths[what]:
            st.tenths[what] = tenth
            return True
        return False

    def _evaluate(self, metrics) -> bool:
        """Validation loss, perplexity and bits per byte on eval_tokens of the val shards, in windows spread over
        all of them (``held_out_sample``, as ``cllm eval`` takes them); records them and returns True when patience
        has run out."""
        c, st, w = self.cfg, self.state, self.world
        w.check_same(self.model.params, st.step)
        sample = held_out_sample(len(self.val_windows), -(-c.eval_tokens // c.seq_len))
        parts = {}  # micro-batch i of the sample -> (nats, tokens, bytes); each rank does every R-th one
        for i, start in enumerate(range(0, sample.size, self.micro)):
            if i % w.size == w.rank:
                x, y = self.val_windows.batch(sample[start:start + self.micro])
                parts[i] = (float(np.sum(self.model.token_losses(x, y), dtype=np.float64)), y.size,
                            int(self.token_bytes[y].sum()))
        parts = [part for _, part in sorted(w.merge(parts).items())]  # added in order: the same for any rank count
        nats, tokens, nbytes = (sum(part[k] for part in parts) for k in range(3))
        val = nats / tokens
        record = {"type": "eval", "step": st.step, "tokens": st.tokens, "val_loss": val,
                  "perplexity": math.exp(min(val, 700.0)), "bits_per_byte": bits_per_byte(nats, nbytes),
                  "elapsed": self.elapsed()}
        _write(metrics, record)
        st.evals.append(record)
        if st.best_val_loss is None or val < st.best_val_loss:
            st.best_val_loss, st.evals_since_best = val, 0
        else:
            st.evals_since_best += 1
        return c.patience is not None and st.evals_since_best >= c.patience

    def _summary(self) -> dict:
        st, last = self.state, self.state.last_eval
        summary = {"steps": st.step, "tokens": st.tokens, "train_loss": st.last_loss,
                   "val_loss": last.get("val_loss"), "best_val_loss": st.best_val_loss,
                   "perplexity": last.get("perplexity"), "bits_per_byte": last.get("bits_per_byte"),
                   "seconds": round(st.elapsed, 3), "data": str(self.data.directory)}
        return {k: v for k, v in summary.items() if v is not None}

    def _checkpoint(self) -> Path:
        """Write a checkpoint (rank 0); its path on every rank."""
        path = self.checkpoints / f"step_{self.state.step:08d}.cllm"
        if self.world.rank:
            return path
        self.checkpoints.mkdir(exist_ok=True)
        self.model.training_summary = self._summary()
        self.model.save(path, optimizer=self.opt, trainer_state=self.state.to_dict())
        for old in sorted(self.checkpoints.glob("step_*.cllm"))[:-self.cfg.keep_checkpoints]:
            old.unlink()
        return path

    def _save_output(self) -> None:
        self.model.training_summary = self._summary()
        self.model.save(self.output)

    def _truncate_metrics(self, step: int) -> None:
        """Drop the lines written after the checkpoint a run resumes from (those steps run again)."""
        if not self.metrics_path.exists():
            return
        kept = [line for line in self.metrics_path.read_text(encoding="utf-8").splitlines(keepends=True)
                if line.strip() and _line_step(line) <= step]
        with atomic_write(self.metrics_path, "w") as f:
            f.writelines(kept)


# --- helpers --------------------------------------------------------------------------------------------------

def _write(f, record: dict) -> None:
    f.write(json.dumps(record) + "\n")
    f.flush()


def _line_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 62  # a torn last line from a killed run: dropped
