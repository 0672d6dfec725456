"""Tests for cllm.threads: thread-count policy, cgroup-aware CPU count, sphere tree and tree_sum."""
import asyncio
import importlib
import os
import threading
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

# cllm/__init__.py re-exports the function `threads`, which shadows the submodule attribute `cllm.threads`;
# import_module returns the module itself either way.
T = importlib.import_module("cllm.runtime.threads")


@pytest.fixture(autouse=True)
def clean_policy(monkeypatch):
    """No env override, no process default, and the oversubscription warning already spent."""
    monkeypatch.delenv("CLLM_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(T, "_warned_oversubscription", True)
    T.set_num_threads(None)
    yield
    T.set_num_threads(None)


# --- precedence ------------------------------------------------------------------------------------------

def test_precedence_context_set_cllm_omp_auto(monkeypatch):
    auto = T.effective_cpu_count()
    assert T.get_num_threads() == auto
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert T.get_num_threads() == 3
    monkeypatch.setenv("CLLM_NUM_THREADS", "5")
    assert T.get_num_threads() == 5
    T.set_num_threads(6)
    assert T.get_num_threads() == 6
    with T.threads(7):
        assert T.get_num_threads() == 7
        assert T.resolve_num_threads() == 7
        assert T.resolve_num_threads(2) == 2
    assert T.get_num_threads() == 6
    T.set_num_threads(None)
    assert T.get_num_threads() == 5
    monkeypatch.delenv("CLLM_NUM_THREADS")
    assert T.get_num_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert T.get_num_threads() == auto


@pytest.mark.parametrize("value, expected", [("4,2", 4), (" 4 , 2 ", 4), ("8", 8), ("1,1,1", 1)])
def test_omp_list_takes_first(monkeypatch, value, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert T.get_num_threads() == expected


@pytest.mark.parametrize("var", ["CLLM_NUM_THREADS", "OMP_NUM_THREADS"])
def test_empty_env_is_unset(monkeypatch, var):
    monkeypatch.setenv(var, "  ")
    assert T.get_num_threads() == T.effective_cpu_count()


@pytest.mark.parametrize("var, value", [
    ("CLLM_NUM_THREADS", "abc"), ("CLLM_NUM_THREADS", "0"), ("CLLM_NUM_THREADS", "-1"),
    ("CLLM_NUM_THREADS", "2.5"), ("CLLM_NUM_THREADS", "4,2"), ("CLLM_NUM_THREADS", "٣"),
    ("OMP_NUM_THREADS", "abc"), ("OMP_NUM_THREADS", "0"), ("OMP_NUM_THREADS", "4,x"), ("OMP_NUM_THREADS", ","),
])
def test_malformed_env_raises(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError) as e:
        T.get_num_threads()
    msg = str(e.value)
    assert msg.startswith(f"{var} must be a positive integer")
    assert f"(got {value!r})" in msg


def test_malformed_env_shadowed_by_higher_precedence(monkeypatch):
    monkeypatch.setenv("CLLM_NUM_THREADS", "abc")
    T.set_num_threads(2)
    assert T.get_num_threads() == 2


# --- validation ------------------------------------------------------------------------------------------

BAD = [0, -1, 2.0, 1.5, "3", True, False, [2], np.float64(2.0), np.bool_(True)]
SETTERS = [
    ("set_num_threads: n", T.set_num_threads),
    ("threads: n", T.threads),
    ("num_threads", T.resolve_num_threads),
    ("linear_forward: num_threads", lambda v: T.resolve_num_threads(v, name="linear_forward: num_threads")),
]


@pytest.mark.parametrize("name, setter", SETTERS, ids=[s[0] for s in SETTERS])
@pytest.mark.parametrize("value", BAD, ids=repr)
def test_validation_errors(name, setter, value):
    with pytest.raises(ValueError) as e:
        setter(value)
    assert str(e.value) == f"{name} must be an integer >= 1 (got {value!r})"


def test_threads_none_rejected_and_checked_at_call():
    with pytest.raises(ValueError, match=r"threads: n must be an integer >= 1 \(got None\)"):
        T.threads(None)
    with pytest.raises(ValueError, match=r"\(got 0\)"):
        T.threads(0)          # no `with` needed: the count is checked when the context is made


def test_example_message():
    with pytest.raises(ValueError) as e:
        T.resolve_num_threads(0)
    assert str(e.value) == "num_threads must be an integer >= 1 (got 0)"


@pytest.mark.parametrize("value", [np.int64(3), np.int32(3), np.uint8(3), np.intp(3)])
def test_numpy_integers_accepted(value):
    assert T.resolve_num_threads(value) == 3 and type(T.resolve_num_threads(value)) is int
    T.set_num_threads(value)
    assert T.get_num_threads() == 3 and type(T.get_num_threads()) is int
    with T.threads(value) as n:
        assert n == 3 and type(T.get_num_threads()) is int


def test_more_threads_than_cpus_is_valid():
    big = T.effective_cpu_count() * 4 + 1
    assert T.resolve_num_threads(big) == big
    with T.threads(big):
        assert T.get_num_threads() == big


# --- the threads() context -------------------------------------------------------------------------------

def test_threads_nesting_and_exception_restore():
    T.set_num_threads(2)
    with T.threads(3) as n:
        assert n == 3 and T.get_num_threads() == 3
        with T.threads(1):
            assert T.get_num_threads() == 1
            with pytest.raises(RuntimeError):
                with T.threads(5):
                    assert T.get_num_threads() == 5
                    raise RuntimeError("boom")
            assert T.get_num_threads() == 1
        assert T.get_num_threads() == 3
    assert T.get_num_threads() == 2


def test_context_isolated_between_python_threads():
    barrier = threading.Barrier(2, timeout=10)
    seen, errors = {}, []

    def worker(k):
        try:
            with T.threads(k):
                barrier.wait()            # both overrides are active now
                seen[k] = T.get_num_threads()
                barrier.wait()
        except Exception as exc:          # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(k,)) for k in (3, 5)]
    with T.threads(7):
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert T.get_num_threads() == 7   # the workers' overrides did not leak into this thread
    assert not errors and seen == {3: 3, 5: 5}


def test_context_isolated_between_asyncio_tasks():
    async def task(k):
        with T.threads(k):
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            return T.get_num_threads()

    async def main():
        return await asyncio.gather(task(2), task(4), task(6))

    assert asyncio.run(main()) == [2, 4, 6]


# --- oversubscription warning ----------------------------------------------------------------------------

def test_oversubscription_warns_exactly_once(monkeypatch):
    cpus = T.effective_cpu_count()
    monkeypatch.setattr(T, "_warned_oversubscription", False)  # the warning fires again
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        T.set_num_threads(cpus)              # not oversubscribed: no warning
        assert rec == []
        T.set_num_threads(cpus + 1)
        with T.threads(cpus + 5):
            pass
        T.resolve_num_threads(cpus + 7)
        monkeypatch.setenv("CLLM_NUM_THREADS", str(cpus + 9))
        T.set_num_threads(None)
        T.get_num_threads()
    assert len(rec) == 1
    w = rec[0]
    assert w.category is RuntimeWarning
    assert str(cpus + 1) in str(w.message) and str(cpus) in str(w.message)
    assert "oversubscribed" in str(w.message)
    assert w.filename == __file__            # points at the caller


def test_oversubscription_warning_from_env(monkeypatch):
    monkeypatch.setattr(T, "_warned_oversubscription", False)  # the warning fires again
    monkeypatch.setenv("OMP_NUM_THREADS", f"{T.effective_cpu_count() + 1},1")
    with pytest.warns(RuntimeWarning, match="oversubscribed"):
        T.get_num_threads()


# --- effective CPU count over fake /proc + /sys/fs/cgroup trees ------------------------------------------

def make_tree(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


V1_MOUNTINFO = ("31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
                "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
                "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
                "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")


@pytest.mark.parametrize("cpu_max, expected", [
    ("200000 100000", 2), ("150000 100000", 2), ("50000 100000", 1), ("1 100000", 1),
    ("max 100000", None), ("800000 200000", 4),
])
def test_cgroup_v2(tmp_path, cpu_max, expected):
    make_tree(tmp_path, {"proc/self/cgroup": "0::/user.slice/job\n",
                         "sys/fs/cgroup/user.slice/job/cpu.max": cpu_max + "\n"})
    assert T._cgroup_cpu_limit(tmp_path) == expected
    assert T._cgroup_cpu_limit(str(tmp_path)) == expected


def test_cgroup_v2_walks_up_and_takes_smallest(tmp_path):
    make_tree(tmp_path, {"proc/self/cgroup": "0::/a/b/c\n",
                         "sys/fs/cgroup/cpu.max": "800000 100000\n",
                         "sys/fs/cgroup/a/cpu.max": "300000 100000\n",
                         "sys/fs/cgroup/a/b/cpu.max": "max 100000\n",
                         "sys/fs/cgroup/a/b/c/cpu.max": "max 100000\n"})
    assert T._cgroup_cpu_limit(tmp_path) == 3


def test_cgroup_v2_container_path_missing_in_mount(tmp_path):
    # Without a cgroup namespace a container sees its host path, but its own cgroup is mounted at the top.
    make_tree(tmp_path, {"proc/self/cgroup": "0::/system.slice/docker-abc.scope\n",
                         "sys/fs/cgroup/cpu.max": "200000 100000\n"})
    assert T._cgroup_cpu_limit(tmp_path) == 2


@pytest.mark.parametrize("quota, period, expected", [
    ("400000", "100000", 4), ("-1", "100000", None), ("50000", "100000", 1), ("250000", "100000", 3),
])
def test_cgroup_v1_from_mountinfo(tmp_path, quota, period, expected):
    make_tree(tmp_path, {"proc/self/cgroup": "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n0::/\n",
                         "proc/self/mountinfo": V1_MOUNTINFO,
                         "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": quota + "\n",
                         "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": period + "\n"})
    assert T._cgroup_cpu_limit(tmp_path) == expected


def test_cgroup_v1_default_mount_and_mount_root(tmp_path):
    make_tree(tmp_path, {"proc/self/cgroup": "1:cpu:/\n",
                         "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "300000",
                         "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000"})
    assert T._cgroup_cpu_limit(tmp_path) == 3
    # a mount whose root is the process's own cgroup: the files sit at the mount point
    make_tree(tmp_path, {"proc/self/cgroup": "2:cpu:/docker/abc\n",
                         "proc/self/mountinfo": "32 31 0:29 /docker/abc /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n",
                         "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "200000"})
    assert T._cgroup_cpu_limit(tmp_path) == 2


def test_cgroup_hybrid_takes_min_of_v1_and_v2(tmp_path):
    make_tree(tmp_path, {"proc/self/cgroup": "4:cpu,cpuacct:/\n0::/job\n",
                         "proc/self/mountinfo": V1_MOUNTINFO,
                         "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "500000",
                         "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000",
                         "sys/fs/cgroup/unified/job/cpu.max": "200000 100000"})
    assert T._cgroup_cpu_limit(tmp_path) == 2


@pytest.mark.parametrize("cpu_max", [
    "", "banana", "100000", "max", "200000 100000 7", "-5 100000", "0 100000", "100000 0", "100000 -1",
    "1e5 100000", b"\xff\xfe 100000", "max max",
])
def test_cgroup_v2_garbled_is_no_limit(tmp_path, cpu_max):
    make_tree(tmp_path, {"proc/self/cgroup": "0::/job\n", "sys/fs/cgroup/job/cpu.max": cpu_max})
    assert T._cgroup_cpu_limit(tmp_path) is None


@pytest.mark.parametrize("files", [
    {},                                                            # no /proc at all
    {"proc/self/cgroup": "0::/job\n"},                             # no cpu.max anywhere
    {"proc/self/cgroup": "garbage without colons\n::\n7\n"},
    {"proc/self/cgroup": b"\xff\xfe\n"},
    {"proc/self/cgroup": "1:cpu:/\n", "proc/self/mountinfo": "nonsense - \n",
     "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "abc", "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000"},
    {"proc/self/cgroup": "1:cpu:/\n", "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "100000"},   # no period
], ids=["empty", "no-cpu-max", "garbage-cgroup", "binary-cgroup", "garbled-v1", "v1-no-period"])
def test_cgroup_unreadable_is_no_limit(tmp_path, files):
    make_tree(tmp_path, files)
    assert T._cgroup_cpu_limit(tmp_path) is None
    assert T._effective_cpu_count(tmp_path) >= 1


def test_cgroup_file_that_is_a_directory(tmp_path):
    (tmp_path / "sys/fs/cgroup/job/cpu.max").mkdir(parents=True)
    make_tree(tmp_path, {"proc/self/cgroup": "0::/job\n"})
    assert T._cgroup_cpu_limit(tmp_path) is None


def affinity():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def test_effective_cpu_count_combines_affinity_and_quota(tmp_path):
    make_tree(tmp_path, {"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cpu.max": "100000 100000"})
    assert T._effective_cpu_count(tmp_path) == 1
    make_tree(tmp_path, {"sys/fs/cgroup/cpu.max": "200000 100000"})
    assert T._effective_cpu_count(tmp_path) == min(affinity(), 2)
    make_tree(tmp_path, {"sys/fs/cgroup/cpu.max": f"{100000 * (affinity() + 8)} 100000"})
    assert T._effective_cpu_count(tmp_path) == affinity()
    make_tree(tmp_path, {"sys/fs/cgroup/cpu.max": "max 100000"})
    assert T._effective_cpu_count(tmp_path) == affinity()


def test_real_effective_cpu_count():
    n = T.effective_cpu_count()
    assert type(n) is int and 1 <= n <= (os.cpu_count() or 1)
    assert n <= affinity()
    assert T.effective_cpu_count() == n and T.effective_cpu_count.cache_info().hits >= 1


# --- sphere tree -----------------------------------------------------------------------------------------

# Heap numbering with 12 children per node: levels hold 1, 12, 144, 1728 nodes, i.e. nodes 0 | 1..12 |
# 13..156 | 157..1884. So n=13 (nodes 0..12) still has depth 1, n=157 depth 2 and n=158 depth 3.
@pytest.mark.parametrize("n, depth", [(1, 0), (2, 1), (12, 1), (13, 1), (14, 2), (144, 2), (145, 2),
                                      (157, 2), (158, 3), (1000, 3), (1885, 3), (1886, 4)])
def test_sphere_tree_depth(n, depth):
    tree = T.sphere_tree(n)
    assert tree.n == n and tree.fanout == 12 and tree.depth == depth
    assert [len(level) for level in tree.levels[:-1]] == [12 ** d for d in range(depth)]


def ceil_log(n, base):
    k = 0
    while base ** k < n:
        k += 1
    return k


def check_tree(tree):
    n, f = tree.n, tree.fanout
    assert tree.parent[0] == -1 and len(tree.parent) == len(tree.children) == n
    for i in range(1, n):
        assert 0 <= tree.parent[i] < i and i in tree.children[tree.parent[i]]
    for i, kids in enumerate(tree.children):
        assert len(kids) <= f and list(kids) == sorted(kids)
        assert all(tree.parent[c] == i for c in kids)
    assert sorted(i for level in tree.levels for i in level) == list(range(n))
    for d, level in enumerate(tree.levels):
        for i in level:                                   # a node's level is its distance from the root
            hops, j = 0, i
            while j:
                j, hops = tree.parent[j], hops + 1
            assert hops == d
    assert tree.depth == len(tree.levels) - 1
    if n > 1:
        assert 1 <= tree.depth <= ceil_log(n, f)
    order = tree.reduction_order()
    assert sorted(c for _, c in order) == list(range(1, n))   # every non-root once, as a child
    position = {c: k for k, (_, c) in enumerate(order)}
    for k, (p, c) in enumerate(order):
        assert tree.parent[c] == p
        assert all(position[g] < k for g in tree.children[c])   # c is complete before it is folded
    expected = [(p, c) for p in range(n - 1, -1, -1) for c in tree.children[p]]
    assert order == expected


@pytest.mark.parametrize("n", [1, 2, 12, 13, 144, 145, 1000])
def test_sphere_tree_shape(n):
    check_tree(T.sphere_tree(n))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 2000), fanout=st.integers(2, 16))
def test_sphere_tree_shape_any_fanout(n, fanout):
    check_tree(T.sphere_tree(n, fanout))


def test_reduction_order_exact_small():
    tree = T.sphere_tree(6, fanout=2)   # 0:(1,2)  1:(3,4)  2:(5,)
    assert tree.children == ((1, 2), (3, 4), (5,), (), (), ())
    assert tree.levels == ((0,), (1, 2), (3, 4, 5))
    assert tree.reduction_order() == [(2, 5), (1, 3), (1, 4), (0, 1), (0, 2)]
    assert T.sphere_tree(1).reduction_order() == []


def test_sphere_tree_is_frozen():
    tree = T.sphere_tree(3)
    with pytest.raises(Exception):
        tree.n = 4


@pytest.mark.parametrize("kwargs, name", [
    ({"n": 0}, "sphere_tree: n"), ({"n": -3}, "sphere_tree: n"), ({"n": 2.0}, "sphere_tree: n"),
    ({"n": True}, "sphere_tree: n"), ({"n": 4, "fanout": 1}, "sphere_tree: fanout"),
    ({"n": 4, "fanout": 0}, "sphere_tree: fanout"), ({"n": 4, "fanout": "12"}, "sphere_tree: fanout"),
])
def test_sphere_tree_validation(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name} must be an integer >= "):
        T.sphere_tree(**kwargs)


def test_sphere_tree_accepts_numpy_ints():
    assert T.sphere_tree(np.int64(13), np.int32(12)).depth == 1


# --- tree_sum --------------------------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(-10 ** 12, 10 ** 12), min_size=1, max_size=400), fanout=st.integers(2, 13))
def test_tree_sum_equals_sum(values, fanout):
    assert T.tree_sum(values, fanout) == sum(values)


def test_tree_sum_default_fanout_and_single():
    assert T.tree_sum([7]) == 7
    assert T.tree_sum(range(1000)) == sum(range(1000))


def test_tree_sum_float_order():
    v = [0.1, 1e16, -1e16, 0.3, 0.7, 1.0]
    # fanout 2: 0:(1,2) 1:(3,4) 2:(5,)  ->  p2 = v2+v5; p1 = (v1+v3)+v4; p0 = (v0+p1)+p2
    p2 = v[2] + v[5]
    p1 = (v[1] + v[3]) + v[4]
    assert T.tree_sum(v, fanout=2) == (v[0] + p1) + p2


def test_tree_sum_numpy_arrays_unmodified():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(5).astype(np.float32) for _ in range(30)]
    copies = [a.copy() for a in arrays]
    total = T.tree_sum(arrays)
    assert total.dtype == np.float32 and total.shape == (5,)
    np.testing.assert_allclose(total, np.sum(copies, axis=0), rtol=1e-5, atol=1e-5)
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)
    # exact: same additions in the same order
    partial = [a.copy() for a in copies]
    for p, c in T.sphere_tree(30).reduction_order():
        partial[p] = partial[p] + partial[c]
    np.testing.assert_array_equal(total, partial[0])


def test_tree_sum_empty():
    with pytest.raises(ValueError, match="non-empty"):
        T.tree_sum([])
