"""The end-of-training report: ``report.md`` and ``loss.png`` (train and validation loss against tokens)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from ..runtime.atomic import atomic_write
from ..kernels import show_config

__all__ = ["write_report"]


def read_metrics(path: Path) -> dict[str, list[dict]]:
    """The lines of a metrics.jsonl by type ("step", "eval", "epoch")."""
    records = {"step": [], "eval": [], "epoch": []}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            records.setdefault(record.get("type"), []).append(record)
    return records


def write_report(folder: Path, metrics_path: Path, summary: dict, config, model_config, session: dict) -> Path:
    """Write folder/report.md and folder/loss.png; returns the report's path."""
    metrics = read_metrics(metrics_path)
    plot = _plot(folder / "loss.png", metrics)
    steps = metrics["step"]
    epoch_times, previous = [], 0.0
    for e in metrics["epoch"]:
        epoch_times.append(e["elapsed"] - previous)
        previous = e["elapsed"]
    rates = sorted(s["tokens_per_s"] for s in steps)
    cpu_util = session["cpu_seconds"] / max(session["seconds"], 1e-9) / session["threads"]
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)
    lines = [
        "# Training report", "",
        f"- model: GPT-2, {model_config.n_params:,} parameters ({model_config.to_dict()})",
        f"- data: {summary.get('data')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, kernel path {show_config()['isa']}, "
        f"{session['threads']} threads" + (f" per rank, {session['ranks']} MPI ranks (memory and CPU figures: rank "
                                           f"0's)" if session.get("ranks", 1) > 1 else ""),
        f"- options: batch {config.batch_size} x {config.seq_len} tokens, lr {config.lr}, schedule {config.schedule}, "
        f"seed {config.seed}", "",
        "| | |", "|---|---|",
        f"| steps | {summary['steps']:,} |",
        f"| tokens | {summary['tokens']:,} |",
        f"| time (all sessions) | {summary['seconds']:.1f} s |",
        f"| time per epoch | {', '.join(f'{t:.1f} s' for t in epoch_times) or 'no full epoch'} |",
        f"| final train loss | {fmt(summary.get('train_loss'), '.4f')} |",
        f"| validation loss (final / best) | {fmt(summary.get('val_loss'), '.4f')} / "
        f"{fmt(summary.get('best_val_loss'), '.4f')} |",
        f"| perplexity | {fmt(summary.get('perplexity'), '.2f')} |",
        f"| bits per byte | {fmt(summary.get('bits_per_byte'), '.4f')} |",
        f"| tokens/s (median step) | {fmt(rates[len(rates) // 2] if rates else None, ',.0f')} |",
        f"| peak memory (RSS) | {session['peak_rss'] / 1e6:,.0f} MB |",
        f"| CPU utilisation (CPU time / wall time / threads, this session) | {cpu_util:.0%} |",
        "",
        f"![loss]({plot.name})" if plot else "(loss.png not written: matplotlib is not installed)", "",
    ]
    path = folder / "report.md"
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines))
    return path


def _plot(path: Path, metrics: dict) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    steps, evals = metrics["step"], metrics["eval"]
    if steps:
        ax.plot([s["tokens"] for s in steps], [s["loss"] for s in steps], lw=1, label="train")
    if evals:
        ax.plot([e["tokens"] for e in evals], [e["val_loss"] for e in evals], "o-", label="validation")
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return path
