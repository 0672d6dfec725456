"""cllm.train and `cllm train`: end to end on a small learnable corpus, checkpoints, exact resume after SIGKILL
(with another thread count), SIGINT, and the checks made before training starts."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import cllm
from cllm.train.batches import seq_len_at
from cllm.cli import main as cli
from cllm.tokenizer.stage import tokenize_corpus

# Small enough to train in a second: 8 windows of 32 tokens per step.
RUN = dict(model=cllm.ModelConfig(vocab_size=320, context_length=32, d_model=32, n_layers=2, n_heads=2),
           batch_size=8, micro_batch=4, seq_len=32, lr=3e-3, warmup=5, eval_tokens=512, progress=False)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    """A tokens/ folder of a learnable corpus: short programs with a regular structure."""
    root = tmp_path_factory.mktemp("data")
    docs = root / "docs.jsonl"
    rng = np.random.default_rng(0)
    with open(docs, "w") as f:
        for i in range(300):
            a, b = rng.integers(0, 50, 2)
            text = f"def add_{i}(x):\n    return x + {a}\n\nprint(add_{i}({b}))  # {a + b}\n"
            f.write(json.dumps({"text": text}) + "\n")
    out = root / "tokens"
    tokenize_corpus([docs], out, vocab_size=300, val_fraction=0.1, progress=False)
    return out


def weights(path):
    return cllm.load(path, mmap=False).params.copy()


def test_train_end_to_end(tokens, tmp_path):
    result = cllm.train(tokens, **RUN, epochs=2, output=tmp_path / "run" / "model.cllm", keep_checkpoints=2)
    folder = tmp_path / "run"
    assert result.stopped == "epochs" and result.steps > 20
    assert result.val_loss is not None and result.bits_per_byte > 0 and result.perplexity > 1
    steps = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in steps if r["type"] == "step"]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), "the loss falls on a learnable corpus"
    assert [r["epoch"] for r in steps if r["type"] == "epoch"] == [0, 1]
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "elapsed"} <= steps[0].keys()
    evals = [r for r in steps if r["type"] == "eval"]
    assert evals and {"val_loss", "perplexity", "bits_per_byte"} <= evals[-1].keys()
    model = cllm.load(folder / "model.cllm")
    assert model.tokenizer is not None and model.training_summary["steps"] == result.steps
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == sorted(
        f"step_{s:08d}.cllm" for s in sorted({r["step"] for r in steps})[-2:]) or \
        len(list((folder / "checkpoints").iterdir())) == 2
    report = (folder / "report.md").read_text()
    for item in ("time per epoch", "bits per byte", "peak memory", "CPU utilisation", "tokens/s", "loss.png"):
        assert item in report
    assert (folder / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_train(tokens, tmp_path, capsys):
    out = tmp_path / "m.cllm"
    code = cli(["train", "--data", str(tokens), "--model", "tiny", "--batch-size", "4", "--seq-len", "32",
                "--max-steps", "6", "--output", str(out), "--quiet", "--threads", "3"])
    assert code == 0
    assert "trained 6 steps" in capsys.readouterr().out
    assert cllm.load(out).config.vocab_size == 320  # the preset's vocabulary: the data's 300 rounded up to 64


def test_patience_and_time_budget_stop_early(tokens, tmp_path):
    # a learning rate far too high: the validation loss stops improving at once
    result = cllm.train(tokens, **{**RUN, "lr": 0.3}, epochs=50, eval_every=1, patience=3,
                        output=tmp_path / "a" / "m.cllm")
    assert result.stopped == "patience" and result.steps < 50 and result.best_val_loss < result.val_loss
    result = cllm.train(tokens, **RUN, epochs=1000, time_budget=1.0, output=tmp_path / "b" / "m.cllm")
    assert result.stopped == "time_budget" and result.seconds < 5


# --- exact resume -----------------------------------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import json, os, sys
    import cllm
    args = json.loads(sys.argv[1])
    if os.environ.get("SLOW_CHECKPOINT"):  # make the 3rd checkpoint's fsync slow, so the test can kill inside it
        import cllm.runtime.atomic, time
        calls = [0]
        real_fsync = cllm.runtime.atomic.os.fsync
        def slow_fsync(fd):
            calls[0] += 1
            if calls[0] == 3:
                print("in checkpoint", flush=True)
                time.sleep(30)
            real_fsync(fd)
        cllm.runtime.atomic.os.fsync = slow_fsync
    print("started", flush=True)
    cllm.train(args.pop("data"), **args)
""")


