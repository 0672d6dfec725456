"""cllm pipeline: every stage on a small source tree within a budget, skipped when up to date, re-run when the
sources change."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cllm
from cllm.cli import main as cli
from cllm.pipeline import PipelineOptions


@pytest.fixture
def source(tmp_path):
    """A copy of cllm's own Python sources: real code, ~300 KB."""
    src = tmp_path / "src"
    shutil.copytree(Path(cllm.__file__).parent, src, ignore=shutil.ignore_patterns("*.so", "_core", "__pycache__"))
    return src


def test_pipeline_runs_skips_and_reruns(source, tmp_path, capsys):
    work = tmp_path / "work"
    argv = ["pipeline", "--source", str(source), "--workdir", str(work), "--budget", "0.2", "--model", "tiny",
            "--vocab-size", "400", "--quiet"]
    assert cli(argv) == 0
    out = capsys.readouterr().out
    for stage in ("collect", "preprocess", "tokenize", "train"):
        assert f"{stage}: done" in out
    summary = json.loads((work / "summary.json").read_text())
    assert summary["stages"]["train"]["steps"] > 0
    model = cllm.load(work / "model" / "model.cllm")
    assert model.tokenizer.vocab_size == 400
    assert (model.config.arch, model.config.qk_norm) == ("llama", True)  # the tuned defaults

    assert cli(argv) == 0  # nothing changed: every stage is skipped
    out = capsys.readouterr().out
    assert all(f"{stage}: up to date, skipped" in out for stage in ("collect", "preprocess", "tokenize", "train"))

    (source / "new_module.py").write_text("def added():\n    return 42\n")
    assert cli(argv) == 0  # a changed source re-runs everything from collect
    assert "collect: done" in capsys.readouterr().out


def test_pipeline_gpt2_arch_trains_without_qk_norm(source, tmp_path, capsys):
    work = tmp_path / "work"
    assert cli(["pipeline", "--source", str(source), "--workdir", str(work), "--budget", "0.1", "--model", "tiny",
                "--vocab-size", "300", "--arch", "gpt2", "--quiet"]) == 0
    config = cllm.load(work / "model" / "model.cllm").config
    assert (config.arch, config.qk_norm) == ("gpt2", False)


def test_pipeline_bad_inputs(tmp_path, capsys):
    assert cli(["pipeline", "--source", str(tmp_path / "missing"), "--workdir", str(tmp_path / "w")]) == 2
    assert "neither a folder nor an http(s) URL" in capsys.readouterr().err
    with pytest.raises(ValueError, match="budget"):
        PipelineOptions(time_budget=0)


def test_pipeline_sigterm_in_training_exits_143_and_resumes(source, tmp_path):
    work = tmp_path / "work"
    argv = [sys.executable, "-m", "cllm", "pipeline", "--source", str(source), "--workdir", str(work), "--budget",
            "0.2", "--model", "tiny", "--vocab-size", "400", "--quiet"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = work / "model" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.stat().st_size > 0) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip() == "cllm pipeline: stopped by SIGTERM"
    assert not json.loads((work / "model" / "stage.json").read_text())["finished"]
    assert list((work / "model" / "checkpoints").glob("step_*.cllm")), "the train stage left a checkpoint"
    again = subprocess.run(argv, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "tokenize: up to date, skipped" in again.stdout and "train: done" in again.stdout
    assert json.loads((work / "summary.json").read_text())["stages"]["train"]["steps"] > 0
