"""``cllm bench``: run the pytest-benchmark suites of benchmarks/ and report them as one table of cllm against its
peers, a thread-scaling table of the full training step, and bench.json + bench.md.

Each suite stores what it measured in its benchmark's ``extra_info["records"]`` (benchmarks/conftest.py): dicts of
``suite, case, threads, impl, rate, unit, scale``, rate in units per second, impl "cllm" or the peer's name, scale
``[divisor, prefix]`` for display. This module turns a pytest-benchmark JSON report into tables; it imports no
pytest (the suites run in a subprocess), so that it can be used and tested without running them.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from ..runtime.atomic import atomic_write

THREADS_ENV, QUICK_ENV = "CLLM_BENCH_THREADS", "CLLM_BENCH_QUICK"
SCALING_SUITE = "train_step"
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"  # present in a source checkout only
PYTEST_USAGE_ERROR, PYTEST_NO_TESTS = 4, 5


# --- settings: thread counts and quick mode --------------------------------------------------------------------

def parse_threads(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]``, sorted, without duplicates."""
    try:
        counts = sorted({int(item) for item in text.split(",")})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1:
        raise ValueError(f"expected comma-separated thread counts >= 1 such as 1,2,4 (got {text!r})")
    return counts


def default_threads(cpus: int) -> list[int]:
    """1, 2, 4, ... up to ``cpus``, ``cpus`` itself and the next power of two above it (past the cores)."""
    counts, n = {1, cpus}, 1
    while n <= cpus:
        n *= 2
        counts.add(n)
    return sorted(counts)


def env_settings(environ=os.environ) -> tuple[list[int], bool]:
    """(thread counts, quick) from $CLLM_BENCH_THREADS (default "1,2") and $CLLM_BENCH_QUICK ("0" or "1")."""
    try:
        threads = parse_threads(environ.get(THREADS_ENV, "1,2"))
    except ValueError as e:
        raise ValueError(f"{THREADS_ENV}: {e}") from None
    quick = environ.get(QUICK_ENV, "0")
    if quick not in ("0", "1"):
        raise ValueError(f"{QUICK_ENV}: expected 0 or 1 (got {quick!r})")
    return threads, quick == "1"


# --- from a pytest-benchmark JSON report to tables -------------------------------------------------------------

def records(data: dict) -> list[dict]:
    """Every measurement of a pytest-benchmark JSON report, in the order they ran."""
    return [r for b in data.get("benchmarks", []) for r in b.get("extra_info", {}).get("records", [])]


def peer_rows(recs: list[dict]) -> list[dict]:
    """One row per (suite, case, threads) and peer: cllm's rate, the peer's, ratio = cllm ÷ peer (None if either is
    missing); a row without a peer has peer None."""
    groups: dict[tuple, dict] = {}
    for r in recs:
        groups.setdefault((r["suite"], r["case"], r["threads"]), {})[r["impl"]] = r
    rows = []
    for (suite, case, threads), by_impl in groups.items():
        ours = by_impl.get("cllm")
        for peer in [impl for impl in by_impl if impl != "cllm"] or [None]:
            theirs = by_impl.get(peer)
            first = ours or theirs
            rows.append({"suite": suite, "case": case, "threads": threads, "cllm": ours and ours["rate"],
                         "peer": peer, "peer_rate": theirs and theirs["rate"],
                         "ratio": ours["rate"] / theirs["rate"] if ours and theirs else None,
                         "unit": first["unit"], "scale": list(first.get("scale", (1, "")))})
    return rows


def scaling(recs: list[dict], cpus: int, suite: str = SCALING_SUITE) -> list[dict]:
    """The suite's rate at each thread count, per case and implementation, with the parallel efficiency
    rate_n / (n · rate_1) (None without a 1-thread figure); ``oversubscribed``: more threads than ``cpus``."""
    rates = {(r["case"], r["impl"], r["threads"]): r["rate"] for r in recs if r["suite"] == suite}
    rows = []
    for (case, impl, n), rate in rates.items():
        one = rates.get((case, impl, 1))
        rows.append({"case": case, "impl": impl, "threads": n, "rate": rate, "efficiency": one and rate / (n * one),
                     "oversubscribed": n > cpus})
    return sorted(rows, key=lambda r: (r["case"], r["threads"]))


