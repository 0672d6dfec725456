"""Save and load of the `base` preset (124 M parameters, 497 MB of float32; quick mode: `small`, 21 MB) in the
.cllm format, beside safetensors writing and reading the same state dict in the same run.

- save: ``model.save`` (atomic and durable: temp file, fsync, rename, fsync of the folder) vs
  ``safetensors.numpy.save_file`` (writes in place, no fsync).
- load, lazy: ``cllm.load(mmap=True)`` (maps; reads nothing) vs ``safetensors.safe_open`` (maps too).
- load and read every weight: ``cllm.load(mmap=True)`` then a sum over every tensor vs ``safetensors.numpy.load_file``
  then the same sum (both from the page cache).
- load, verified: ``cllm.load(mmap=False)`` (reads the file and checks every tensor's CRC-32).
"""

import numpy as np
import pytest

import cllm

from conftest import quick

safetensors_numpy = pytest.importorskip("safetensors.numpy")
from safetensors import safe_open  # noqa: E402

MB = 1e6
PRESET = quick("base", "small")
CASE = f"{PRESET} preset"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    model = cllm.Model(cllm.ModelConfig.preset(PRESET), seed=0)
    return model, folder, model.params.nbytes


def touch_all(tensors) -> float:
    return float(sum(np.add.reduce(t, axis=None, dtype=np.float64) for t in tensors))


def test_save_safetensors(benchmark, record, base):
    model, folder, nbytes = base
    state = model.state_dict()
    benchmark.pedantic(lambda: safetensors_numpy.save_file(state, str(folder / "m.safetensors")), rounds=3,
                       warmup_rounds=1)
    record("file: save", CASE, 1, "safetensors", nbytes, "B", (MB, "M"))


def test_save_cllm(benchmark, record, base):
    model, folder, nbytes = base
    benchmark.pedantic(lambda: model.save(folder / "m.cllm"), rounds=3, warmup_rounds=1)
    record("file: save", CASE, 1, "cllm", nbytes, "B", (MB, "M"))


def test_load_lazy_safetensors(benchmark, record, base):
    _, folder, nbytes = base

    def load():
        with safe_open(str(folder / "m.safetensors"), framework="np") as f:
            return list(f.keys())
    benchmark.pedantic(load, rounds=5, warmup_rounds=1)
    record("file: open, lazy", CASE, 1, "safetensors", nbytes, "B", (MB, "M"))


def test_load_lazy_cllm(benchmark, record, base):
    _, folder, nbytes = base
    benchmark.pedantic(lambda: cllm.load(folder / "m.cllm", mmap=True), rounds=5, warmup_rounds=1)
    record("file: open, lazy", CASE, 1, "cllm", nbytes, "B", (MB, "M"))


def test_load_and_read_safetensors(benchmark, record, base):
    _, folder, nbytes = base
    benchmark.pedantic(lambda: touch_all(safetensors_numpy.load_file(str(folder / "m.safetensors")).values()),
                       rounds=3, warmup_rounds=1)
    record("file: load + read", CASE, 1, "safetensors", nbytes, "B", (MB, "M"))


def test_load_and_read_cllm(benchmark, record, base):
    _, folder, nbytes = base
    benchmark.pedantic(lambda: touch_all(cllm.load(folder / "m.cllm", mmap=True).state_dict().values()),
                       rounds=3, warmup_rounds=1)
    record("file: load + read", CASE, 1, "cllm", nbytes, "B", (MB, "M"))


def test_load_verified_cllm(benchmark, record, base):
    _, folder, nbytes = base
    benchmark.pedantic(lambda: cllm.load(folder / "m.cllm", mmap=False), rounds=3, warmup_rounds=1)
    record("file: load, verified", CASE, cllm.get_num_threads(), "cllm", nbytes, "B", (MB, "M"))
