"""The build: extension modules, OpenMP, ISA dispatch, show_config."""

import importlib

import pytest

import cllm
from cllm import kernels
from cllm._core import _bpe

from conftest import THREAD_COUNTS


def test_show_config_reports_build_and_run_time():
    cfg = cllm.show_config()
    for key in ("version", "compiler", "openmp", "isa", "isa_compiled", "isa_supported", "num_threads",
                "effective_cpus", "native"):
        assert key in cfg
    assert cfg["version"] == cllm.__version__
    assert cfg["isa"] in cfg["isa_supported"]
    assert set(cfg["isa_supported"]) <= set(cfg["isa_compiled"])
    assert cfg["isa_compiled"][0] == "baseline"
    assert cfg["num_threads"] == cllm.get_num_threads()


def test_best_supported_isa_chosen_by_default():
    assert kernels.get_isa() == cllm.show_config()["isa_supported"][-1]


def test_set_isa(isa):
    assert kernels.get_isa() == isa
    assert cllm.show_config()["isa"] == isa


def test_set_isa_rejects_unknown():
    with pytest.raises(ValueError, match=r"isa must be 'auto' or one of .* \(got 'sse9'\)"):
        kernels.set_isa("sse9")


@pytest.mark.parametrize("n", THREAD_COUNTS)
def test_num_threads_is_passed_per_call(n):
    if not cllm.show_config()["openmp"]:
        pytest.skip("built without OpenMP")
    assert _bpe.threads_used(n) == n


def test_public_api():
    for name in ("__version__", "show_config", "get_num_threads", "set_num_threads", "threads", "kernels"):
        assert hasattr(cllm, name)
    with cllm.threads(3):
        assert cllm.get_num_threads() == 3
    # the module stays importable under its own name although cllm.threads is the context manager
    assert importlib.import_module("cllm.runtime.threads").resolve_num_threads(5) == 5
