"""``cllm export | import``: a .cllm model out to Hugging Face transformers or GGUF (llama.cpp), and a
transformers checkpoint in (docs/interop.md)."""

from __future__ import annotations

from ..interop import EXPORT_FORMATS, export, import_hf
from ..interop.export import GGUF_DTYPES

__all__ = ["add_parsers"]


def add_parsers(sub) -> None:
    """Add ``export`` and ``import`` to ``sub`` (the subparsers of ``cllm``)."""
    p = sub.add_parser("export", help="export a .cllm model for transformers (hf) or llama.cpp (gguf)",
                       description="--to hf: a folder that transformers' AutoModelForCausalLM and AutoTokenizer load "
                                   "(GPT2LMHeadModel, LlamaForCausalLM, or Qwen3ForCausalLM with QK-norm). --to gguf: "
                                   "one file for llama.cpp, Ollama or LM Studio, its matrices in --dtype. --to "
                                   "safetensors: cllm's raw state dict, config.json and tokenizer.json.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--to", choices=EXPORT_FORMATS, default="hf", help="output format (default: %(default)s)")
    p.add_argument("--dtype", choices=GGUF_DTYPES, default="f32",
                   help="gguf: the matrices' type (default: %(default)s; norms and biases stay f32)")
    p.add_argument("destination", metavar="DIR|FILE", help="a folder (hf, safetensors) or a .gguf file")
    p.set_defaults(run=_export)

    p = sub.add_parser("import", help="import a Hugging Face transformers checkpoint as a .cllm model",
                       description="Read a GPT2LMHeadModel, LlamaForCausalLM or Qwen3ForCausalLM folder "
                                   "(config.json, one model.safetensors, a byte-level BPE tokenizer.json) and write "
                                   "it as a .cllm model, for cllm generate or cllm train --init. Anything cllm cannot "
                                   "compute exactly is refused with the reason; pickle files are never loaded.")
    p.add_argument("directory", metavar="HF_DIR")
    p.add_argument("--output", required=True, metavar="FILE", help="the .cllm file to write")
    p.set_defaults(run=_import)


def _export(args) -> int:
    written = export(args.file, args.destination, to=args.to, dtype=args.dtype)
    print(f"exported {args.file} -> " + ", ".join(str(p) for p in written))
    return 0


def _import(args) -> int:
    result = import_hf(args.directory, args.output)
    cfg = result.model.config
    print(f"imported {args.directory} ({cfg.arch}, {result.model.n_params:,} parameters, "
          f"{result.model.tokenizer.vocab_size:,} tokens) -> {result.path}")
    return 0
