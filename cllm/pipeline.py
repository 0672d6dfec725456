"""``cllm pipeline``: sources -> collect (or crawl) -> preprocess -> tokenize -> train -> evaluate + samples, in one
work folder, within a time budget.

Each stage writes into its own subfolder and records ``stage.json``: a key (a hash of the stage's options and of
the key of the stage before it, down to a fingerprint of the sources) and, once it has finished, its summary. A
stage whose finished key matches is skipped; one that was interrupted runs again (training resumes from its
checkpoints); a change of sources or options re-runs that stage and every stage after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import sys
import sysconfig
import time
from pathlib import Path

from .runtime import checks
from .runtime.atomic import atomic_write

__all__ = ["PipelineOptions", "pipeline", "default_source"]


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """The main job's options; the defaults are tuned for the best validation bits per byte in 15 minutes on a
    2-core machine with the standard library as the corpus (docs/pipeline.md has the measurements)."""

    sources: tuple = ()  # folders or http(s) URLs; () = the Python standard library's sources
    workdir: str = "cllm-run"
    time_budget: float = 900.0  # seconds, the whole run's
    num_threads: int | None = None
    vocab_size: int = 8192
    model: str = "mini"
    arch: str = "llama"
    qk_norm: bool = True  # llama: RMSNorm over each head of q and k (ignored for gpt2)
    optimizer: str = "muon"
    seq_len: int = 512
    seq_len_start: int | None = 64  # short windows first, doubling to seq_len over the first half of the run
    batch_size: int = 8
    lr: float = 6e-3  # AdamW's (the embeddings, head and norms under Muon)
    muon_lr: float = 0.02
    warmup: int = 50
    max_pages: int = 500  # per crawl, for URL sources
    progress: bool = True

    def __post_init__(self):
        checks.number(self.time_budget, "pipeline: time_budget", 0, low_open=True)
        for s in self.sources:
            if not _is_url(s) and not Path(s).is_dir():
                raise ValueError(f"pipeline: source {s} is neither a folder nor an http(s) URL")


# The PipelineOptions passed to cllm.train as they are (and part of the train stage's up-to-date key).
TRAIN_OPTIONS = ("model", "arch", "qk_norm", "optimizer", "seq_len", "seq_len_start", "batch_size", "lr", "muon_lr",
                 "warmup")
SKIP_DIRS = ("site-packages", "dist-packages", "__pycache__")  # installed packages are not the standard library
EVAL_TOKENS = 1 << 18  # validation tokens scored after training (about 1 MB of the held-out text)
PROMPTS = ("def fibonacci(n):\n", "import os\nimport sys\n\n\ndef main(", "class Stack:\n    \"\"\"",
           "    for i in range(len(")
RESERVE_FRACTION, RESERVE_MAX = 0.1, 60.0  # of the budget, kept for evaluation and samples after training


def default_source() -> Path:
    """The running Python's standard library (its .py sources; site-packages is excluded by the collect stage)."""
    return Path(sysconfig.get_paths()["stdlib"])


