"""``cllm generate | eval | complete | info``: the commands that read a .cllm model."""

from __future__ import annotations

import argparse
import json
import sys

from ..evaluate import complete, evaluate
from ..model import load, read
from ..runtime.threads import set_num_threads
from .args import non_negative_float, non_negative_int, positive_float, positive_int

__all__ = ["add_parsers"]


def add_parsers(sub) -> None:
    """Add the model commands to ``sub`` (the subparsers of ``cllm``)."""
    _add_info(sub)
    _add_generate(sub)
    _add_eval(sub)
    _add_complete(sub)


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="describe a .cllm file and verify its checksums",
                       description="Show a .cllm file's format version, model config and size, tokenizer, training "
                                   "summary and checkpoint contents, after checking its structure and checksums.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.add_argument("--no-verify", action="store_true", help="skip the checksums (which read the whole file)")
    p.set_defaults(run=_info)


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a prompt",
                       description="Print the text a .cllm model generates after --prompt (the prompt itself is not "
                                   "repeated). Temperature 0 is greedy; a fixed --seed reproduces the output.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--prompt", required=True, help="the text to continue ('' starts a new document)")
    p.add_argument("--max-tokens", type=non_negative_int, default=256)
    p.add_argument("--temperature", type=non_negative_float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=positive_int, default=None)
    p.add_argument("--top-p", type=positive_float, default=None, help="in (0, 1]")
    p.add_argument("--repetition-penalty", type=positive_float, default=1.0, help="1 = none")
    p.add_argument("--seed", type=non_negative_int, default=None)
    p.add_argument("--stream", action="store_true", help="print the text as it is generated")
    p.add_argument("--token-healing", action="store_true",
                   help="take the prompt's last token back and start with a token that extends it")
    p.add_argument("--threads", type=positive_int, default=None)
    p.set_defaults(run=_generate)


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="validation loss, perplexity, bits per byte and accuracy",
                       description="Evaluate a .cllm model on the val shards of a `cllm tokenize` folder or on text "
                                   "files: loss, perplexity, bits per byte (beside xz -9e and gzip -9 on the same "
                                   "bytes), top-1 and top-5 next-token accuracy.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--data", required=True, nargs="+", metavar="PATH",
                   help="a tokens/ folder (its val_*.bin), or text files and folders of them")
    p.add_argument("--max-tokens", type=positive_int, default=None,
                   help="predict at most this many tokens, in windows spread over the data")
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--threads", type=positive_int, default=None)
    p.set_defaults(run=_eval)


def _add_complete(sub) -> None:
    p = sub.add_parser("complete", help="complete held-out lines of source files",
                       description="At --positions line starts chosen at random (--seed) in the source files, "
                                   "complete the line greedily from the code before it; report the exact-match rate "
                                   "and the character similarity, with examples.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--source", required=True, action="append", metavar="PATH",
                   help="a source file, or a folder (its *.py files); repeatable")
    p.add_argument("--positions", type=positive_int, default=20)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--max-tokens", type=positive_int, default=64, help="longest completion, in tokens")
    p.add_argument("--examples", type=non_negative_int, default=5, help="cases to print")
    p.add_argument("--token-healing", action=argparse.BooleanOptionalAction, default=True,
                   help="complete from the prompt less its last token, starting with a token that extends it "
                        "(default: on)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--threads", type=positive_int, default=None)
    p.set_defaults(run=_complete)


