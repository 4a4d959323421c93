import inspect
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from afl.rules import staleness

# (function, tau, params, expected by hand)
HAND = [
    (staleness.constant, 0, {}, 1.0),
    (staleness.constant, 7, {}, 1.0),
    (staleness.polynomial, 0, {}, 1.0),
    (staleness.polynomial, 3, {"a": 0.5}, 0.5),  # 4^-0.5
    (staleness.polynomial, 3, {}, 0.5),  # default a = 0.5
    (staleness.polynomial, 7, {"a": 1.0}, 0.125),  # 8^-1
    (staleness.polynomial, 8, {"a": 2.0}, 1 / 81),  # 9^-2
    (staleness.polynomial, 5, {"a": 0.0}, 1.0),  # a = 0: no discount
    (staleness.polynomial, 0.44, {"a": 1.0}, 1 / 1.44),  # fractional staleness (a mean)
    (staleness.hinge, 0, {}, 1.0),
    (staleness.hinge, 10, {"a": 1.0, "b": 10}, 1.0),  # tau = b: still 1
    (staleness.hinge, 11, {"a": 1.0, "b": 10}, 0.5),  # 1 / (1 * 1 + 1)
    (staleness.hinge, 12, {"a": 1.0, "b": 10}, 1 / 3),  # 1 / (1 * 2 + 1)
    (staleness.hinge, 12, {}, 1 / 3),  # defaults a = 1, b = 10
    (staleness.hinge, 11, {"a": 0.5, "b": 10}, 2 / 3),  # 1 / (0.5 * 1 + 1)
    (staleness.hinge, 3, {"a": 2.0, "b": 0}, 1 / 7),  # 1 / (2 * 3 + 1)
    (staleness.hinge, 4, {"a": 1.0, "b": 4.5}, 1.0),  # tau < b
    (staleness.fedbuff, 0, {}, 1.0),
    (staleness.fedbuff, 3, {}, 0.5),  # 1 / sqrt(4)
    (staleness.fedbuff, 8, {}, 1 / 3),  # 1 / sqrt(9)
    (staleness.inverse_linear, 0, {}, 1.0),
    (staleness.inverse_linear, 9, {}, 0.1),  # 1 / (1 + 9)
    (staleness.inverse_linear, 4, {"beta": 0.5}, 1 / 3),  # 1 / (1 + 2)
    (staleness.inverse_linear, 4, {"beta": 0.0}, 1.0),
    (staleness.exponential, 0, {}, 1.0),
    (staleness.exponential, 1, {}, math.exp(-1)),  # 0.36787944...
    (staleness.exponential, 2, {"beta": 0.5}, math.exp(-1)),
    (staleness.exponential, 3, {"beta": 0.0}, 1.0),
]

# Vectorised (NumPy's SIMD loops, SVML on AVX-512 CPUs) and scalar (libm) evaluation of one formula
# agree to a few units in the last place, not bitwise: which loop runs depends on the CPU.
ULPS = 1e-15


@pytest.mark.parametrize(("fn", "tau", "params", "expected"), HAND)
def test_hand_computed_values(fn, tau, params, expected):
    value = fn(tau, **params)
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("fn", "tau", "params", "expected"), HAND)
def test_make_binds_the_same_function(fn, tau, params, expected):
    name = next(k for k, f in staleness.FUNCTIONS.items() if f is fn)
    s = staleness.make(name, **params)
    assert s(tau) == pytest.approx(expected, rel=1e-12)


def test_fedbuff_is_polynomial_with_half():
    taus = np.arange(50)
    np.testing.assert_allclose(staleness.fedbuff(taus), staleness.polynomial(taus, a=0.5), rtol=1e-15)


