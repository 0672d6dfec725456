"""``cllm complete`` on a pipeline run's held-out files: the source files whose documents went to the validation
split (so no model trained on them), completed line by line by each model given, at the same positions.

    python benchmarks/complete_held_out.py --workdir cllm-run --positions 200 MODEL.cllm [MODEL.cllm ...]

Prints one JSON line per model and token-healing setting (off, then on): exact-match rate, character similarity,
seconds, and a few examples.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def held_out_files(workdir: Path) -> list[Path]:
    """The corpus files of the validation documents of ``workdir``'s clean/ folder (the tokenize stage's split)."""
    from cllm.tokenizer.stage import TokenizeOptions, is_validation

    fraction, files = TokenizeOptions().val_fraction, []
    for shard in sorted((workdir / "clean").glob("docs-*.jsonl")):
        with open(shard, encoding="utf-8") as lines:
            for line in lines:
                doc = json.loads(line)
                if is_validation(doc["text"].encode("utf-8", "surrogatepass"), fraction):
                    files.append(workdir / "corpus" / doc["meta"]["path"])
    return files


def main() -> int:
    import cllm
    from cllm.evaluate.complete import complete

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--workdir", required=True, help="a finished cllm pipeline folder (stdlib or folder sources)")
    p.add_argument("--positions", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        cllm.set_num_threads(args.threads)
    files = held_out_files(Path(args.workdir))
    for path in args.models:
        model = cllm.load(path)
        for healing in (False, True):
            r = complete(model, files, positions=args.positions, seed=args.seed, examples=8, token_healing=healing)
            print(json.dumps({"model": path, "arch": model.config.arch, "context": model.config.context_length,
                              "token_healing": healing, "files": len(files), **r}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
