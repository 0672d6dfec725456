"""Data-parallel training over MPI (cllm.distributed): 2 ranks launched by Open MPI's mpiexec on 127.0.0.1 match
1 process bitwise, resume across rank counts, stop when a rank dies or the weights diverge. Every subprocess has
a timeout. The tests that launch ranks skip without mpi4py and an Open MPI mpiexec; the others always run."""

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types

import numpy as np
import pytest

import cllm
from cllm.train.distributed import GradientSum, World
from cllm.runtime.threads import effective_cpu_count, sphere_tree, tree_sum

from test_train import RUN, tokens, weights  # noqa: F401 (tokens: the small corpus fixture)


def _open_mpi():
    """Open MPI's mpiexec on PATH, or None."""
    path = shutil.which("mpiexec")
    if path is None:
        return None
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    return path if "Open MPI" in version or "OpenRTE" in version else None


MPIEXEC = _open_mpi()
needs_mpi = pytest.mark.skipif(
    MPIEXEC is None or importlib.util.find_spec("mpi4py") is None,
    reason="needs mpi4py and Open MPI's mpiexec: pip install -e '.[mpi]' and an MPI (docs/distributed.md)")

# not inherited by the runs: a launcher's variables (this may run under one) and thread settings
CLEARED_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "CLLM_NUM_THREADS", "OMP_NUM_THREADS")
# Loopback only; Open MPI refuses root unless told (CI and this project's machines run as root).
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_btl_tcp_if_include": "lo", "OMPI_MCA_oob_tcp_if_include": "lo"}
# n_micro = 4 micro-batches per step: each of 2 ranks computes 2 of them per step
OPTIONS = {**{k: v for k, v in RUN.items() if k != "model"}, "model": "tiny", "micro_batch": 2, "epochs": 4,
           "checkpoint_every": 5}

WORKER = textwrap.dedent("""
    import json, os, sys
    import cllm
    from cllm.train import trainer
    from cllm.train.distributed import world
    args = json.loads(sys.argv[1])
    w = world()
    if args.pop("perturb", False) and w.rank == 1:  # rank 1 starts from other weights
        start = trainer.Trainer._start
        def perturbed(self):
            model, *rest = start(self)
            model.params[0] += 1e-3
            return (model, *rest)
        trainer.Trainer._start = perturbed
    print(json.dumps({"rank": w.rank, "size": w.size, "pid": os.getpid(), "threads": w.default_threads()}),
          flush=True)
    cllm.train(args.pop("data"), **args)
""")


def env(**extra):
    clean = {k: v for k, v in os.environ.items() if k not in CLEARED_VARS}
    return {**clean, **MPI_ENV, **extra}


def mpiexec(ranks, *argv):
    return [MPIEXEC, "-n", str(ranks), "--oversubscribe", "--host", f"127.0.0.1:{ranks}", sys.executable, *argv]


