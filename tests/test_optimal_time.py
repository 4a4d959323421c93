"""Tests for afl.queueing.optimal: Tyurin and Richtárik's optimal time with fixed compute times.

Every expected value is computed by hand in the comments beside it.
"""

import heapq
import math

import numpy as np
import pytest

from afl.config import load_config
from afl.errors import AflError
from afl.queueing.optimal import (
    OptimalTime,
    OptimalTimeError,
    batch_size,
    collect_time_fixed,
    collection_time,
    harmonic_prefix,
    mean_compute_times,
    optimal_time,
    time_curve,
)
from afl.sim.timing import client_rates
from helpers import TWO_GROUPS

# --------------------------------------------------------------------------- H_m


def test_harmonic_prefix_sorts_the_times_first():
    # tau = [4, 1, 1] sorted: [1, 1, 4].
    # H_1 = 1/(1/1) = 1; H_2 = 2/(1 + 1) = 1; H_3 = 3/(1 + 1 + 1/4) = 3/2.25 = 4/3.
    np.testing.assert_allclose(harmonic_prefix([4, 1, 1]), [1.0, 1.0, 4 / 3], rtol=1e-15)
    # tau = [1, 2, 4]: H_1 = 1; H_2 = 2/(1 + 1/2) = 4/3; H_3 = 3/(1 + 1/2 + 1/4) = 3/1.75 = 12/7.
    np.testing.assert_allclose(harmonic_prefix([4, 2, 1]), [1.0, 4 / 3, 12 / 7], rtol=1e-15)


def test_harmonic_prefix_is_nondecreasing_and_below_the_mth_time():
    tau = np.random.default_rng(0).lognormal(0, 1, size=200)
    h = harmonic_prefix(tau)
    assert h[0] == tau.min()
    assert np.all(np.diff(h) >= -1e-12)
    assert np.all(h <= np.sort(tau) * (1 + 1e-12))  # the harmonic mean of the m fastest is at most tau_(m)


# --------------------------------------------------------------------------- t(m), m*


def test_time_curve_by_hand():
    # tau = [4, 1, 1], L = Delta = 1, eps = 0.1, sigma2 = 0.2:
    # L Delta/eps = 10, sigma^2 L Delta/eps^2 = 0.2/0.01 = 20.
    # t(1) = 1 (10 + 20/1) = 30; t(2) = 1 (10 + 20/2) = 20; t(3) = 4/3 (10 + 20/3) = 4/3 * 50/3 = 200/9.
    np.testing.assert_allclose(time_curve([4, 1, 1], 1, 1, 0.2, 0.1), [30, 20, 200 / 9], rtol=1e-12)
    res = optimal_time([4, 1, 1], 1, 1, 0.2, 0.1)
    assert isinstance(res, OptimalTime)
    assert res.m_star == 2 and res.time == pytest.approx(20, rel=1e-12)
    assert res.batch == 2  # ceil(0.2/0.1) = 2
    assert res.iterations == pytest.approx(10)  # L Delta/eps
    np.testing.assert_allclose(res.curve, [30, 20, 200 / 9], rtol=1e-12)
    # The constants scale it: L = 2, Delta = 3 multiply every t(m) by 6 and keep m*.
    res6 = optimal_time([4, 1, 1], 2, 3, 0.2, 0.1)
    assert res6.m_star == 2 and res6.time == pytest.approx(120, rel=1e-12) and res6.iterations == pytest.approx(60)


