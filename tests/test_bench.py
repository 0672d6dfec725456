"""cllm bench: settings, the tables built from a small hand-made pytest-benchmark JSON, the files it writes, and the
command's errors. One test runs a two-case fake suite through pytest in a subprocess."""

import importlib.util
import json
import subprocess

import pytest

from cllm.evaluate import bench
from cllm.cli import main


def rec(suite, case, threads, impl, rate, unit="FLOP", scale=(1e9, "G")):
    return {"suite": suite, "case": case, "threads": threads, "impl": impl, "rate": rate, "unit": unit,
            "scale": list(scale)}


def sample():
    """A pytest-benchmark report as the suites write it: one benchmark per case, a record per measurement."""
    step = [rec("train_step", "small B16 T256", n, impl, rate, "token", (1e3, "k"))
            for n, torch_rate, cllm_rate in ((1, 3000, 4000), (2, 5400, 7000), (3, 5000, 6000))
            for impl, rate in (("torch", torch_rate), ("cllm", cllm_rate))]
    benchmarks = [[rec("linear_forward", "M4096 K256 N768", 1, "numpy", 100e9)],
                  [rec("linear_forward", "M4096 K256 N768", 1, "cllm", 120e9)],
                  [rec("preprocess", "stdlib corpus", 2, "cllm", 3.5e6, "B", (1e6, "M"))],
                  [rec("prefill", "small prompt 128", 1, "cllm", 20e3, "token", (1e3, "k")),  # two in one benchmark
                   rec("decode", "small batch 1", 1, "cllm", 500, "token", (1, ""))]] + [[r] for r in step]
    return {
        "machine_info": {"cpu": {"brand_raw": "Test CPU 9000", "count": 4}, "system": "Linux", "release": "6.1",
                         "python_version": "3.11.7",
                         "cllm": {"effective_cpus": 2, "version": "0.1.0", "isa": "avx2", "compiler": "gcc 12.2.0",
                                  "openmp": True, "numpy": "2.0.0"},
                         "peers": {"torch": "2.13.0", "tiktoken": None},
                         "bench": {"threads": [1, 2, 3], "quick": True}},
        "benchmarks": [{"name": f"test_{i}", "extra_info": {"records": recs}} for i, recs in enumerate(benchmarks)],
        "datetime": "2026-11-28T10:00:00.123+00:00",
        "notes": ["train_step t1: peak RSS 600 MB"],
    }


def test_parse_threads():
    assert bench.parse_threads("1,2,4") == [1, 2, 4]
    assert bench.parse_threads("4, 1,1") == [1, 4]
    for bad in ("", "0", "1,x", "2,-1", "1,,2"):
        with pytest.raises(ValueError, match="thread counts >= 1"):
            bench.parse_threads(bad)


def test_default_threads_reach_past_the_cores():
    assert bench.default_threads(1) == [1, 2]
    assert bench.default_threads(2) == [1, 2, 4]
    assert bench.default_threads(6) == [1, 2, 4, 6, 8]


def test_env_settings():
    assert bench.env_settings({}) == ([1, 2], False)
    assert bench.env_settings({bench.THREADS_ENV: "3,1", bench.QUICK_ENV: "1"}) == ([1, 3], True)
    with pytest.raises(ValueError, match=bench.THREADS_ENV):
        bench.env_settings({bench.THREADS_ENV: "two"})
    with pytest.raises(ValueError, match=f"{bench.QUICK_ENV}: expected 0 or 1"):
        bench.env_settings({bench.QUICK_ENV: "yes"})


def test_peer_rows():
    rows = {(r["suite"], r["threads"]): r for r in bench.build_report(sample())["rows"]}
    matmul = rows["linear_forward", 1]
    assert (matmul["cllm"], matmul["peer"], matmul["peer_rate"]) == (120e9, "numpy", 100e9)
    assert matmul["ratio"] == pytest.approx(1.2)
    alone = rows["preprocess", 2]
    assert (alone["cllm"], alone["peer"], alone["peer_rate"], alone["ratio"]) == (3.5e6, None, None, None)
    assert ("prefill", 1) in rows and ("decode", 1) in rows  # both records of one benchmark
    assert rows["train_step", 2]["ratio"] == pytest.approx(7000 / 5400)


def test_scaling_efficiency():
    rows = {(r["impl"], r["threads"]): r for r in bench.build_report(sample())["scaling"]}
    assert rows["cllm", 1]["efficiency"] == pytest.approx(1.0)
    assert rows["cllm", 2]["efficiency"] == pytest.approx(7000 / (2 * 4000))
    assert rows["torch", 3]["efficiency"] == pytest.approx(5000 / (3 * 3000))
    assert [rows["cllm", n]["oversubscribed"] for n in (1, 2, 3)] == [False, False, True]  # 2 CPUs usable
    assert bench.scaling([rec("train_step", "c", 2, "cllm", 10.0)], cpus=2)[0]["efficiency"] is None  # no 1-thread