def launch(ranks, args, **extra_env):
    """mpiexec -n ranks python WORKER args: the Popen (stdout: a JSON line per rank, then nothing)."""
    return subprocess.Popen(mpiexec(ranks, "-c", WORKER, json.dumps(args)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(**extra_env))


def objects(text):
    """The JSON objects the ranks printed (mpiexec may join two ranks' lines)."""
    return [json.loads(obj) for obj in re.findall(r"\{[^{}]*\}", text)]


def finish(proc, timeout):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, objects(out), err


def wait_for_checkpoint(folder, after, proc, timeout=60):
    """Wait until a checkpoint of a step > after exists beside the run (or the run ended); its step."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = [int(p.stem[5:]) for p in (folder / "checkpoints").glob("step_*.cllm")]
        if steps and max(steps) > after:
            return max(steps)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint after step {after} within {timeout} s (exit code {proc.poll()})")


def running(pid, timeout=10):
    """Whether process pid still runs after up to timeout seconds (a zombie does not run)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return False
        except FileNotFoundError:
            return False
        time.sleep(0.1)
    return True


def steps_of(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tokens, tmp_path_factory):  # noqa: F811
    """OPTIONS trained by one process with 2 threads, uninterrupted."""
    out = tmp_path_factory.mktemp("reference") / "m.cllm"
    cllm.train(tokens, **OPTIONS, num_threads=2, output=out)
    return out


# --- without MPI ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [*range(1, 30), 157, 158, 300])
def test_gradient_sum_is_the_sphere_tree_sum(n):
    rng = np.random.default_rng(n)
    grads = [(rng.standard_normal(100) * 10.0 ** rng.integers(-3, 4)).astype(np.float32) for _ in range(n)]
    total = GradientSum(World(), n, 100)
    buffer = np.empty(100, np.float32)
    assert sorted(total.mine()) == list(range(n))
    for j in total.mine():
        buffer[...] = grads[j]
        total.add(buffer)
    total.finish(buffer)
    np.testing.assert_array_equal(buffer, tree_sum(grads))
    assert len(total.partials) == sphere_tree(n).depth, "one partial per level with children"


def test_ranks_must_share_the_micro_batches():
    with pytest.raises(ValueError, match="the 3 ranks cannot share 4 micro-batches per step"):
        GradientSum(types.SimpleNamespace(size=3, rank=0), 4, 100)


def test_a_plain_run_never_initialises_mpi():
    code = "import sys, cllm; from cllm.train.distributed import world; print(world().size, 'mpi4py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=60)
    assert out.stdout.split() == ["1", "False"], out.stderr


def test_a_launcher_without_mpi4py_is_an_error():
    code = "import sys; sys.modules['mpi4py'] = None; from cllm.train.distributed import world; world()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=env(OMPI_COMM_WORLD_SIZE="2", OMPI_COMM_WORLD_RANK="0"))
    assert out.returncode == 1
    assert "started by an MPI launcher with 2 ranks, but mpi4py cannot be used" in out.stderr
    assert "pip install 'cllm[mpi]'" in out.stderr


# --- two ranks --------------------------------------------------------------------------------------------------

@needs_mpi
def test_two_ranks_match_one_process_bitwise(tokens, reference, tmp_path):  # noqa: F811
    out = tmp_path / "m.cllm"
    code, ranks, err = finish(launch(2, {**OPTIONS, "data": str(tokens), "output": str(out)}), timeout=120)
    assert code == 0, err
    assert sorted(r["rank"] for r in ranks) == [0, 1] and {r["size"] for r in ranks} == {2}
    assert sum(r["threads"] for r in ranks) <= max(2, effective_cpu_count()), "threads: each rank its share"
    np.testing.assert_array_equal(weights(out), weights(reference))
    ours, theirs = steps_of(out.parent), steps_of(reference.parent)
    steps = [r["step"] for r in ours if r["type"] == "step"]
    assert steps == list(range(1, len(steps) + 1)), "rank 0 alone writes metrics: each step once"
    for key in ("loss", "grad_norm", "val_loss"):  # the loss curve, bit for bit
        assert [r.get(key) for r in ours] == [r.get(key) for r in theirs]
    assert (out.parent / "report.md").exists() and len(list((out.parent / "checkpoints").iterdir())) == 3


@needs_mpi
def test_a_killed_rank_stops_the_job_and_resume_works_with_other_rank_counts(tokens, reference, tmp_path):  # noqa: F811
    out = tmp_path / "m.cllm"
    args = {**OPTIONS, "data": str(tokens), "output": str(out)}
    proc = launch(2, args)
    pids = {}
    while len(pids) < 2:
        line = proc.stdout.readline()
        assert line, f"the ranks did not start: {proc.communicate(timeout=60)[1]}"
        pids.update({r["rank"]: r["pid"] for r in objects(line)})
    wait_for_checkpoint(out.parent, 0, proc)
    os.kill(pids[1], signal.SIGKILL)
    start = time.time()
    code, _, err = finish(proc, timeout=60)
    assert code != 0 and time.time() - start < 30, "the other rank exits with an error, it does not hang"
    assert not running(pids[0])
    killed_at = max(int(p.stem[5:]) for p in (out.parent / "checkpoints").glob("step_*.cllm"))

    # one process takes over from the 2 ranks' checkpoint, and is killed in turn
    one = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(args)], stdout=subprocess.PIPE, text=True,
                           env=env(CLLM_NUM_THREADS="1"))
    wait_for_checkpoint(out.parent, killed_at, one)
    one.kill()
    one.communicate(timeout=60)

    # 2 ranks finish it, through the command line (which rank 0 alone answers)
    argv = mpiexec(2, "-m", "cllm", "train", "--data", str(tokens), "--output", str(out), "--model", "tiny", "--quiet")
    for key in ("batch_size", "micro_batch", "seq_len", "lr", "warmup", "eval_tokens", "epochs", "checkpoint_every"):
        argv += [f"--{key.replace('_', '-')}", str(OPTIONS[key])]
    done = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("trained ") == 1
    np.testing.assert_array_equal(weights(out), weights(reference))
    steps = [r["step"] for r in steps_of(out.parent) if r["type"] == "step"]
    assert steps == list(range(1, steps[-1] + 1)), "metrics.jsonl has each step once after the resumes"


@needs_mpi
def test_diverged_weights_stop_the_run_with_an_error(tokens, tmp_path):  # noqa: F811
    args = {**OPTIONS, "data": str(tokens), "output": str(tmp_path / "m.cllm"), "eval_every": 2, "perturb": True}
    code, _, err = finish(launch(2, args), timeout=60)
    assert code != 0
    assert "at step 2 the weights of rank 1 differ from rank 0's" in err