@pytest.mark.parametrize("sigma2, curve, m_star", [
    # tau = [1, 2, 4], L = Delta = eps = 1: t(m) = H_m (1 + sigma^2/m), H = [1, 4/3, 12/7].
    (0.0, [1, 4 / 3, 12 / 7], 1),                            # no noise: the fastest worker alone
    (1.0, [2, 4 / 3 * 3 / 2, 12 / 7 * 4 / 3], 1),            # [2, 2, 16/7]: a tie at 1 and 2, the smaller wins
    (2.0, [3, 4 / 3 * 2, 12 / 7 * 5 / 3], 2),                # [3, 8/3, 20/7]
    (10.0, [11, 4 / 3 * 6, 12 / 7 * 13 / 3], 3),             # [11, 8, 52/7 = 7.43]: every worker
])
def test_best_m_moves_from_one_to_n_as_the_noise_grows(sigma2, curve, m_star):
    res = optimal_time([4, 1, 2], 1, 1, sigma2, 1)
    np.testing.assert_allclose(res.curve, curve, rtol=1e-12)
    assert res.m_star == m_star
    assert res.time == pytest.approx(min(curve), rel=1e-12)


def test_best_m_is_monotone_in_sigma2_and_one_without_noise():
    tau = np.sqrt(np.arange(1, 101))  # Tyurin and Richtárik's tau_i = sqrt(i)
    stars = [optimal_time(tau, 1, 1, s2, 0.01).m_star for s2 in [0, 1e-4, 1e-3, 1e-2, 0.1, 1, 10, 1e3]]
    assert stars[0] == 1 and stars[-1] == 100
    assert stars == sorted(stars) and len(set(stars)) > 3


def test_equal_times_tie_everywhere_without_noise():
    # tau = [2, 2, 2], sigma2 = 0: t(m) = 2 * 1 * 1/0.5 = 4 for every m; the smallest m wins.
    res = optimal_time([2, 2, 2], 1, 1, 0, 0.5)
    np.testing.assert_allclose(res.curve, [4, 4, 4], rtol=0)
    assert res.m_star == 1 and res.batch == 1  # max(1, ceil(0)) = 1


def test_all_workers_against_the_best_on_power_times():
    # tau_i = sqrt(i), i = 1..10, L = Delta = 1, eps = sigma2 = 0.01:
    # t(m) = H_m * 100 (1 + 1/m) = 100 (m + 1) / sum_{i<=m} 1/sqrt(i).
    # sums: 1, 1.70711, 2.28446, 2.78446; t = 200, 175.74, 175.10, 179.57: m* = 3.
    res = optimal_time(np.sqrt(np.arange(1, 11)), 1, 1, 0.01, 0.01)
    assert res.m_star == 3
    assert res.time == pytest.approx(400 / (1 + 1 / math.sqrt(2) + 1 / math.sqrt(3)), rel=1e-12)
    np.testing.assert_allclose(res.curve[:4], [200, 175.736, 175.097, 179.568], rtol=1e-5)
    assert res.batch == 1  # ceil(0.01/0.01) = 1


@pytest.mark.parametrize("sigma2, eps, S", [
    (0.0, 0.1, 1), (0.05, 0.1, 1), (0.2, 0.1, 2), (0.25, 0.1, 3), (1.0, 0.01, 100),
    (1.1, 0.1, 11),  # 1.1/0.1 = 11.000000000000002 in floating point: still 11
    (0.7, 0.1, 7),   # 6.999999999999999: 7
])
def test_batch_is_ceil_sigma2_over_eps_at_least_one(sigma2, eps, S):
    assert batch_size(sigma2, eps) == S
    assert optimal_time([1.0], 1, 1, sigma2, eps).batch == S


# --------------------------------------------------------------------------- collection times


def test_collection_time_by_hand():
    # tau = [1, 2, 4], H = [1, 4/3, 12/7]; t(R) = 2 min_m H_m (1 + R/m).
    # R = 2: [1 * 3, 4/3 * 2, 12/7 * 5/3] = [3, 8/3, 20/7]: min 8/3, t = 16/3.
    assert collection_time([4, 2, 1], 2) == pytest.approx(16 / 3, rel=1e-12)
    # R = 1: [2, 2, 16/7]: t = 4.
    assert collection_time([4, 2, 1], 1) == pytest.approx(4, rel=1e-12)
    # One worker of time 3, R = 5: 2 * 3 * 6 = 36.
    assert collection_time([3], 5) == pytest.approx(36)


