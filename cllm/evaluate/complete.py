"""Code completion of held-out lines: ``complete`` takes N line starts at random (seeded) in source files, has the
model complete each line greedily from all the code before it (the window sliding as in generation) and scores
the line without its leading and trailing whitespace: exact-match rate and mean character similarity (difflib's
ratio). The prompt ends at the start of the line, where a BPE never cuts code (it reads "\\n    def" as "\\n   " +
" def"), so the completion heals that token by default (``cllm.model.generate``'s token_healing)."""

from __future__ import annotations

import difflib
import time
from pathlib import Path

import numpy as np

from ..model.generate import generate
from ..runtime import checks

__all__ = ["complete"]

COMPLETE_BATCH = 16  # completions generated together (one KV cache slot each)


def complete(model, sources, *, positions: int = 20, seed: int = 0, max_new_tokens: int = 64,
             examples: int = 5, token_healing: bool = True) -> dict:
    """Complete ``positions`` held-out lines of the source files (paths; folders give their *.py files) from the
    code before each, greedily; see the module's docstring. Returns the rates and the first ``examples`` cases."""
    for name, value, low in (("positions", positions, 1), ("max_new_tokens", max_new_tokens, 1),
                             ("examples", examples, 0), ("seed", seed, 0)):
        checks.integer(value, f"complete: {name}", low)
    if model.tokenizer is None:
        raise ValueError("complete: the model has no tokenizer")
    cases = _held_out_lines(_source_files(sources), positions, seed)
    start = time.perf_counter()
    predictions = []
    for i in range(0, len(cases), COMPLETE_BATCH):
        batch = cases[i:i + COMPLETE_BATCH]
        predictions += generate(model, [text[:offset] for _, text, offset, _ in batch], max_new_tokens,
                                temperature=0, stop="\n", token_healing=token_healing)
    scored = []
    for (path, text, offset, line), predicted in zip(cases, predictions):
        target, guess = line.strip(), predicted.strip()
        scored.append({"file": str(path), "line": text.count("\n", 0, offset) + 1, "target": target,
                       "predicted": guess, "exact": guess == target,
                       "similarity": difflib.SequenceMatcher(None, guess, target).ratio()})
    return {"positions": len(scored), "exact_match": float(np.mean([c["exact"] for c in scored])),
            "similarity": float(np.mean([c["similarity"] for c in scored])), "seconds": time.perf_counter() - start,
            "examples": scored[:examples]}


def _source_files(sources) -> list[Path]:
    paths = [Path(sources)] if isinstance(sources, (str, Path)) else [Path(p) for p in sources]
    files = []
    for p in paths:
        if p.is_dir():
            files += sorted(p.rglob("*.py"))
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"complete: source {p} does not exist")
    if not files:
        raise ValueError(f"complete: no source files in {', '.join(map(str, paths)) or 'sources'}")
    return files


def _held_out_lines(files: list[Path], n: int, seed: int) -> list[tuple[Path, str, int, str]]:
    """n (file, its text, offset of a line start, the line) at random among the lines with at least 4 characters
    that are not whitespace and some code before them, in file order."""
    candidates = []
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="replace")
        offset = 0
        for line in text.split("\n"):
            if offset > 0 and len("".join(line.split())) >= 4:
                candidates.append((path, text, offset, line))
            offset += len(line) + 1
    if not candidates:
        raise ValueError("complete: the source files have no line to complete")
    picked = np.random.default_rng(seed).choice(len(candidates), size=min(n, len(candidates)), replace=False)
    return [candidates[i] for i in sorted(picked)]
