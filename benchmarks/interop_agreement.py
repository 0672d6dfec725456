"""How exactly transformers and llama.cpp run a pipeline's model once exported (docs/interop.md's figures).

    python benchmarks/interop_agreement.py --workdir cllm-run [--windows 16] [--prompts 8] [--threads 2]

On the held-out files of the run (the documents of the validation split):
- transformers (``cllm export --to hf``): missing/unexpected weights, documents whose token ids differ from
  cllm's, the largest logit difference on random batches, greedy ``generate`` against cllm's for each prompt;
- llama.cpp (``cllm export --to gguf``, f32, f16, q8_0): file size, documents tokenized differently, greedy
  tokens equal to cllm's (f32, with a float32 KV cache), and top-1 next-token agreement with cllm's f32 logits
  over ``--windows`` held-out windows of the model's context (llama.cpp's default f16 KV cache).
The prompts are the openings (first 200 characters) of held-out files. One JSON line per check.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from complete_held_out import held_out_files  # noqa: E402


def _say(**record) -> None:
    print(json.dumps(record), flush=True)


def transformers_checks(model, path: Path, folder: Path, docs: list[str], prompts: list[str], new: int) -> None:
    import torch
    import transformers

    import cllm

    cllm.export(path, folder, to="hf")
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    differ = sum(tok(d)["input_ids"] != model.tokenizer.encode(d) for d in docs)
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(3):
        idx = rng.integers(0, model.tokenizer.vocab_size, (2, model.config.context_length)).astype(np.int32)
        with torch.no_grad():
            theirs = hf(torch.from_numpy(idx.astype(np.int64))).logits.numpy()
        worst = max(worst, float(np.abs(model.forward(idx) - theirs).max()))
    greedy_equal = 0
    for prompt in prompts:
        ids = model.tokenizer.encode(prompt)
        ours = model.generate_ids(ids, new, temperature=0)
        out = hf.generate(torch.tensor([ids]), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                          pad_token_id=tok.eos_token_id)
        greedy_equal += out[0, len(ids):].tolist() == ours
    _say(peer=f"transformers {transformers.__version__}", class_=type(hf).__name__,
         missing_or_unexpected=sum(len(v) for v in info.values()), documents=len(docs),
         documents_tokenized_differently=differ,
         max_abs_logit_difference=worst, greedy_prompts=len(prompts), greedy_equal=greedy_equal, new_tokens=new)


def llama_cpp_checks(model, path: Path, folder: Path, docs: list[str], prompts: list[str], new: int, windows: int,
                     threads: int) -> None:
    import llama_cpp

    import cllm

    T = model.config.context_length
    ids_all = [model.tokenizer.encode(d) for d in docs]
    long_docs = [ids for ids in ids_all if len(ids) >= T]
    starts = [(i % len(long_docs), (i * 7919) % max(1, len(long_docs[i % len(long_docs)]) - T + 1))
              for i in range(windows)]
    cases = [long_docs[d][s:s + T] for d, s in starts]
    ours_top1 = [model.forward(np.array([c], np.int32))[0].argmax(-1) for c in cases]
    for dtype in ("f32", "f16", "q8_0"):
        gguf = folder / f"model-{dtype}.gguf"
        cllm.export(path, gguf, to="gguf", dtype=dtype)
        llm = llama_cpp.Llama(str(gguf), n_ctx=T, n_batch=T, n_threads=threads, logits_all=True, verbose=False)
        differ = sum(llm.tokenize(d.encode(), add_bos=False, special=False) != ids for d, ids in zip(docs, ids_all))
        same = total = 0
        for case, ours in zip(cases, ours_top1):
            llm.reset()
            llm.eval(case)
            theirs = np.array(llm.scores[:len(case), :model.config.vocab_size]).argmax(-1)
            same, total = same + int((theirs == ours).sum()), total + len(case)
        record = {"peer": f"llama.cpp (llama-cpp-python {llama_cpp.__version__})", "dtype": dtype,
                  "file_bytes": gguf.stat().st_size, "documents": len(docs), "documents_tokenized_differently": differ,
                  "positions": total, "top1_agreement_with_cllm_f32": same / total}
        if dtype == "f32":  # greedy with a float32 KV cache
            exact = llama_cpp.Llama(str(gguf), n_ctx=T, n_batch=T, n_threads=threads, type_k=0, type_v=0,
                                    verbose=False)
            equal = 0
            for prompt in prompts:
                ids = model.tokenizer.encode(prompt)
                theirs = []
                for token in exact.generate(ids, temp=0.0, top_k=1, reset=True):
                    theirs.append(token)
                    if len(theirs) == new:
                        break
                equal += theirs == model.generate_ids(ids, new, temperature=0)
            record.update(greedy_prompts=len(prompts), greedy_equal=equal, new_tokens=new)
        _say(**record)


def main() -> int:
    import cllm

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="a finished cllm pipeline folder")
    p.add_argument("--model", default=None, help="default: WORKDIR/model/model.cllm")
    p.add_argument("--windows", type=int, default=16, help="held-out windows for the top-1 agreement")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip", action="append", default=[], choices=("transformers", "llama.cpp"))
    args = p.parse_args()
    cllm.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    path = Path(args.model or workdir / "model" / "model.cllm")
    model = cllm.load(path)
    files = held_out_files(workdir)
    docs = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    prompts = [d[:200] for d in docs[:: max(1, len(docs) // args.prompts)]][:args.prompts]
    _say(model=str(path), config=model.config.to_dict(), held_out_files=len(files), threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if "transformers" not in args.skip:
            transformers_checks(model, path, Path(tmp) / "hf", docs, prompts, args.new_tokens)
        if "llama.cpp" not in args.skip:
            llama_cpp_checks(model, path, Path(tmp), docs, prompts, args.new_tokens, args.windows, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
