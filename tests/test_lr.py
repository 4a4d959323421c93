import math

import numpy as np
import pytest

from afl.rules import lr

# Vectorised (NumPy's SIMD loops, SVML on AVX-512 CPUs) and scalar (libm) evaluation of one formula
# agree to a few units in the last place, not bitwise: which loop runs depends on the CPU.
ULPS = 1e-15


@pytest.mark.parametrize(("args", "expected"), [
    ((1e-3, 0, 0.0), 1e-3),  # 1e-3 / (sqrt(1) * 1)
    ((1e-3, 3, 1.5, 0.01), 1e-3 / (2 * 1.015)),  # sqrt(4) = 2, 1 + 0.01 * 1.5 = 1.015
    ((1e-3, 3, 1.5), 1e-3 / (2 * 1.015)),  # default alpha = 0.01
    ((0.1, 8, 10.0, 0.1), 0.1 / 6),  # sqrt(9) * (1 + 1) = 6
    ((0.5, 0, 2.0, 0.0), 0.5),  # alpha = 0: no delay discount
    ((0.2, 1, 0.0), 0.2 / math.sqrt(2)),
])
def test_delay_aware_hand_computed(args, expected):
    value = lr.delay_aware(*args)
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=1e-12)


def test_delay_aware_keywords():
    assert lr.delay_aware(1e-3, epoch=3, delay=1.5, alpha=0.01) == pytest.approx(4.926108374384236e-4, rel=1e-12)


def test_delay_aware_vectorised_equals_elementwise():
    epochs = np.array([0, 1, 2, 3, 9])
    delays = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    out = lr.delay_aware(1e-3, epochs, delays, 0.01)
    assert isinstance(out, np.ndarray) and out.shape == (5,)
    expected = [lr.delay_aware(1e-3, int(e), float(d), 0.01) for e, d in zip(epochs, delays)]
    np.testing.assert_allclose(out, expected, rtol=ULPS, atol=0)
    np.testing.assert_allclose(lr.delay_aware(1.0, np.arange(4), 0.0), [1, 1 / math.sqrt(2), 1 / math.sqrt(3), 0.5])


def test_delay_aware_decreases_with_epoch_and_delay():
    grid = lr.delay_aware(1e-3, np.arange(10)[:, None], np.linspace(0, 2, 5)[None, :])
    assert grid.shape == (10, 5)
    assert np.all(np.diff(grid, axis=0) < 0) and np.all(np.diff(grid, axis=1) < 0)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"gamma0": -1e-3, "epoch": 0, "delay": 0}, "gamma0"),
    ({"gamma0": 1e-3, "epoch": -1, "delay": 0}, "epoch"),
    ({"gamma0": 1e-3, "epoch": 0, "delay": -0.5}, "delay"),
    ({"gamma0": 1e-3, "epoch": 0, "delay": 1, "alpha": -0.01}, "alpha"),
    ({"gamma0": 1e-3, "epoch": 0, "delay": float("nan")}, "delay"),
    ({"gamma0": 1e-3, "epoch": np.array([0, -1]), "delay": 0}, "epoch"),
])
def test_delay_aware_invalid(kwargs, name):
    with pytest.raises(ValueError, match=name):
        lr.delay_aware(**kwargs)


@pytest.mark.parametrize(("args", "expected"), [
    ((0.1, 0, 5), 0.1),
    ((0.1, 3, 5), 0.1),
    ((0.1, 5, 5), 0.1),  # tau = tau_c: full step
    ((0.1, 6, 5), 0.1 * 5 / 6),
    ((0.1, 10, 5), 0.05),  # min(0.1, 0.1 * 5 / 10)
    ((0.1, 5, 5, True), 0.1),  # tau = tau_c is kept when dropping
    ((0.1, 6, 5, True), 0.0),  # dropped
    ((0.1, 0, 0), 0.1),  # tau_c = 0: only fresh updates count
    ((0.1, 1, 0), 0.0),  # min(0.1, 0.1 * 0 / 1)
    ((2.0, 40, 10), 0.5),  # 2 * 10 / 40
])
def test_delay_adaptive_hand_computed(args, expected):
    value = lr.delay_adaptive(*args)
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=1e-12, abs=0)


