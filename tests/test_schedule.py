"""Tests for cllm.optim.lr_at: warmup, the cosine/linear/constant/wsd schedules, their boundaries, validation."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import cllm
from cllm import optim
from cllm.optim import SCHEDULES, lr_at

DECAYING = ("cosine", "linear", "wsd")   # the schedules that end at min_lr
LR, MIN_LR = 6e-4, 6e-5                  # nanoGPT's GPT-2 values


def grid():
    """(warmup, max_steps): no warmup, warmup 1, warmup up to and past max_steps, max_steps 1, large values."""
    for m in (1, 2, 3, 7, 10, 100, 1000, 10**6, 10**12):
        for w in sorted({0, 1, 2, m // 2, m - 1, m, m + 1, 3 * m}):
            yield w, m


GRID = list(grid())


def steps_to_check(w, m):
    """Every step up to 10 * max(w, m) + 2 when that is small; else the boundaries, their neighbours and samples."""
    top = 10 * max(w, m) + 2
    if top <= 3000:
        return list(range(top + 1))
    marks = {0, w - 1, w, w + 1, m - 1, m, m + 1, max(w, m), 10 * m, 10 * max(w, m), (w + m) // 2, m - m // 5}
    steps = {s + d for s in marks for d in (-1, 0, 1)}
    marks = sorted(s for s in marks if s >= 0)
    for lo, hi in zip(marks, marks[1:]):
        steps.update(int(s) for s in np.linspace(lo, hi, 40))
    return sorted(s for s in steps if s >= 0)


def check_invariants(schedule, w, m, steps, lr=LR, min_lr=MIN_LR, **kw):
    """Every documented property of lr_at over the sorted list ``steps``."""
    end = max(w, m)
    values = [lr_at(s, lr=lr, warmup=w, max_steps=m, min_lr=min_lr, schedule=schedule, **kw) for s in steps]
    for s, v in zip(steps, values):
        assert type(v) is float and math.isfinite(v), (s, v)
        assert 0 < v <= lr, (s, v)
        if s < w:
            assert v == lr * ((s + 1) / w), (s, v)
        else:
            assert v >= min_lr, (s, v)
        if s == w - 1:
            assert v == lr, (s, v)                            # the warmup ends exactly at lr
        if s == w and w < m:
            assert v == lr, (s, v)                            # ... and the decay starts there
        if s >= end:
            assert v == (lr if schedule == "constant" else min_lr), (s, v)
    for (s0, v0), (s1, v1) in zip(zip(steps, values), zip(steps[1:], values[1:])):
        if s1 < w:
            assert v0 < v1, (s0, v0, s1, v1)                  # strictly increasing through the warmup
        elif s0 >= w:
            assert v0 >= v1, (s0, v0, s1, v1)                 # non-increasing after it
    return dict(zip(steps, values))


# --- the grid, every schedule ----------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("w, m", GRID)
def test_invariants_on_grid(schedule, w, m):
    check_invariants(schedule, w, m, steps_to_check(w, m))


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("w, m", GRID)
def test_boundaries(schedule, w, m):
    """The named boundary steps, each explicitly."""
    at = {s: lr_at(s, lr=LR, warmup=w, max_steps=m, min_lr=MIN_LR, schedule=schedule)
          for s in (0, w - 1, w, m - 1, m, m + 1, 10 * m) if s >= 0}
    assert at[0] > 0 and at[0] == pytest.approx(LR / w if w else LR, rel=1e-15)   # never 0 at step 0
    if w > 0:
        assert at[w - 1] == LR
    if w < m:
        assert at[w] == LR
    elif schedule != "constant":
        assert at[w] == MIN_LR                                # warmup >= max_steps: straight to min_lr after it
    after = LR if schedule == "constant" else MIN_LR
    for s in (m, m + 1, 10 * m):
        assert at[s] == (after if s >= w else LR * ((s + 1) / w)), s
    if w < m - 1 and schedule in ("cosine", "linear"):
        assert MIN_LR < at[m - 1] < LR                        # still decaying one step before the end


# --- properties ------------------------------------------------------------------------------------------

schedules = st.sampled_from(SCHEDULES)
lrs = st.floats(1e-8, 10.0)
fractions = st.floats(0.0, 1.0)                # min_lr = fraction * lr
sizes = st.one_of(st.integers(0, 30), st.integers(0, 10**12))


@settings(max_examples=400, deadline=None)
@given(schedule=schedules, lr=lrs, frac=fractions, w=sizes, m=sizes.map(lambda n: max(n, 1)),
       s=st.one_of(st.integers(0, 40), st.integers(0, 10**13)))
def test_step_and_its_neighbours(schedule, lr, frac, w, m, s):
    min_lr = max(frac * lr, lr * 1e-6)         # min_lr > 0, so every value must be > 0
    steps = sorted({max(s - 1, 0), s, s + 1, w, max(w - 1, 0), m, max(w, m)})
    check_invariants(schedule, w, m, steps, lr=lr, min_lr=min_lr)


@settings(max_examples=300, deadline=None)
@given(schedule=schedules, lr=lrs, frac=fractions, w=sizes, m=sizes.map(lambda n: max(n, 1)),
       a=st.integers(0, 10**13), b=st.integers(0, 10**13))
def test_any_two_steps_are_ordered(schedule, lr, frac, w, m, a, b):
    """Monotone between any two steps, not only neighbours: up within the warmup, down after it."""
    a, b = sorted((a, b))
    va, vb = (lr_at(s, lr=lr, warmup=w, max_steps=m, min_lr=frac * lr, schedule=schedule) for s in (a, b))
    if b < w:
        assert va < vb or a == b
    elif a >= w:
        assert va >= vb
    assert 0 <= va <= lr and 0 <= vb <= lr


@settings(max_examples=200, deadline=None)
@given(schedule=schedules, w=st.integers(0, 50), m=st.integers(1, 50))
def test_dense_small_schedules(schedule, w, m):
    check_invariants(schedule, w, m, list(range(10 * max(w, m) + 2)))


@settings(max_examples=200, deadline=None)
@given(lr=lrs, frac=fractions, w=st.integers(0, 10**9), half=st.integers(1, 10**9))
def test_midpoints(lr, frac, w, half):
    """Cosine and linear are at (lr + min_lr) / 2 halfway through the decay."""
    min_lr, m = frac * lr, w + 2 * half
    for schedule in ("cosine", "linear"):
        got = lr_at(w + half, lr=lr, warmup=w, max_steps=m, min_lr=min_lr, schedule=schedule)
        assert got == pytest.approx((lr + min_lr) / 2, rel=1e-12, abs=1e-300)


@settings(max_examples=200, deadline=None)
@given(lr=lrs, frac=fractions, w=st.integers(0, 10**6), n=st.integers(1, 10**6), k=st.integers(0, 10**6))
def test_cosine_is_symmetric(lr, frac, w, n, k):
    """lr(w + k) + lr(m - k) == lr + min_lr: the half-cosine is point-symmetric about its midpoint."""
    m, k = w + n, k % n + (k % n == 0)          # 1 <= k <= n, so both steps are inside the decay or at its end
    at = [lr_at(s, lr=lr, warmup=w, max_steps=m, min_lr=frac * lr) for s in (w + k, m - k)]
    assert sum(at) == pytest.approx(lr + frac * lr, rel=1e-12, abs=1e-300)


@settings(max_examples=200, deadline=None)
@given(lr=lrs, frac=fractions, w=sizes, m=sizes.map(lambda n: max(n, 1)), s=st.integers(0, 10**13))
def test_wsd_extremes(lr, frac, w, m, s):
    """wsd with decay_steps = max_steps is the linear schedule; with decay_steps = 1 it holds lr until max_steps."""
    kw = dict(lr=lr, warmup=w, max_steps=m, min_lr=frac * lr)
    assert lr_at(s, schedule="wsd", decay_steps=m, **kw) == lr_at(s, schedule="linear", **kw)
    one = lr_at(s, schedule="wsd", decay_steps=1, **kw)
    assert one == (lr_at(s, schedule="constant", **kw) if s < max(w, m) else frac * lr)


@settings(max_examples=200, deadline=None)
@given(schedule=schedules, w=st.integers(0, 10**6), m=st.integers(1, 10**6), s=st.integers(0, 10**7),
       dtype=st.sampled_from([np.int32, np.int64, np.uint32, np.uint64]))
def test_numpy_integers_are_accepted(schedule, w, m, s, dtype):
    want = lr_at(s, lr=LR, warmup=w, max_steps=m, schedule=schedule, decay_steps=max(1, m // 3))
    got = lr_at(dtype(s), lr=np.float64(LR), warmup=dtype(w), max_steps=dtype(m), schedule=schedule,
                decay_steps=dtype(max(1, m // 3)))
    assert got == want and type(got) is float


# --- exact values ----------------------------------------------------------------------------------------

W, M = 10, 110   # a 100-step decay after a 10-step warmup; lr 1, min_lr 0.1


@pytest.mark.parametrize("schedule, step, want", [
    *[(name, s, (s + 1) / 10) for name in SCHEDULES for s in (0, 4, 9)],
    ("cosine", 10, 1.0), ("cosine", 60, 0.55), ("cosine", 35, 0.1 + 0.45 * (1 + math.cos(math.pi / 4))),
    ("cosine", 109, 0.1 + 0.45 * (1 + math.cos(math.pi * 0.99))), ("cosine", 110, 0.1), ("cosine", 1100, 0.1),
    ("linear", 10, 1.0), ("linear", 60, 0.55), ("linear", 35, 0.775), ("linear", 109, 0.109),
    ("linear", 110, 0.1), ("linear", 111, 0.1), ("linear", 1100, 0.1),
    ("constant", 10, 1.0), ("constant", 109, 1.0), ("constant", 110, 1.0), ("constant", 1100, 1.0),
    # wsd, default decay_steps = 110 // 5 = 22: stable at lr up to step 88, then 22 linear steps to min_lr
    ("wsd", 10, 1.0), ("wsd", 60, 1.0), ("wsd", 87, 1.0), ("wsd", 88, 1.0), ("wsd", 99, 0.55),
    ("wsd", 109, 1 - 0.9 * 21 / 22), ("wsd", 110, 0.1), ("wsd", 1100, 0.1),
])
def test_exact_values(schedule, step, want):
    got = lr_at(step, lr=1.0, warmup=W, max_steps=M, min_lr=0.1, schedule=schedule)
    assert got == pytest.approx(want, rel=1e-12)


def test_defaults():
    """min_lr defaults to lr / 10, schedule to cosine, wsd's decay_steps to max(1, max_steps // 5)."""
    assert lr_at(100, lr=3e-4, warmup=0, max_steps=100) == 3e-4 / 10
    assert lr_at(30, lr=3e-4, warmup=10, max_steps=100) == lr_at(30, lr=3e-4, warmup=10, max_steps=100,
                                                                 min_lr=3e-5, schedule="cosine")
    for m, d in ((100, 20), (4, 1), (1, 1), (9, 1), (10, 2)):
        for s in range(2 * m):
            kw = dict(lr=1.0, warmup=0, max_steps=m, schedule="wsd")
            assert lr_at(s, **kw) == lr_at(s, decay_steps=d, **kw), (m, s)