def describe_machine(info: dict) -> str:
    """One line: CPU, CPUs usable, OS, Python, numpy, cllm's build and ISA path, the peers' versions."""
    cpu, cllm, peers = info.get("cpu", {}), info.get("cllm", {}), info.get("peers", {})
    brand = cpu.get("brand_raw") or info.get("processor") or info.get("machine", "unknown CPU")
    found = ", ".join(f"{name} {version}" for name, version in peers.items() if version) or "none installed"
    openmp = "OpenMP" if cllm.get("openmp") else "no OpenMP"
    return (f"{brand}, {cllm.get('effective_cpus', '?')} CPUs usable ({cpu.get('count', '?')} logical), "
            f"{info.get('system', '?')} {info.get('release', '')}, Python {info.get('python_version', '?')}, "
            f"numpy {cllm.get('numpy', '?')}; cllm {cllm.get('version', '?')} (ISA path {cllm.get('isa', '?')}, "
            f"{cllm.get('compiler', '?')}, {openmp}); peers: {found}")


def build_report(data: dict) -> dict:
    """What bench.json holds: the run's settings and machine, the peer rows, the scaling rows and the notes."""
    info = data.get("machine_info", {})
    settings, recs = info.get("bench", {}), records(data)
    cpus = info.get("cllm", {}).get("effective_cpus") or os.cpu_count() or 1
    return {"datetime": data.get("datetime"), "threads": settings.get("threads"), "quick": settings.get("quick"),
            "cpus": cpus, "machine": describe_machine(info), "rows": peer_rows(recs),
            "scaling": scaling(recs, cpus), "notes": data.get("notes", [])}


# --- rendering: the same sections as aligned text or Markdown --------------------------------------------------

def _num(v) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def _peer_section(report):
    headers = ["suite", "case", "threads", "cllm", "peer", "ratio", "unit", "vs"]
    cells = []
    for r in report["rows"]:
        divisor, prefix = r["scale"]
        scaled = [None if v is None else v / divisor for v in (r["cllm"], r["peer_rate"])]
        cells.append([r["suite"], r["case"], str(r["threads"]), *map(_num, scaled),
                      "-" if r["ratio"] is None else f"{r['ratio']:.2f}", f"{prefix}{r['unit']}/s", r["peer"] or "-"])
    return "cllm vs peers", "throughput of the median round; ratio = cllm ÷ peer, > 1: cllm faster", headers, cells


def _scaling_sections(report):
    for case in dict.fromkeys(r["case"] for r in report["scaling"]):
        rows = [r for r in report["scaling"] if r["case"] == case]
        impls = sorted(dict.fromkeys(r["impl"] for r in rows), key=lambda impl: impl != "cllm")  # cllm first
        by = {(r["impl"], r["threads"]): r for r in rows}
        cells = []
        for n in sorted({r["threads"] for r in rows}):
            row = [f"{n}*" if n > report["cpus"] else str(n)]
            for impl in impls:
                r = by.get((impl, n), {})
                row += [_num(r.get("rate")), _num(r.get("efficiency"))]
            cells.append(row)
        headers = ["threads"] + [h for impl in impls for h in (f"{impl} tokens/s", "efficiency")]
        yield (f"Thread scaling: {SCALING_SUITE} {case}",
               f"efficiency = rate_n / (n · rate_1); * more threads than the {report['cpus']} CPUs usable",
               headers, cells)


def _sections(report):
    yield _peer_section(report)
    yield from _scaling_sections(report)