@pytest.mark.parametrize("name", list(staleness.FUNCTIONS))
def test_vectorised_equals_elementwise(name):
    fn = staleness.make(name)
    taus = np.array([[0, 1, 2, 5], [10, 11, 12.5, 100]])
    out = fn(taus)
    assert isinstance(out, np.ndarray) and out.shape == taus.shape
    expected = np.array([[fn(float(t)) for t in row] for row in taus])
    np.testing.assert_allclose(out, expected, rtol=ULPS, atol=0)


@pytest.mark.parametrize("name", list(staleness.FUNCTIONS))
def test_numpy_scalars_and_ints_give_floats(name):
    fn = staleness.make(name)
    assert isinstance(fn(np.int64(3)), float)
    assert fn(np.int64(3)) == fn(3) == fn(3.0)


@pytest.mark.parametrize("name", list(staleness.FUNCTIONS))
@given(taus=st.lists(st.integers(0, 1000), min_size=2, max_size=20))
def test_values_in_unit_interval_and_non_increasing(name, taus):
    fn = staleness.make(name)
    ordered = np.sort(np.array(taus))
    values = fn(ordered)
    assert np.all((values >= 0) & (values <= 1))
    assert np.all(np.diff(values) <= 0)
    assert fn(0) == 1.0


def test_params_match_function_defaults():
    assert set(staleness.PARAMS) == set(staleness.FUNCTIONS)
    for name, fn in staleness.FUNCTIONS.items():
        signature = inspect.signature(fn).parameters
        assert list(signature)[0] == "tau"
        defaults = {k: p.default for k, p in signature.items() if k != "tau"}
        assert defaults == staleness.PARAMS[name]


def test_make_uses_defaults_and_overrides():
    assert staleness.make("hinge")(12) == pytest.approx(1 / 3)
    assert staleness.make("hinge", b=5)(7) == pytest.approx(1 / 3)  # 1 / (1 * 2 + 1)
    assert staleness.make("hinge", a=2.0, b=5)(7) == pytest.approx(0.2)  # 1 / (2 * 2 + 1)
    assert staleness.make("polynomial", a=1)(1) == 0.5


def test_unknown_name_lists_the_allowed_ones():
    with pytest.raises(ValueError) as exc:
        staleness.make("linear")
    for name in staleness.FUNCTIONS:
        assert name in str(exc.value)


@pytest.mark.parametrize(("name", "param", "allowed"), [
    ("polynomial", "beta", "a"),
    ("hinge", "beta", "a, b"),
    ("exponential", "a", "beta"),
    ("fedbuff", "a", "no parameters"),
    ("constant", "b", "no parameters"),
])
def test_unknown_parameter_lists_the_allowed_ones(name, param, allowed):
    with pytest.raises(ValueError, match=f"takes {allowed}"):
        staleness.make(name, **{param: 1.0})


@pytest.mark.parametrize(("name", "params"), [
    ("polynomial", {"a": -0.1}),
    ("hinge", {"a": 0.0}),
    ("hinge", {"a": -1.0}),
    ("hinge", {"b": -1}),
    ("inverse_linear", {"beta": -0.5}),
    ("exponential", {"beta": -1.0}),
    ("polynomial", {"a": float("nan")}),
    ("exponential", {"beta": float("inf")}),
    ("polynomial", {"a": "0.5"}),
    ("polynomial", {"a": True}),
])
def test_out_of_range_or_bad_parameters_raise(name, params):
    with pytest.raises(ValueError, match=next(iter(params))):
        staleness.make(name, **params)


def test_direct_calls_check_parameters():
    with pytest.raises(ValueError, match="a must be > 0"):
        staleness.hinge(3, a=0.0)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        staleness.exponential(np.arange(3), beta=-1.0)


@pytest.mark.parametrize("name", list(staleness.FUNCTIONS))
def test_negative_staleness_raises(name):
    fn = staleness.make(name)
    with pytest.raises(ValueError, match="tau"):
        fn(-1)
    with pytest.raises(ValueError, match="tau"):
        fn(np.array([0, 1, -2]))