def test_default_wsd_decays_over_the_last_fifth():
    at = [lr_at(s, lr=1.0, warmup=5, max_steps=100, min_lr=0.0, schedule="wsd") for s in range(101)]
    assert at[5:81] == [1.0] * 76 and at[80] == 1.0 and at[81] < 1.0
    assert at[90] == pytest.approx(0.5) and at[100] == 0.0


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_max_steps_one(schedule):
    tail = 1.0 if schedule == "constant" else 0.1
    assert [lr_at(s, lr=1.0, warmup=0, max_steps=1, schedule=schedule) for s in range(3)] == [1.0, tail, tail]
    assert [lr_at(s, lr=1.0, warmup=1, max_steps=1, schedule=schedule) for s in range(3)] == [1.0, tail, tail]
    assert [lr_at(s, lr=1.0, warmup=2, max_steps=1, schedule=schedule) for s in range(4)] == [0.5, 1.0, tail, tail]


@pytest.mark.parametrize("schedule", DECAYING)
def test_warmup_at_or_past_max_steps(schedule):
    """The documented choice: the warmup runs as given up to lr, then min_lr from max(warmup, max_steps) on."""
    kw = dict(lr=1.0, min_lr=0.1, schedule=schedule)
    assert [lr_at(s, warmup=5, max_steps=5, **kw) for s in range(7)] == [0.2, 0.4, 0.6, 0.8, 1.0, 0.1, 0.1]
    assert [lr_at(s, warmup=4, max_steps=5, **kw) for s in range(7)] == [0.25, 0.5, 0.75, 1.0, 1.0, 0.1, 0.1]
    past = [lr_at(s, warmup=8, max_steps=5, **kw) for s in range(10)]
    assert past == [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 0.1, 0.1]