def _text_table(headers, cells) -> list[str]:
    widths = [max(len(row[i]) for row in [headers] + cells) for i in range(len(headers))]
    right = [bool(cells) and all(row[i][:1].isdigit() or row[i] == "-" for row in cells) for i in range(len(headers))]
    line = lambda row: "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right))
    return [line(headers).rstrip()] + [line(row).rstrip() for row in cells]


def _settings_line(report) -> str:
    mode = "quick mode (smoke-test sizes: not figures to quote)" if report["quick"] else "full sizes"
    when = report["datetime"] and datetime.datetime.fromisoformat(report["datetime"]).astimezone(datetime.timezone.utc)
    threads = ",".join(map(str, report["threads"] or []))
    return f"{when:%Y-%m-%d %H:%M} UTC, threads {threads}, {mode}" if when else f"threads {threads}, {mode}"


def to_text(report: dict) -> str:
    lines = [f"cllm bench: {_settings_line(report)}", f"machine: {report['machine']}"]
    for title, intro, headers, cells in _sections(report):
        lines += ["", f"{title} ({intro})"] + _text_table(headers, cells)
    return "\n".join(lines + ([""] + report["notes"] if report["notes"] else []))


def to_markdown(report: dict) -> str:
    lines = ["# cllm bench", "", f"Run of {_settings_line(report)}.", "", f"Machine: {report['machine']}."]
    for title, intro, headers, cells in _sections(report):
        lines += ["", f"## {title}", "", intro[0].upper() + intro[1:] + ".", "", "| " + " | ".join(headers) + " |",
                  "|" + "---|" * len(headers)] + ["| " + " | ".join(row) + " |" for row in cells]
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note.strip()}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def write(report: dict, output: Path) -> None:
    """bench.json and bench.md in ``output``, each replaced atomically."""
    with atomic_write(output / "bench.json", "w") as f:
        json.dump(report, f, indent=1)
    with atomic_write(output / "bench.md", "w") as f:
        f.write(to_markdown(report))


# --- running the suites ----------------------------------------------------------------------------------------

def run(threads: list[int], quick: bool, output, keyword: str | None = None,
        benchmarks: Path | None = None) -> tuple[dict, int]:
    """Run ``pytest benchmarks/`` in a subprocess at these thread counts; write ``output``/pytest-benchmark.json
    (every timing), bench.json and bench.md. Returns (the report, pytest's exit code: 0, or 1 if a case failed)."""
    benchmarks = Path(benchmarks or BENCHMARKS)
    if importlib.util.find_spec("pytest_benchmark") is None:
        raise RuntimeError("pytest-benchmark is not installed: pip install -e '.[test]' in the cllm source checkout "
                           "(and '.[peers]' to measure the peers)")
    if not (benchmarks / "conftest.py").is_file():
        raise RuntimeError(f"no benchmark suites at {benchmarks}: cllm bench runs from a source checkout "
                           "(git clone the cllm repository and pip install -e '.[test]' there)")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    raw, tmp = output / "pytest-benchmark.json", output / ".pytest-benchmark.json.tmp"
    tmp.unlink(missing_ok=True)  # left by an interrupted run
    cmd = [sys.executable, "-m", "pytest", str(benchmarks), "-q", "--benchmark-quiet", f"--benchmark-json={tmp}"]
    env = {**os.environ, THREADS_ENV: ",".join(map(str, threads)), QUICK_ENV: str(int(quick))}
    code = subprocess.run(cmd + (["-k", keyword] if keyword else []), cwd=benchmarks.parent, env=env).returncode
    if code == PYTEST_NO_TESTS or code == PYTEST_USAGE_ERROR:
        raise ValueError(f"-k {keyword!r} selected no benchmark" if code == PYTEST_NO_TESTS and keyword else
                         f"pytest rejected the run (exit code {code}; its message is above)")
    if not tmp.is_file():
        raise RuntimeError(f"pytest exited with code {code} and wrote no benchmark report")
    os.replace(tmp, raw)
    report = build_report(json.loads(raw.read_text(encoding="utf-8")))
    write(report, output)
    return report, code
