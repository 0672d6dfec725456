"""``cllm train | pipeline``: their options (defaults read from TrainConfig and PipelineOptions; time budgets in
minutes here, in seconds in the API) and summaries."""

from __future__ import annotations

import argparse
import json
import sys

from ..model.config import ARCHS, PRESETS, ModelConfig
from ..optim.schedules import SCHEDULES
from ..pipeline import PipelineOptions, pipeline, print_summary
from ..train.config import TrainConfig
from ..train.distributed import world
from ..train.trainer import train
from .args import positive_float, positive_int

__all__ = ["add_parsers"]

STOP_CODES = {"SIGINT": 130, "SIGTERM": 143}  # the exit code of a run stopped by a signal


def add_parsers(sub) -> None:
    """Add ``train`` and ``pipeline`` to ``sub`` (the subparsers of ``cllm``)."""
    _add_train(sub)
    _add_pipeline(sub)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a language model on token shards (the output of cllm tokenize)",
                       description="Train a GPT-2 or Llama style model on the token shards in --data, with warmup + "
                                   "cosine "
                                   "learning rate, checkpoints every so often (resumed automatically), metrics.jsonl, "
                                   "and report.md + loss.png beside --output. Under mpiexec -n R the R ranks train "
                                   "data-parallel (docs/distributed.md).")
    c = TrainConfig
    p.add_argument("--data", required=True, metavar="DIR", help="output folder of cllm tokenize")
    p.add_argument("--output", default=c.output, metavar="FILE", help="the trained model (default: %(default)s)")
    p.add_argument("--model", choices=tuple(PRESETS), default=c.model,
                   help="preset size (vocabulary from the data, context = --seq-len; default: %(default)s)")
    p.add_argument("--arch", choices=ARCHS, default=c.arch, help="the preset's architecture (default: %(default)s)")
    p.add_argument("--qk-norm", action="store_true", help="llama: RMSNorm over each head of q and k (Qwen3's)")
    p.add_argument("--untied", action="store_true", help="llama: an output head of its own, not the embedding")
    p.add_argument("--config", metavar="JSON", help="a JSON file of ModelConfig fields instead of --model")
    p.add_argument("--init", metavar="FILE",
                   help="fine-tune this .cllm model (its config, weights and tokenizer, instead of --model; cllm "
                        "import makes one of a transformers checkpoint); --data must be tokenized with its tokenizer")
    p.add_argument("--threads", type=positive_int, default=c.num_threads,
                   help="kernel threads (default: the usable CPUs; under mpiexec, this rank's share of its node's)")
    p.add_argument("--batch-size", type=positive_int, default=c.batch_size,
                   help="sequences per step, all ranks together (default: %(default)s)")
    p.add_argument("--micro-batch", type=positive_int, default=c.micro_batch,
                   help="sequences per forward/backward (default: chosen to fit memory)")
    p.add_argument("--seq-len", type=positive_int, default=c.seq_len, help="default: %(default)s")
    p.add_argument("--epochs", type=positive_int, default=c.epochs, help="default: %(default)s")
    p.add_argument("--max-steps", type=positive_int, default=c.max_steps)
    p.add_argument("--time-budget", type=positive_float, default=c.time_budget, metavar="MINUTES")
    p.add_argument("--lr", type=positive_float, default=c.lr, help="default: %(default)s")
    p.add_argument("--min-lr", type=float, default=c.min_lr, help="default: lr / 10")
    p.add_argument("--warmup", type=int, default=c.warmup, help="steps (default: 5%% of the run, at most 1000)")
    p.add_argument("--schedule", choices=SCHEDULES, default=c.schedule, help="default: %(default)s")
    p.add_argument("--optimizer", choices=("adamw", "muon"), default=c.optimizer,
                   help="muon: Muon for the hidden matrices at --muon-lr, AdamW at --lr for the rest "
                        "(default: %(default)s)")
    p.add_argument("--muon-lr", type=positive_float, default=c.muon_lr, help="default: %(default)s")
    p.add_argument("--seq-len-start", type=positive_int, default=c.seq_len_start, metavar="N",
                   help="train on sequences of N tokens first, doubling up to --seq-len (default: --seq-len "
                        "throughout)")
    p.add_argument("--seq-len-warmup", type=float, default=c.seq_len_warmup, metavar="FRACTION",
                   help="the fraction of the run the lengths take to reach --seq-len (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=c.weight_decay, help="default: %(default)s")
    p.add_argument("--grad-clip", type=float, default=c.grad_clip, help="0 disables clipping (default: %(default)s)")
    p.add_argument("--eval-every", type=positive_int, default=c.eval_every,
                   help="steps (default: every tenth of the run)")
    p.add_argument("--eval-tokens", type=positive_int, default=c.eval_tokens, help="default: %(default)s")
    p.add_argument("--patience", type=positive_int, default=c.patience,
                   help="stop after this many evaluations without a better validation loss")
    p.add_argument("--checkpoint-every", type=positive_int, default=c.checkpoint_every,
                   help="steps (default: every tenth of the run)")
    p.add_argument("--keep-checkpoints", type=positive_int, default=c.keep_checkpoints, help="default: %(default)s")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=c.resume,
                   help="continue from the newest checkpoint beside --output (default); --no-resume starts over")
    p.add_argument("--seed", type=int, default=c.seed, help="default: %(default)s")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_train)