@pytest.mark.parametrize("lr, min_lr", [(0.09386864817836715, 0.002660939300388733),
                                        (0.4896986235270536, 0.014482819145456599)])
def test_end_of_long_cosine_stays_at_or_above_min_lr(lr, min_lr):
    """Near the end of a 10**12-step cosine, 1 - cos rounds to 2 and lr - (lr - min_lr) falls an ulp below
    min_lr for these pairs; the result must still be min_lr, not less."""
    m = 10**12
    assert lr - (lr - min_lr) < min_lr          # the rounding this test is about
    for s in (m - 10, m - 2, m - 1):
        assert lr_at(s, lr=lr, warmup=0, max_steps=m, min_lr=min_lr) == min_lr


def test_min_lr_zero_and_min_lr_equal_lr():
    assert lr_at(10, lr=1.0, warmup=2, max_steps=10, min_lr=0.0) == 0.0
    assert lr_at(0, lr=1.0, warmup=2, max_steps=10, min_lr=0.0) == 0.5
    for schedule in SCHEDULES:
        flat = [lr_at(s, lr=1.0, warmup=0, max_steps=10, min_lr=1.0, schedule=schedule) for s in range(20)]
        assert flat == [1.0] * 20


# --- validation ------------------------------------------------------------------------------------------