@pytest.mark.parametrize("S, t", [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4), (8, 5), (11, 6)])
def test_collect_time_fixed_by_hand(S, t):
    # tau = [1, 2, 3]: finished by time t is floor(t) + floor(t/2) + floor(t/3):
    # t = 1: 1; t = 2: 2 + 1 = 3; t = 3: 3 + 1 + 1 = 5; t = 4: 4 + 2 + 1 = 7; t = 5: 5 + 2 + 1 = 8;
    # t = 6: 6 + 3 + 2 = 11 (nothing finishes strictly between these integers).
    assert collect_time_fixed([3, 1, 2], S) == t


def test_collect_time_fixed_small_cases():
    assert collect_time_fixed([2.5], 4) == 10.0  # one worker: S tau
    assert collect_time_fixed([1, 1, 1], 4) == 2.0  # 3 at t = 1, 6 at t = 2
    assert collect_time_fixed([1, 1, 1], 3) == 1.0
    # tau = [1, 10]: the slow worker adds its first gradient at 10, when the fast one has 10: S = 11 at 10.
    assert collect_time_fixed([1, 10], 11) == 10.0
    assert collect_time_fixed([1, 10], 12) == 11.0


def _heap_collect(tau, S):
    """The S-th completion of workers restarting at once: a heap of next finish times."""
    heap = [(t, t) for t in tau]
    heapq.heapify(heap)
    for _ in range(S):
        now, t = heapq.heappop(heap)
        heapq.heappush(heap, (now + t, t))
    return now


@pytest.mark.parametrize("seed", range(5))
def test_collect_time_fixed_against_a_heap_and_its_bounds(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    tau = rng.integers(1, 30, size=n) / 4.0  # multiples of 1/4: exact sums, many ties
    lam = float(np.sum(1 / tau))
    for S in [1, 2, 7, 50, 333]:
        t = collect_time_fixed(tau, S)
        assert t == pytest.approx(_heap_collect(tau, S), rel=1e-12)
        assert S / lam * (1 - 1e-12) <= t <= (S + n) / lam * (1 + 1e-12)  # floor(t/tau) in (t/tau - 1, t/tau]
        assert t <= collection_time(tau, S) / 2 * (1 + 1e-12)  # the m fastest finish S by H_m (1 + S/m)
        assert np.sum(np.floor(t / tau + 1e-9)) >= S and np.sum(np.floor(t * (1 - 1e-9) / tau)) < S


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("tau, message", [
    ([], "non-empty 1-D"),
    ([[1.0, 2.0]], "non-empty 1-D"),
    ([1.0, 0.0], "tau[1] = 0.0"),
    ([1.0, -2.0], "tau[1] = -2.0"),
    ([float("nan")], "finite and > 0"),
    ([1.0, float("inf")], "finite and > 0"),
    (["a"], "expected numbers"),
])
def test_bad_times_raise_value_errors(tau, message):
    for call in (lambda: harmonic_prefix(tau), lambda: collect_time_fixed(tau, 1), lambda: collection_time(tau, 1),
                 lambda: optimal_time(tau, 1, 1, 1, 0.1)):
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
            call()
        assert isinstance(info.value, AflError) and "; fix: " in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"eps": 0}, "eps: must be a finite number > 0"),
    ({"L": -1}, "L: must be a finite number > 0"),
    ({"delta": float("inf")}, "delta: must be a finite number > 0"),
    ({"sigma2": -0.1}, "sigma2: must be a finite number >= 0"),
    ({"sigma2": "x"}, "sigma2: expected a number"),
])
def test_bad_constants_raise_value_errors(kwargs, message):
    args = {"L": 1, "delta": 1, "sigma2": 1, "eps": 0.1, **kwargs}
    with pytest.raises(OptimalTimeError, match=message):
        time_curve([1.0, 2.0], **args)
    with pytest.raises(ValueError, match=message):
        optimal_time([1.0, 2.0], **args)