def test_text_and_markdown():
    report = bench.build_report(sample())
    text = bench.to_text(report)
    assert "2026-11-28 10:00 UTC, threads 1,2,3, quick mode" in text
    assert "Test CPU 9000, 2 CPUs usable (4 logical)" in text and "peers: torch 2.13.0" in text
    assert "tiktoken" not in text  # not installed
    line = next(ln for ln in text.splitlines() if ln.startswith("linear_forward"))
    assert line.split() == ["linear_forward", "M4096", "K256", "N768", "1", "120", "100", "1.20", "GFLOP/s", "numpy"]
    alone = next(ln for ln in text.splitlines() if ln.startswith("preprocess"))
    assert alone.split()[-4:] == ["-", "-", "MB/s", "-"] and "3.50" in alone
    scaling = text[text.index("Thread scaling"):].splitlines()
    assert scaling[1].split() == ["threads", "cllm", "tokens/s", "efficiency", "torch", "tokens/s", "efficiency"]
    assert scaling[3].split() == ["2", "7,000", "0.88", "5,400", "0.90"]
    assert scaling[4].split()[0] == "3*"
    assert text.rstrip().endswith("train_step t1: peak RSS 600 MB")

    md = bench.to_markdown(report)
    assert "| suite | case | threads | cllm | peer | ratio | unit | vs |\n|---|---|---|---|---|---|---|---|" in md
    assert "| linear_forward | M4096 K256 N768 | 1 | 120 | 100 | 1.20 | GFLOP/s | numpy |" in md
    assert "## Thread scaling: train_step small B16 T256" in md and "| 3* | 6,000 | 0.50 | 5,000 | 0.56 |" in md
    assert md.endswith("## Notes\n\n- train_step t1: peak RSS 600 MB\n")


def test_write_is_complete_and_leaves_no_temporary(tmp_path):
    report = bench.build_report(sample())
    bench.write(report, tmp_path)
    assert json.loads((tmp_path / "bench.json").read_text()) == report
    assert (tmp_path / "bench.md").read_text() == bench.to_markdown(report)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "bench.md"]


def test_cli_without_benchmark_suites(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "BENCHMARKS", tmp_path / "site-packages" / "benchmarks")
    assert main(["bench", "--quick", "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cllm bench: failed: no benchmark suites at" in err and "source checkout" in err


def test_cli_without_pytest_benchmark(tmp_path, monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "pytest_benchmark" else
                        find_spec(name))
    assert main(["bench", "--output", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pytest-benchmark is not installed: pip install -e '.[test]'" in err


@pytest.mark.parametrize("argv,message", [(["bench", "--threads", "1,0"], "argument --threads: expected comma-sep"),
                                          (["bench", "--bogus"], "unrecognized arguments: --bogus")])
def test_cli_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


FAKE_CONFTEST = '''
import os
import pytest

@pytest.fixture
def record(benchmark):
    def _record(impl, rate):
        benchmark.extra_info.setdefault("records", []).append(
            {"suite": "train_step", "case": "fake", "threads": int(os.environ["CLLM_BENCH_THREADS"].split(",")[-1]),
             "impl": impl, "rate": rate, "unit": "token", "scale": [1, ""]})
    return _record

def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["bench"] = {"threads": [int(n) for n in os.environ["CLLM_BENCH_THREADS"].split(",")],
                             "quick": os.environ["CLLM_BENCH_QUICK"] == "1"}
'''

FAKE_SUITE = '''
import pytest

@pytest.mark.parametrize("impl,rate", [("torch", 100.0), ("cllm", 150.0)])
def test_step(benchmark, record, impl, rate):
    benchmark.pedantic(lambda: None, rounds=1)
    record(impl, rate)
'''


def test_run_a_fake_suite_end_to_end(tmp_path):
    suites = tmp_path / "benchmarks"
    suites.mkdir()
    (suites / "conftest.py").write_text(FAKE_CONFTEST)
    (suites / "test_fake.py").write_text(FAKE_SUITE)
    report, code = bench.run([1, 3], True, tmp_path / "out", benchmarks=suites)
    assert code == 0 and (report["threads"], report["quick"]) == ([1, 3], True)  # as the suites saw them
    assert [(r["cllm"], r["peer_rate"], r["threads"]) for r in report["rows"]] == [(150.0, 100.0, 3)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bench.json", "bench.md", "pytest-benchmark.json"]


@pytest.mark.parametrize("code,keyword,error", [(5, "nothing", "ValueError: -k 'nothing' selected no benchmark"),
                                                (4, "(", "ValueError: pytest rejected the run (exit code 4"),
                                                (3, None, "RuntimeError: pytest exited with code 3 and wrote no")])
def test_run_reports_pytest_failures(tmp_path, monkeypatch, code, keyword, error):
    (tmp_path / "conftest.py").touch()
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kwargs: subprocess.CompletedProcess(cmd, code))
    with pytest.raises((ValueError, RuntimeError)) as e:
        bench.run([1], False, tmp_path / "out", keyword=keyword, benchmarks=tmp_path)
    assert f"{e.typename}: {e.value}".startswith(error)
