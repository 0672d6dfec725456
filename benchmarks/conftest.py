"""pytest-benchmark suites: each of our kernels beside its peer in the same run, the ratio in extra_info and in a
table printed at the end (``pytest benchmarks/``; ``--benchmark-json=FILE`` keeps every figure; ``cllm bench``
runs them and writes the tables as JSON and Markdown).

Settings, read once here and used by every suite: $CLLM_BENCH_THREADS, the thread counts to measure (default
"1,2"; more than the cores is valid), and $CLLM_BENCH_QUICK=1, smaller shapes and corpora and fewer rounds (a smoke
test of a few minutes, not figures to quote). A suite parametrizes over ``THREADS`` and sizes itself with
``quick(full, small)``.

A test records its result with the ``record`` or ``record_rate`` fixture: each call appends
``{suite, case, threads, impl, rate, unit, scale}`` to its benchmark's ``extra_info["records"]`` (what
``cllm bench`` reads). Ours is measured after its peers so that the ratio (ours ÷ peer throughput, > 1 means
faster) can be stored in our record.
"""

import datetime
import importlib.metadata
import time

import pytest
from threadpoolctl import threadpool_info

import cllm
from cllm.evaluate.bench import build_report, env_settings, to_text

THREADS, QUICK = env_settings()
PEERS = ("torch", "tokenizers", "tiktoken", "resiliparse", "safetensors")
RECORDS = []  # every record of the session, in the order they were made
NOTES = []  # free-form lines for the summary (memory, MFU, breakdowns)


def quick(full, small):
    """``small`` in quick mode ($CLLM_BENCH_QUICK=1), ``full`` otherwise."""
    return small if QUICK else full


def settle():
    """Let another library's idle worker threads stop spinning (OpenBLAS spins ~0.1 s after a call), so that
    they do not steal cores from the next measurement on a small machine."""
    time.sleep(0.3)


def _store(benchmark, suite, case, threads, impl, rate, unit, scale):
    """Append a record to the session's and to the benchmark's extra_info; ours gets the ratios to its peers."""
    record = {"suite": suite, "case": case, "threads": threads, "impl": impl, "rate": rate, "unit": unit,
              "scale": list(scale)}
    peers = {r["impl"]: r["rate"] for r in RECORDS
             if (r["suite"], r["case"], r["threads"]) == (suite, case, threads) and r["impl"] != "cllm"}
    if impl == "cllm" and peers:
        record["ratio"] = {peer: rate / theirs for peer, theirs in peers.items()}
    RECORDS.append(record)
    benchmark.extra_info.setdefault("records", []).append(record)
    return rate


@pytest.fixture
def record(benchmark):
    def _record(suite, case, threads, impl, work, unit, scale=(1e9, "G")):
        """work: units of work per call (e.g. flops); stores throughput = work / median seconds.
        scale: (divisor, prefix) for the summary table."""
        return _store(benchmark, suite, case, threads, impl, work / benchmark.stats.stats.median, unit, scale)

    return _record


@pytest.fixture
def record_rate(benchmark):
    def _record_rate(suite, case, threads, impl, rate, unit, scale=(1, "")):
        """Like ``record``, for a rate measured elsewhere (e.g. inside a worker process): stores it as given.
        scale: (divisor, prefix) for the summary table, e.g. (1e3, "k") prints 12.3 ktoken/s."""
        return _store(benchmark, suite, case, threads, impl, rate, unit, scale)

    return _record_rate


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def pytest_benchmark_update_machine_info(config, machine_info):
    """cllm's build and ISA path, numpy's BLAS and the peers' versions, and this run's settings."""
    blas = {f"numpy's {i['internal_api']}": i["version"] for i in threadpool_info() if i["user_api"] == "blas"}
    machine_info.update(cllm=cllm.show_config(), peers={**blas, **{p: _version(p) for p in PEERS}},
                        bench={"threads": THREADS, "quick": QUICK})


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["notes"] = NOTES


def pytest_terminal_summary(terminalreporter, config):
    """The tables `cllm bench` prints, unless --benchmark-quiet (cllm bench prints them itself)."""
    if config.getoption("benchmark_quiet") or not (RECORDS or NOTES):
        return
    info = config.hook.pytest_benchmark_generate_machine_info(config=config)
    pytest_benchmark_update_machine_info(config, info)
    data = {"datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine_info": info, "benchmarks": [{"extra_info": {"records": RECORDS}}], "notes": NOTES}
    terminalreporter.section("cllm vs peers")
    for line in to_text(build_report(data)).splitlines():
        terminalreporter.write_line(line)