def pipeline(options: PipelineOptions, log=print) -> dict:
    """Run (or continue) the main job; returns the summary also written to workdir/summary.json."""
    start = time.perf_counter()
    work = Path(options.workdir)
    work.mkdir(parents=True, exist_ok=True)
    runner = _Stages(work, log)
    sources = list(options.sources) or [str(default_source())]
    if not options.sources:
        log(f"source: the Python standard library's .py files in {sources[0]} (no --source given)")
    folders = [s for s in sources if not _is_url(s)]
    urls = [s for s in sources if _is_url(s)]

    corpus_inputs = []
    if folders:
        include = ["*.py"] if not options.sources else None
        runner.run("collect", "corpus", {"folders": folders, "include": include, "exclude": SKIP_DIRS,
                                         "fingerprint": _tree_fingerprint(folders, SKIP_DIRS)},
                   lambda out: _collect(folders, out, include, SKIP_DIRS))
        corpus_inputs.append(work / "corpus")
    if urls:
        runner.run("crawl", "crawl", {"urls": urls, "max_pages": options.max_pages},
                   lambda out: _crawl(urls, out, options))
        corpus_inputs.append(work / "crawl")
    runner.run("preprocess", "clean", {}, lambda out: _preprocess(corpus_inputs, out, options))
    runner.run("tokenize", "tokens", {"vocab_size": options.vocab_size},
               lambda out: _tokenize(work / "clean", out, options))
    budget = options.time_budget
    runner.run("train", "model", _train_options(options),
               lambda out, resume: _train(work / "tokens", out, options,
                                          budget - (time.perf_counter() - start) - min(RESERVE_MAX, RESERVE_FRACTION * budget),
                                          resume),
               resumable=True)
    runner.run("evaluate", "eval", {"max_tokens": EVAL_TOKENS, "prompts": PROMPTS},
               lambda out: _evaluate(work, out, options))
    summary = {"workdir": str(work), "stages": runner.summaries, "seconds": round(time.perf_counter() - start, 1),
               "report": str(work / "report.md")}
    with atomic_write(work / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    _write_report(work, summary)
    return summary


class _Stages:
    """Runs stages in order, each skipped when its stage.json records the same key as finished."""

    def __init__(self, work: Path, log):
        self.work, self.log, self.key, self.summaries = work, log, "", {}

    def run(self, name: str, folder: str, options: dict, fn, resumable: bool = False) -> dict:
        folder = self.work / folder
        marker = folder / "stage.json"
        self.key = hashlib.sha256(json.dumps([self.key, name, options], sort_keys=True, default=str)
                                  .encode()).hexdigest()
        previous = _read_json(marker)
        if previous.get("key") == self.key and previous.get("finished"):
            self.log(f"{name}: up to date, skipped")
            self.summaries[name] = {**previous["summary"], "seconds": 0.0, "skipped": True}
            return previous["summary"]
        resume = resumable and previous.get("key") == self.key
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(marker, {"key": self.key, "finished": False})
        start = time.perf_counter()
        summary = fn(folder, resume) if resumable else fn(folder)
        seconds = round(time.perf_counter() - start, 1)
        _write_json(marker, {"key": self.key, "finished": True, "summary": summary, "seconds": seconds})
        self.summaries[name] = {**summary, "seconds": seconds}
        self.log(f"{name}: done in {seconds:.1f} s")
        return summary


# --- the stages ---------------------------------------------------------------------------------------------------

def _collect(folders, out: Path, include, exclude) -> dict:
    from .corpus.collect import collect

    report = collect(folders, out, include=include, exclude=exclude)
    return {"files": report["files"].get("ok", 0), "bytes": report["bytes"]}


def _crawl(urls, out: Path, options: PipelineOptions) -> dict:
    from .corpus.crawl.crawler import CrawlOptions, crawl

    report = crawl(urls, out, CrawlOptions(max_pages=options.max_pages), progress=options.progress)
    return {"pages": report["pages"].get("fetched", 0), "bytes": report["bytes"]}


def _preprocess(inputs, out: Path, options: PipelineOptions) -> dict:
    from .corpus.preprocess.stage import preprocess

    report = preprocess(inputs, out, workers=options.num_threads, progress=options.progress)
    return {"documents": report["documents"], "kept": report["kept"], "characters": report["chars_out"]}


def _tokenize(clean: Path, out: Path, options: PipelineOptions) -> dict:
    from .tokenizer.stage import tokenize_corpus

    stats = tokenize_corpus([clean], out, vocab_size=options.vocab_size, num_threads=options.num_threads,
                            progress=options.progress)
    return {"train_tokens": stats["train"]["tokens"], "val_tokens": stats["val"]["tokens"],
            "bytes_per_token": round(stats["train"]["bytes_per_token"], 4), "vocab_size": stats["vocab_size"]}


def _train_options(options: PipelineOptions) -> dict:
    """The options cllm.train takes from the pipeline's (QK-norm is llama's only)."""
    chosen = {name: getattr(options, name) for name in TRAIN_OPTIONS}
    if options.arch != "llama":
        del chosen["qk_norm"]
    return chosen


def _train(tokens: Path, out: Path, options: PipelineOptions, seconds: float, resume: bool) -> dict:
    from .train.trainer import train

    if seconds < 5:
        raise ValueError(f"pipeline: the time budget of {options.time_budget / 60:g} minutes leaves {seconds:.0f} s for "
                         f"training; give a larger --budget")
    result = train(tokens, **_train_options(options), num_threads=options.num_threads,
                   epochs=100, time_budget=seconds, output=str(out / "model.cllm"), resume=resume,
                   progress=options.progress)
    if result.stopped in ("SIGINT", "SIGTERM"):  # the checkpoint is written: the stage resumes from it next time
        signal.raise_signal(getattr(signal, result.stopped))
    return {"steps": result.steps, "tokens": result.tokens, "train_loss": result.train_loss,
            "val_loss": result.val_loss, "bits_per_byte": result.bits_per_byte,
            "tokens_per_second": round(result.tokens_per_second), "model": str(result.output),
            "report": str(result.report)}


def _evaluate(work: Path, out: Path, options: PipelineOptions) -> dict:
    from .evaluate.metrics import evaluate
    from .model import load
    from .runtime.threads import get_num_threads, threads

    model = load(work / "model" / "model.cllm")
    with threads(options.num_threads or get_num_threads()):
        metrics = evaluate(model, work / "tokens", max_tokens=EVAL_TOKENS)
        samples = [{"prompt": p, "completion": model.generate(p, 120, temperature=0.8, top_k=40, seed=i)}
                   for i, p in enumerate(PROMPTS)]
    with atomic_write(out / "eval.json", "w") as f:
        json.dump({**metrics, "samples": samples}, f, indent=2)
    keys = ("loss", "perplexity", "bits_per_byte", "xz_bits_per_byte", "gzip_bits_per_byte", "top1", "top5",
            "tokens", "bytes")
    return {**{k: metrics[k] for k in keys}, "samples": samples}


def _write_report(work: Path, summary: dict) -> None:
    """workdir/report.md: what each stage did, the validation figures beside xz and gzip, the samples."""
    st = summary["stages"]
    rows = [f"| {name} | {s['seconds']:.1f}{' (up to date)' if s.get('skipped') else ''} | {_stage_line(name, s)} |"
            for name, s in st.items()]
    e, t = st.get("evaluate", {}), st.get("train", {})
    lines = ["# cllm pipeline", "", f"Work folder `{work}`, {summary['seconds']:.0f} s in this run.", "",
             "| stage | seconds | result |", "|---|---|---|", *rows, ""]
    if e:
        lines += ["## Validation (held-out documents)", "",
                  "| | bits per byte |", "|---|---|",
                  f"| the model | **{e['bits_per_byte']:.4f}** |",
                  f"| xz -9e on the same bytes | {e['xz_bits_per_byte']:.4f} |",
                  f"| gzip -9 on the same bytes | {e['gzip_bits_per_byte']:.4f} |", "",
                  f"Loss {e['loss']:.4f} nats/token, perplexity {e['perplexity']:.2f}, next-token accuracy top-1 "
                  f"{e['top1']:.1%}, top-5 {e['top5']:.1%}, on {e['tokens']:,} tokens ({e['bytes']:,} bytes).", "",
                  "## Samples (temperature 0.8, top-k 40)", ""]
        for sample in e["samples"]:
            lines += ["```python", sample["prompt"] + sample["completion"], "```", ""]
    if t:
        lines += [f"Training report: [{Path(t['report']).relative_to(work)}]({Path(t['report']).relative_to(work)})",
                  ""]
    with atomic_write(work / "report.md", "w") as f:
        f.write("\n".join(lines))


def _stage_line(name: str, s: dict) -> str:
    if name == "collect":
        return f"{s['files']:,} files, {s['bytes']:,} bytes"
    if name == "crawl":
        return f"{s['pages']:,} pages, {s['bytes']:,} bytes"
    if name == "preprocess":
        return f"{s['kept']:,} of {s['documents']:,} documents kept, {s['characters']:,} characters"
    if name == "tokenize":
        return (f"{s['train_tokens']:,} train + {s['val_tokens']:,} val tokens, {s['bytes_per_token']} bytes/token, "
                f"vocabulary {s['vocab_size']:,}")
    if name == "train":
        return (f"{s['steps']:,} steps, {s['tokens']:,} tokens, {s['tokens_per_second']:,} tokens/s, train loss "
                f"{s['train_loss']:.4f}")
    if name == "evaluate":
        return f"{s['bits_per_byte']:.4f} bits/byte (xz -9e {s['xz_bits_per_byte']:.4f})"
    return ""


# --- helpers ------------------------------------------------------------------------------------------------------

def _is_url(source) -> bool:
    return str(source).startswith(("http://", "https://"))


def _tree_fingerprint(folders, skip_dirs=()) -> str:
    """A hash of every file's path, size and modification time under the folders: a changed source re-runs
    the pipeline from collect (cheap: stat only, no reading)."""
    h = hashlib.sha256()
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d not in skip_dirs)
            for name in sorted(files):
                try:
                    st = os.stat(os.path.join(root, name))
                except OSError:
                    continue
                h.update(f"{root}/{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, doc: dict) -> None:
    with atomic_write(path, "w") as f:
        json.dump(doc, f, indent=2)


def print_summary(summary: dict, out=sys.stdout) -> None:
    """The end of `cllm pipeline`: stage times, tokens, loss, bits per byte, speed, where things are."""
    stages = summary["stages"]
    print("\nstage        seconds", file=out)
    for name, s in stages.items():
        print(f"{name:<12} {s['seconds']:>7.1f}{'  (up to date)' if s.get('skipped') else ''}", file=out)
    t = stages.get("train", {})
    if t:
        print(f"\ntrained {t['steps']:,} steps on {t['tokens']:,} tokens at {t['tokens_per_second']:,} tokens/s; "
              f"train loss {t['train_loss']:.4f}", file=out)
    e = stages.get("evaluate", {})
    if e:
        print(f"validation: loss {e['loss']:.4f}, perplexity {e['perplexity']:.2f}, {e['bits_per_byte']:.4f} bits "
              f"per byte (xz -9e on the same bytes: {e['xz_bits_per_byte']:.4f})", file=out)
    print(f"\nmodel: {t.get('model')}\nreport: {summary.get('report', t.get('report'))}", file=out)