def _info(args) -> int:
    f = read(args.file, mmap=True, verify=not args.no_verify)
    summary = _describe(f, verified=not args.no_verify)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    m, c = summary["model"], summary["model"]["config"]
    print(f"{f.path}: .cllm format {summary['format_version']}, {summary['file_bytes']:,} bytes")
    cfg = f.model.config
    shape = (f"GPT-2, MLP {cfg.mlp_ratio}x" if cfg.arch == "gpt2" else
             f"Llama, SwiGLU MLP {cfg.hidden_size}, rope theta {cfg.rope_theta:g}, "
             f"QK-norm {'on' if cfg.qk_norm else 'off'}, head {'tied' if cfg.tie_embeddings else 'untied'}")
    print(f"model:      {m['parameters']:,} parameters ({m['parameter_bytes'] / 1e6:.1f} MB float32): "
          f"vocab {c['vocab_size']}, context {c['context_length']}, d_model {c['d_model']}, {c['n_layers']} layers, "
          f"{c['n_heads']} heads; {shape}")
    t = summary["tokenizer"]
    print("tokenizer:  none" if t is None else
          f"tokenizer:  byte-level BPE, {t['vocab_size']:,} tokens ({t['merges']:,} merges), pattern {t['pattern']}, "
          f"special {', '.join(t['special_tokens']) or 'none'}")
    training = summary["training"]
    print("training:   " + (", ".join(f"{k} {v}" for k, v in training.items()) if training else "no summary"))
    if summary["checkpoint"]:
        ck = summary["checkpoint"]
        opt = (f"{f.optimizer['type']} at step {ck['optimizer_step']}" if ck["optimizer_step"] is not None
               else "no optimizer state")
        print(f"checkpoint: {opt}; trainer state: {', '.join(ck['trainer_keys']) or 'none'}")
    print(f"tensors:    {summary['tensors']}, checksums {summary['checksums']}")
    return 0


def _describe(f, verified: bool) -> dict:
    """What `cllm info` shows, as a JSON-able dict."""
    model, tok = f.model, f.model.tokenizer
    checkpoint = f.header.get("checkpoint") or {}
    return {
        "path": str(f.path), "format_version": ".".join(map(str, f.version)), "file_bytes": f.path.stat().st_size,
        "model": {"config": model.config.to_dict(), "parameters": model.n_params,
                  "parameter_bytes": 4 * model.n_params},
        "tokenizer": None if tok is None else {"vocab_size": tok.vocab_size, "merges": len(tok.merges),
                                               "pattern": tok.pattern, "special_tokens": list(tok.special_tokens)},
        "training": model.training_summary,
        "checkpoint": {"optimizer_step": f.optimizer["step"] if f.optimizer else None,
                       "trainer_keys": sorted(f.trainer_state or {})} if checkpoint else None,
        "tensors": len(f.header["tensors"]), "checksums": "OK" if verified else "not verified (--no-verify)",
    }


def _load(args):
    """The model of args.file, with args.threads applied."""
    if args.threads is not None:
        set_num_threads(args.threads)
    return load(args.file)


def _generate(args) -> int:
    model = _load(args)
    sampling = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                    repetition_penalty=args.repetition_penalty, seed=args.seed, token_healing=args.token_healing)
    if args.stream:
        for piece in model.generate_stream(args.prompt, args.max_tokens, **sampling):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        print(model.generate(args.prompt, args.max_tokens, **sampling))
    return 0


def _eval(args) -> int:
    r = evaluate(_load(args), args.data if len(args.data) > 1 else args.data[0], max_tokens=args.max_tokens,
                 batch_size=args.batch_size)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    print(f"{args.file} on {r['data']}: {r['tokens']:,} tokens, {r['bytes']:,} bytes ({r['seconds']:.1f} s)")
    print(f"loss         {r['loss']:.4f} nats/token   perplexity {r['perplexity']:.2f}")
    print(f"bits/byte    {fmt(r['bits_per_byte'])}   (same bytes: xz -9e {fmt(r['xz_bits_per_byte'])}, "
          f"gzip -9 {fmt(r['gzip_bits_per_byte'])})")
    print(f"accuracy     top-1 {r['top1']:.1%}   top-5 {r['top5']:.1%}")
    return 0


def _complete(args) -> int:
    r = complete(_load(args), args.source, positions=args.positions, seed=args.seed, max_new_tokens=args.max_tokens,
                 examples=args.examples, token_healing=args.token_healing)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"{args.file}: {r['positions']} held-out lines, exact match {r['exact_match']:.1%}, "
          f"character similarity {r['similarity']:.1%} ({r['seconds']:.1f} s)")
    for case in r["examples"]:
        print(f"\n{case['file']}:{case['line']}  (similarity {case['similarity']:.2f})")
        print(f"  expected:  {case['target']}")
        print(f"  predicted: {case['predicted']}")
    return 0