def test_delay_adaptive_vectorised_equals_elementwise():
    taus = np.array([0, 2, 4, 5, 6, 8, 20, 100])
    for drop in (False, True):
        out = lr.delay_adaptive(0.3, taus, 5, drop)
        assert isinstance(out, np.ndarray) and out.shape == taus.shape
        np.testing.assert_allclose(out, [lr.delay_adaptive(0.3, int(t), 5, drop) for t in taus], rtol=ULPS, atol=0)
        assert np.all(out <= 0.3)
    with np.errstate(all="raise"):
        np.testing.assert_array_equal(lr.delay_adaptive(1.0, np.array([0, 0, 3]), np.array([0, 2, 0])), [1, 1, 0])


@pytest.mark.parametrize(("args", "name"), [
    ((-0.1, 1, 5), "eta"),
    ((0.1, -1, 5), "tau"),
    ((0.1, 1, -5), "tau_c"),
])
def test_delay_adaptive_invalid(args, name):
    with pytest.raises(ValueError, match=name):
        lr.delay_adaptive(*args)


def test_schedules_tuple():
    assert lr.SCHEDULES == ("constant", "cosine", "step")


@pytest.mark.parametrize(("args", "kwargs", "expected"), [
    (("constant", 0, 100), {}, 1.0),
    (("constant", 12345, None), {}, 1.0),
    (("cosine", 0, 100), {}, 1.0),  # cos(0) = 1
    (("cosine", 25, 100), {}, 0.5 + math.sqrt(2) / 4),  # 0.5 * (1 + cos(pi / 4))
    (("cosine", 50, 100), {}, 0.5),  # 0.5 * (1 + cos(pi / 2))
    (("cosine", 100, 100), {}, 0.0),  # 0.5 * (1 + cos(pi))
    (("cosine", 150, 100), {}, 0.0),  # past the plan: stays at the floor
    (("cosine", 50, 100), {"min_factor": 0.1}, 0.55),  # 0.1 + 0.9 * 0.5
    (("cosine", 100, 100), {"min_factor": 0.1}, 0.1),
    (("step", 0, None), {"step_every": 100}, 1.0),
    (("step", 99, None), {"step_every": 100}, 1.0),
    (("step", 100, None), {"step_every": 100}, 0.1),  # 0.1 ** 1
    (("step", 250, 1000), {"step_every": 100}, 0.01),  # 0.1 ** 2
    (("step", 30, None), {"step_every": 10, "gamma": 0.5}, 0.125),  # 0.5 ** 3
    (("step", 30, None), {"step_every": 10, "gamma": 1.0}, 1.0),
])
def test_schedule_factor_hand_computed(args, kwargs, expected):
    value = lr.schedule_factor(*args, **kwargs)
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("name", "kwargs"), [
    ("constant", {}),
    ("cosine", {"min_factor": 0.05}),
    ("step", {"step_every": 7, "gamma": 0.5}),
])
def test_schedule_factor_vectorised_equals_elementwise(name, kwargs):
    steps = np.arange(0, 120)
    out = lr.schedule_factor(name, steps, 100, **kwargs)
    assert isinstance(out, np.ndarray) and out.shape == steps.shape
    np.testing.assert_allclose(out, [lr.schedule_factor(name, int(s), 100, **kwargs) for s in steps], rtol=ULPS,
                               atol=0)
    assert np.all(out <= 1) and np.all(out > 0)
    assert np.all(np.diff(out) <= 0)


@pytest.mark.parametrize(("args", "kwargs", "match"), [
    (("linear", 0, 100), {}, "constant, cosine, step"),
    (("cosine", 0, None), {}, "total"),
    (("cosine", 0, 0), {}, "total"),
    (("cosine", 0, 100), {"min_factor": 1.5}, "min_factor"),
    (("cosine", 0, 100), {"min_factor": -0.1}, "min_factor"),
    (("step", 0, 100), {}, "step_every"),
    (("step", 0, 100), {"step_every": 0}, "step_every"),
    (("step", 0, 100), {"step_every": 10, "gamma": 0.0}, "gamma"),
    (("step", 0, 100), {"step_every": 10, "gamma": 1.5}, "gamma"),
    (("constant", -1, 100), {}, "step"),
])
def test_schedule_factor_invalid(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        lr.schedule_factor(*args, **kwargs)