GOOD = dict(step=5, lr=LR, warmup=2, max_steps=100, min_lr=MIN_LR, schedule="cosine", decay_steps=10)


@pytest.mark.parametrize("name, value", [
    ("step", -1), ("step", 1.0), ("step", True), ("step", "3"), ("step", None), ("step", np.float64(2.0)),
    ("lr", 0), ("lr", 0.0), ("lr", -1e-3), ("lr", math.inf), ("lr", math.nan), ("lr", True), ("lr", "0.1"),
    ("lr", None), ("lr", np.True_),
    ("warmup", -1), ("warmup", 2.5), ("warmup", np.True_), ("warmup", False), ("warmup", np.int64(-3)),
    ("max_steps", 0), ("max_steps", -5), ("max_steps", 10.0), ("max_steps", False), ("max_steps", None),
    ("min_lr", -1e-9), ("min_lr", 2 * LR), ("min_lr", math.nan), ("min_lr", math.inf), ("min_lr", "x"),
    ("min_lr", True),
    ("schedule", "cos"), ("schedule", "Cosine"), ("schedule", None), ("schedule", ""), ("schedule", 1),
    ("decay_steps", 0), ("decay_steps", -1), ("decay_steps", 101), ("decay_steps", 1.5), ("decay_steps", True),
])
def test_validation_names_the_argument_and_value(name, value):
    with pytest.raises(ValueError) as info:
        lr_at(**{**GOOD, name: value})
    message = str(info.value)
    assert message.startswith(f"lr_at: {name} must "), message
    assert f"(got {value!r})" in message, message


def test_schedule_error_lists_the_valid_names():
    with pytest.raises(ValueError, match="schedule") as info:
        lr_at(0, lr=1.0, warmup=0, max_steps=10, schedule="warmup_cosine")
    for name in SCHEDULES:
        assert repr(name) in str(info.value)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_decay_steps_is_checked_for_every_schedule(schedule):
    with pytest.raises(ValueError, match="decay_steps"):
        lr_at(0, lr=1.0, warmup=0, max_steps=10, schedule=schedule, decay_steps=11)


def test_step_past_max_steps_is_valid_and_keyword_only():
    assert lr_at(10**18, lr=1.0, warmup=0, max_steps=1) == 0.1
    with pytest.raises(TypeError):
        lr_at(0, 1.0, 0, 10)   # everything after step is keyword-only


def test_module_layout():
    assert SCHEDULES == ("cosine", "linear", "constant", "wsd")
    assert "lr_at" in optim.__all__ and "the learning-rate schedules" in optim.__doc__


def test_seq_len_schedule():
    from cllm.train.batches import seq_len_at, split_windows

    lengths = [seq_len_at(p / 100, 512, 64, 0.6) for p in range(100)]
    assert lengths[:20] == [64] * 20 and lengths[20:40] == [128] * 20 and lengths[40:60] == [256] * 20
    assert lengths[60:] == [512] * 40 and lengths == sorted(lengths)
    assert seq_len_at(0.3, 512, None, 0.6) == 512 and seq_len_at(0.0, 512, 512, 0.5) == 512
    assert seq_len_at(0.99, 512, 64, 1.0) == 256 and seq_len_at(1.0, 512, 64, 1.0) == 512
    x = np.arange(2 * 8, dtype=np.int32).reshape(2, 8)
    xs, ys = split_windows(x, x + 1, 4)
    assert xs.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    assert np.array_equal(ys, xs + 1)


def test_train_config_new_options():
    from cllm import TrainConfig

    with pytest.raises(ValueError, match="seq_len_start must be seq_len / 2"):
        TrainConfig(seq_len=512, seq_len_start=96)
    with pytest.raises(ValueError, match="optimizer must be 'adamw' or 'muon'"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="qk_norm is an option of arch='llama'"):
        TrainConfig(qk_norm=True)
    with pytest.raises(ValueError, match="arch is the ModelConfig's to say"):
        TrainConfig(model=cllm.ModelConfig.preset("tiny"), arch="llama")
    assert TrainConfig(arch="llama", qk_norm=True, optimizer="muon", seq_len_start=64).seq_len_warmup == 0.5
