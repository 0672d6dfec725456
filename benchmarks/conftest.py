"""pytest-benchmark suites: each of our kernels beside its peer in the same run, the ratio in extra_info and in a
table printed at the end (``pytest benchmarks/``; ``--benchmark-json=FILE`` keeps every figure).

A test records its result with the ``record`` fixture; ours is measured after its peer so that the ratio
(ours ÷ peer throughput, > 1 means faster) can be stored in its extra_info.
"""

import platform
import time

import pytest

import cllm

RESULTS = {}  # (suite, case, threads) -> {impl: throughput}
NOTES = []  # free-form lines for the summary (memory, MFU, breakdowns)


def settle():
    """Let another library's idle worker threads stop spinning (OpenBLAS spins ~0.1 s after a call), so that
    they do not steal cores from the next measurement on a small machine."""
    time.sleep(0.3)


def _store(benchmark, suite, case, threads, impl, rate, unit, scale):
    """Keep a throughput for the summary table; ours (measured after its peers) gets the ratios in extra_info."""
    row = RESULTS.setdefault((suite, case, threads), {"unit": unit, "scale": scale})
    row[impl] = rate
    benchmark.extra_info.update(suite=suite, case=case, threads=threads, impl=impl, unit=unit, rate=rate)
    peers = [k for k in row if k not in ("unit", "scale", "cllm")]
    if impl == "cllm" and peers:
        benchmark.extra_info["ratio"] = {p: rate / row[p] for p in peers}
    return rate


@pytest.fixture
def record(benchmark):
    def _record(suite, case, threads, impl, work, unit, scale=(1e9, "G")):
        """work: units of work per call (e.g. flops); stores throughput = work / median seconds.
        scale: (divisor, prefix) for the summary table."""
        return _store(benchmark, suite, case, threads, impl, work / benchmark.stats.stats.median, unit, scale)

    return _record


def pytest_terminal_summary(terminalreporter):
    if not RESULTS and not NOTES:
        return
    tr = terminalreporter
    tr.section("cllm vs peers (throughput; ratio > 1: cllm faster)")
    tr.write_line(f"machine: {platform.processor() or platform.machine()}, cllm ISA path: {cllm.show_config()['isa']}")
    tr.write_line(f"{'suite':<18}{'case':<28}{'thr':>4}{'cllm':>12}{'peer':>12}{'ratio':>8}  unit")
    for (suite, case, threads), row in RESULTS.items():
        ours = row.get("cllm")
        divisor, prefix = row.get("scale", (1e9, "G"))  # rows from record_rate carry their own scale
        for peer in [k for k in row if k not in ("unit", "scale", "cllm")] or [None]:
            theirs = row.get(peer) if peer else None
            ratio = f"{ours / theirs:8.2f}" if ours and theirs else f"{'':>8}"
            fmt = lambda v: f"{v / divisor:12.1f}" if v else f"{'-':>12}"
            tr.write_line(f"{suite:<18}{case:<28}{threads:>4}{fmt(ours)}{fmt(theirs)}{ratio}  {prefix}{row['unit']}/s"
                          + (f" vs {peer}" if peer else ""))
    for line in NOTES:
        tr.write_line(line)


@pytest.fixture
def record_rate(benchmark):
    def _record_rate(suite, case, threads, impl, rate, unit, scale=(1, "")):
        """Like ``record``, for a rate measured elsewhere (e.g. inside a worker process): stores it as given.
        scale: (divisor, prefix) for the summary table, e.g. (1e3, "k") prints 12.3 ktoken/s."""
        return _store(benchmark, suite, case, threads, impl, rate, unit, scale)

    return _record_rate