def _model(args):
    """--model, or the ModelConfig of the --config JSON file."""
    if not args.config:
        return args.model
    try:
        with open(args.config, encoding="utf-8") as f:
            return ModelConfig(**json.load(f))
    except (OSError, json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"--config {args.config}: expected a JSON object of ModelConfig fields ({e})") from None


def _train(args) -> int:
    options = {k: getattr(args, k) for k in (
        "batch_size", "seq_len", "epochs", "max_steps", "lr", "min_lr", "warmup", "schedule", "weight_decay",
        "micro_batch", "eval_every", "eval_tokens", "patience", "checkpoint_every", "keep_checkpoints", "output",
        "resume", "seed", "optimizer", "muon_lr", "seq_len_start", "seq_len_warmup", "init")}
    options["model"] = _model(args)
    if not args.config:
        options.update(arch=args.arch, qk_norm=args.qk_norm, tie_embeddings=not args.untied)
    options["time_budget"] = None if args.time_budget is None else args.time_budget * 60
    options["grad_clip"] = args.grad_clip or None  # 0: no clipping
    options["num_threads"] = args.threads
    result = train(args.data, progress=not args.quiet, **options)
    code = STOP_CODES.get(result.stopped, 0)
    if world().rank:  # under mpiexec rank 0 speaks for all
        return code
    if code:
        print(f"cllm train: stopped by {result.stopped} at step {result.steps}; checkpoint written to "
              f"{result.checkpoint}. Run the same command again to resume.", file=sys.stderr)
        return code
    val = "" if result.val_loss is None else (f", val loss {result.val_loss:.4f} (perplexity {result.perplexity:.2f}, "
                                              f"{result.bits_per_byte:.4f} bits/byte)")
    print(f"trained {result.steps} steps, {result.tokens:,} tokens in {result.seconds:.1f} s "
          f"({result.tokens_per_second:,.0f} tokens/s; stopped: {result.stopped}): train loss "
          f"{result.train_loss:.4f}{val} -> {result.output}; report {result.report}")
    return 0


def _add_pipeline(sub) -> None:
    p = sub.add_parser("pipeline", help="the main job: collect, preprocess, tokenize, train, evaluate, sample",
                       description="Run every stage on --source (default: the Python standard library's sources) "
                                   "in --workdir within --budget minutes; stages that are up to date are skipped, "
                                   "an interrupted run continues where it stopped.")
    o = PipelineOptions
    p.add_argument("--source", action="append", metavar="DIR|URL", help="repeatable (default: the standard library)")
    p.add_argument("--workdir", default=o.workdir, metavar="DIR", help="default: %(default)s")
    p.add_argument("--budget", type=positive_float, default=o.time_budget / 60, metavar="MINUTES",
                   help="the whole run's time (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, default=o.num_threads,
                   help="kernel threads (default: the usable CPUs)")
    p.add_argument("--vocab-size", type=positive_int, default=o.vocab_size, help="default: the tuned %(default)s")
    p.add_argument("--model", choices=tuple(PRESETS), default=o.model,
                   help="preset size (default: the tuned %(default)s)")
    p.add_argument("--arch", choices=ARCHS, default=o.arch, help="default: the tuned %(default)s")
    p.add_argument("--qk-norm", action=argparse.BooleanOptionalAction, default=o.qk_norm,
                   help="llama: RMSNorm over each head of q and k (default: the tuned %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_pipeline)


def _pipeline(args) -> int:
    options = PipelineOptions(sources=tuple(args.source or ()), workdir=args.workdir, time_budget=args.budget * 60,
                              num_threads=args.threads, vocab_size=args.vocab_size, model=args.model, arch=args.arch,
                              qk_norm=args.qk_norm, progress=not args.quiet)
    print_summary(pipeline(options))
    return 0