@pytest.mark.parametrize("count", [0, -1, 1.5, True, "3"])
def test_bad_counts_raise_value_errors(count):
    with pytest.raises(OptimalTimeError, match="expected an integer >= 1"):
        collection_time([1.0], count)
    with pytest.raises(OptimalTimeError, match="expected an integer >= 1"):
        collect_time_fixed([1.0], count)


# --------------------------------------------------------------------------- a config's times


def test_mean_compute_times_of_a_config():
    # uniform(1, 3) draws (mean 2), 3 local steps per task timed per step, rates 1 and 0.2,
    # download 0.5 and upload 0.25: 0.5 + 2 * 3 / 1 + 0.25 = 6.75 and 0.5 + 2 * 3 / 0.2 + 0.25 = 30.75.
    raw = {"data": {"num_clients": 4}, "algorithm": {"name": "fedasync", "concurrency": 2},
           "client": {"steps": 3, "epochs": None},
           "timing": {"distribution": "uniform", "low": 1, "high": 3, "per": "step", "download": 0.5,
                      "upload": 0.25, "rates": TWO_GROUPS}, "run": {"workload": "none"}}
    cfg = load_config(raw)
    rates = client_rates(cfg.timing.rates, 4, cfg.seed)
    np.testing.assert_allclose(mean_compute_times(cfg, rates), [6.75, 6.75, 30.75, 30.75], rtol=1e-15)
    # per task, a gradient rule, constant draws: tau_i = 1 / mu_i exactly.
    cfg = load_config({**raw, "algorithm": {"name": "asyncsgd", "concurrency": 2}, "client": {},
                       "timing": {"distribution": "constant", "rates": TWO_GROUPS}})
    np.testing.assert_allclose(mean_compute_times(cfg, rates), [1, 1, 5, 5], rtol=1e-15)


@pytest.mark.parametrize("timing, mean", [
    ({"distribution": "exponential"}, 1.0), ({"distribution": "constant"}, 1.0),
    ({"distribution": "lognormal", "sigma": 0.5}, 1.0), ({"distribution": "uniform", "low": 0.5, "high": 4.5}, 2.5),
])
def test_mean_service_matches_the_simulators_draws(timing, mean):
    from afl.sim.timing import ServiceDraws, mean_service

    cfg = load_config({"timing": timing, "run": {"workload": "none"}}).timing
    assert mean_service(cfg) == mean
    draws = ServiceDraws(cfg, 0)
    sample = np.array([draws(0, k) for k in range(20_000)])
    se = sample.std() / math.sqrt(sample.size)
    assert abs(sample.mean() - mean) < 5 * se + 1e-12


# --------------------------------------------------------------------------- against the simulator


@pytest.mark.parametrize("S", [1, 7, 23])
def test_rennala_first_step_takes_the_exact_collection_time(tmp_path, S):
    """Every worker starts at x^0 at time 0 and, while the model does not change, restarts at x^0:
    Rennala SGD's first step is at the S-th completion time, ``collect_time_fixed`` (its later steps
    differ, as workers still busy with x^{k-1} are not restarted)."""
    from helpers import train_tables

    raw = {"data": {"num_clients": 10}, "algorithm": {"name": "rennala", "concurrency": 10, "buffer_size": S},
           "timing": {"distribution": "constant", "rates": {"kind": "power", "exponent": 0.5}},
           "run": {"workload": "none", "updates": 3}}
    _, _, updates, _, clients = train_tables(tmp_path, raw)
    first = updates.loc[updates.version == 1, "time"].unique()
    assert first.tolist() == [pytest.approx(collect_time_fixed(1.0 / clients.rate.to_numpy(), S), rel=1e-12)]