def steps_done(folder) -> int:
    path = folder / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for line in lines if '"type": "step"' in line)


def run_worker(args, threads, kill_at_step=None, slow_checkpoint=False):
    """Run a training worker; kill it once its metrics show ``kill_at_step`` steps (or inside its 3rd fsync)."""
    env = {**os.environ, "CLLM_NUM_THREADS": str(threads)}
    if slow_checkpoint:
        env["SLOW_CHECKPOINT"] = "1"
    proc = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(args)], stdout=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout.readline().strip() == "started"
    if slow_checkpoint:
        assert proc.stdout.readline().strip() == "in checkpoint"
        proc.kill()
    elif kill_at_step is not None:
        folder = Path(args["output"]).parent
        deadline = time.time() + 300
        while proc.poll() is None and steps_done(folder) < kill_at_step and time.time() < deadline:
            time.sleep(0.005)
        proc.kill()
    proc.wait(timeout=300)
    proc.stdout.close()
    return proc.returncode


def test_sigkilled_run_resumes_bitwise(tokens, tmp_path):
    """SIGKILL a run 6 times (once inside a checkpoint write, then at random steps), resuming each time with
    another thread count: the final weights equal those of a run never stopped."""
    def args(out):  # JSON for the worker: the tiny preset (vocabulary from the data, context = seq_len)
        return {**{k: v for k, v in RUN.items() if k != "model"}, "model": "tiny", "data": str(tokens),
                "epochs": 12, "checkpoint_every": 7, "keep_checkpoints": 2, "output": str(out)}

    reference = tmp_path / "reference" / "m.cllm"
    assert run_worker(args(reference), threads=2) == 0
    planned = steps_done(reference.parent)
    interrupted = tmp_path / "interrupted" / "m.cllm"
    assert run_worker(args(interrupted), threads=1, slow_checkpoint=True) == -9
    rng = np.random.default_rng(7)
    for target in sorted(rng.choice(np.arange(20, planned - 5), size=5, replace=False)):
        assert run_worker(args(interrupted), threads=int(rng.integers(1, 5)), kill_at_step=target) == -9
    assert run_worker(args(interrupted), threads=3) == 0
    np.testing.assert_array_equal(weights(interrupted), weights(reference))
    steps = [json.loads(x)["step"] for x in (interrupted.parent / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["type"] == "step"]
    assert steps == list(range(1, planned + 1)), "metrics.jsonl has each step once after the resumes"


def test_llama_muon_length_schedule_resumes_bitwise(tokens, tmp_path):
    """llama with QK-norm, Muon and a sequence-length schedule (8, 16, then 32 tokens): SIGKILLed twice, once in
    the short windows and once after, resumed with other thread counts, it ends with the weights of a run never
    stopped; the metrics show the lengths the schedule gives."""
    def args(out):
        return {**{k: v for k, v in RUN.items() if k != "model"}, "model": "tiny", "arch": "llama", "qk_norm": True,
                "optimizer": "muon", "seq_len_start": 8, "seq_len_warmup": 0.6, "data": str(tokens), "epochs": 6,
                "checkpoint_every": 5, "output": str(out)}

    reference = tmp_path / "reference" / "m.cllm"
    assert run_worker(args(reference), threads=2) == 0
    records = [json.loads(x) for x in (reference.parent / "metrics.jsonl").read_text().splitlines()]
    planned = steps_done(reference.parent)
    lengths = [r["seq_len"] for r in records if r["type"] == "step"]
    expect = [seq_len_at(s / planned, 32, 8, 0.6) for s in range(planned)]
    assert lengths == expect and set(lengths) == {8, 16, 32}
    f = cllm.model.read(reference)
    assert f.model.config.arch == "llama" and f.model.config.qk_norm
    interrupted = tmp_path / "interrupted" / "m.cllm"
    for target, nt in ((planned // 4, 1), (3 * planned // 4, 3)):
        assert run_worker(args(interrupted), threads=nt, kill_at_step=target) == -9
    assert run_worker(args(interrupted), threads=4) == 0
    np.testing.assert_array_equal(weights(interrupted), weights(reference))


def test_sigint_writes_a_checkpoint_and_resume_finishes_the_same(tokens, tmp_path):
    out = tmp_path / "run" / "m.cllm"
    argv = [sys.executable, "-m", "cllm", "train", "--data", str(tokens), "--model", "tiny", "--batch-size", "8",
            "--seq-len", "32", "--epochs", "6", "--checkpoint-every", "1000", "--output", str(out), "--quiet"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    metrics = out.parent / "metrics.jsonl"
    deadline = time.time() + 60
    while not (metrics.exists() and metrics.stat().st_size > 0) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped by SIGINT" in err and "checkpoint written to" in err and "Traceback" not in err
    checkpoint = err.split("checkpoint written to ")[1].split(". Run")[0]
    f = cllm.model.read(checkpoint, verify=True)
    assert 0 < f.trainer_state["step"] < f.trainer_state["planned_steps"]
    assert not out.exists(), "an interrupted run does not write the final model"
    assert subprocess.run(argv, capture_output=True).returncode == 0  # resumes and finishes
    reference = tmp_path / "reference" / "m.cllm"
    assert subprocess.run([*argv[:-3], "--output", str(reference), "--quiet"], capture_output=True).returncode == 0
    np.testing.assert_array_equal(weights(out), weights(reference))


def test_resume_with_other_settings_is_refused(tokens, tmp_path):
    out = tmp_path / "m.cllm"
    cllm.train(tokens, **RUN, max_steps=3, output=out)
    with pytest.raises(ValueError, match=r"other settings: batch_size=8 \(now 4\)"):
        cllm.train(tokens, **{**RUN, "batch_size": 4}, max_steps=3, output=out)
    result = cllm.train(tokens, **{**RUN, "batch_size": 4}, max_steps=3, output=out, resume=False)
    assert result.steps == 3 and result.resumed_from is None


# --- checks before training ----------------------------------------------------------------------------------

def test_bad_inputs_fail_before_training(tokens, tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        cllm.train(tmp_path / "missing", **RUN)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no tokenizer.json"):
        cllm.train(tmp_path / "empty", **RUN)
    small = cllm.ModelConfig(vocab_size=100, context_length=32, d_model=32, n_layers=1, n_heads=2)
    with pytest.raises(ValueError, match="vocab_size 100 is smaller than the data's tokenizer"):
        cllm.train(tokens, **{**RUN, "model": small}, output=tmp_path / "m.cllm")
    with pytest.raises(ValueError, match="seq_len 64 is longer than the model's context_length 32"):
        cllm.train(tokens, **{**RUN, "seq_len": 64}, output=tmp_path / "m.cllm")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        cllm.train(tokens, **RUN, output=tmp_path / "file" / "m.cllm")
    huge = cllm.ModelConfig(vocab_size=320, context_length=32, d_model=16384, n_layers=64, n_heads=16)
    with pytest.raises(ValueError, match="GB, more than the .* GB available"):
        cllm.train(tokens, **{**RUN, "model": huge}, output=tmp_path / "m.cllm")
    with pytest.raises(ValueError, match="fewer than batch_size"):
        cllm.train(tokens, **{**RUN, "batch_size": 4096, "micro_batch": None}, output=tmp_path / "m.cllm")
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):
        cllm.train(tokens, epoch=3)


@pytest.mark.parametrize("options, match", [
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"lr": -1}, "lr must be a finite number > 0"),
    ({"batch_size": 8, "micro_batch": 3}, "micro_batch must divide batch_size = 8"),
    ({"schedule": "step"}, "schedule must be one of"),
    ({"model": "huge"}, "model must be one of"),
    ({"min_lr": 1.0, "lr": 0.1}, "min_lr must be <= lr"),
    ({"time_budget": 0}, "time_budget must be a finite number > 0"),
])
def test_train_config_validation(options, match):
    with pytest.raises(ValueError, match=match):
        cllm.TrainConfig(**options)


def test_cli_train_errors(tmp_path, capsys):
    assert cli(["train", "--data", str(tmp_path / "nope"), "--output", str(tmp_path / "m.cllm")]) == 2
    assert "cllm train: error: data" in capsys.readouterr().err
