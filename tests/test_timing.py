"""Task durations and client rates (``afl.sim.timing``, SPEC section 2), checked directly.

A task at a client of rate ``mu`` takes ``download + S / mu + upload`` (times the number of local
steps with ``per: step``), where ``S`` is the client's keyed draw for a client of rate 1.
"""

import math

import numpy as np
import pytest
from scipy import stats

from afl.sim import timing
from afl.config import load_config
from afl.errors import ConfigError
from afl.rng import Stream, numpy_stream

DRAWS = 20_000


def timing_config(**keys):
    return load_config({"timing": keys, "client": {"steps": 7}, "run": {"workload": "none", "updates": 10}}).timing


def durations(cfg, mu: float, steps: int = 1, seed: int = 0, client: int = 3) -> np.ndarray:
    """``DRAWS`` task durations of one client of rate ``mu``: its tasks 0, 1, 2, ..."""
    draw = timing.ServiceDraws(cfg, seed)
    return np.array([timing.task_duration(cfg, mu, steps, draw(client, k)) for k in range(DRAWS)])


# ----------------------------------------------------------------------------- the draw distributions


def test_constant_draw_is_exactly_download_plus_one_over_mu_plus_upload():
    cfg = timing_config(distribution="constant", download=0.25, upload=0.5)
    draw = timing.ServiceDraws(cfg, seed=7)
    assert {draw(c, k) for c in range(5) for k in range(50)} == {1.0}
    assert timing.task_duration(cfg, 4.0, 1, draw(0, 0)) == 1.0  # 0.25 + 1/4 + 0.5
    assert timing.task_duration(cfg, 0.5, 1, draw(1, 3)) == 2.75  # 0.25 + 1/0.5 + 0.5


def test_uniform_draw_lies_in_low_high_over_mu():
    mu = 2.0
    cfg = timing_config(distribution="uniform", low=1.0, high=3.0)
    d = durations(cfg, mu)
    assert d.min() >= 1.0 / mu and d.max() <= 3.0 / mu
    # It fills the interval: the extremes come within 1% of its ends and the mean is its middle, 1.
    assert d.min() < 0.51 and d.max() > 1.49
    se = (2.0 / math.sqrt(12) / mu) / math.sqrt(DRAWS)  # std of U(0.5, 1.5) / sqrt(N)
    assert abs(d.mean() - 1.0) < 5 * se
    assert stats.kstest(d, stats.uniform(loc=0.5, scale=1.0).cdf).pvalue > 1e-3


def test_exponential_draw_has_mean_one_over_mu():
    mu = 0.2
    cfg = timing_config(distribution="exponential")
    d = durations(cfg, mu)
    assert d.min() > 0
    se = (1 / mu) / math.sqrt(DRAWS)  # Exp(mu) has std 1/mu
    assert abs(d.mean() - 1 / mu) < 5 * se, d.mean()
    assert abs(d.std() - 1 / mu) < 0.05 / mu  # std = mean: the queueing model's Exp(mu_i)
    assert stats.kstest(d, stats.expon(scale=1 / mu).cdf).pvalue > 1e-3


def test_lognormal_draw_has_mean_one_over_mu_and_log_std_sigma():
    mu, sigma = 4.0, 0.5
    cfg = timing_config(distribution="lognormal", sigma=sigma)
    d = durations(cfg, mu)
    std = math.sqrt(math.exp(sigma**2) - 1) / mu  # lognormal with mean 1/mu
    assert abs(d.mean() - 1 / mu) < 5 * std / math.sqrt(DRAWS), d.mean()
    logs = np.log(d * mu)  # log S ~ N(-sigma^2/2, sigma)
    assert abs(logs.mean() + sigma**2 / 2) < 5 * sigma / math.sqrt(DRAWS)
    assert abs(logs.std() - sigma) < 0.02
    assert stats.kstest(logs, stats.norm(loc=-sigma**2 / 2, scale=sigma).cdf).pvalue > 1e-3


@pytest.mark.parametrize("keys, law", [
    ({"distribution": "exponential"}, stats.expon()),
    ({"distribution": "uniform", "low": 0.5, "high": 2.0}, stats.uniform(0.5, 1.5)),
    ({"distribution": "lognormal", "sigma": 1.5}, stats.lognorm(1.5, scale=math.exp(-1.5**2 / 2))),
])
def test_service_cdf_is_the_law_of_the_draws(keys, law):
    cfg = timing_config(**keys)
    draw = timing.ServiceDraws(cfg, 0)
    s = np.array([draw(2, k) for k in range(DRAWS)])
    for q in (0.1, 0.5, 0.9, 0.99):
        t = float(law.ppf(q))
        assert timing.service_cdf(cfg, t) == pytest.approx(q, abs=1e-12)  # scipy's law, to rounding
        assert abs((s <= t).mean() - q) < 5 * math.sqrt(q * (1 - q) / DRAWS)  # and the draws'
    assert timing.service_cdf(cfg, 0.0) == 0.0
    constant = timing_config(distribution="constant")
    assert (timing.service_cdf(constant, 0.999), timing.service_cdf(constant, 1.0)) == (0.0, 1.0)


def test_download_and_upload_add_to_every_draw():
    plain = durations(timing_config(distribution="exponential"), 1.0)
    padded = durations(timing_config(distribution="exponential", download=0.3, upload=1.2), 1.0)
    np.testing.assert_allclose(padded - plain, 1.5, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- per task or per step


@pytest.mark.parametrize("distribution", ["constant", "uniform", "exponential", "lognormal"])
def test_per_step_timing_multiplies_the_compute_time_by_the_steps(distribution):
    per_task = timing_config(distribution=distribution, download=0.5, upload=0.25)
    per_step = timing_config(distribution=distribution, download=0.5, upload=0.25, per="step")
    draw = timing.ServiceDraws(per_step, seed=1)
    for k in range(20):
        s = draw(2, k)
        # per: task ignores the steps; per: step charges each of them
        assert timing.task_duration(per_task, 2.0, 7, s) == timing.task_duration(per_task, 2.0, 1, s)
        assert timing.task_duration(per_step, 2.0, 7, s) == pytest.approx(0.5 + 7 * s / 2.0 + 0.25, rel=1e-15)
    if distribution == "constant":
        assert timing.task_duration(per_step, 2.0, 7, draw(0, 0)) == 4.25  # 0.5 + 7 * 1/2 + 0.25


# ----------------------------------------------------------------------------- keyed streams


def test_draws_depend_only_on_seed_client_and_index():
    cfg = timing_config(distribution="exponential")
    fresh = timing.ServiceDraws(cfg, seed=3)
    expected = {(c, k): fresh(c, k) for c in range(4) for k in range(10)}
    # Another instance, asked in another order (clients interleaved, indices backwards): same numbers.
    other = timing.ServiceDraws(cfg, seed=3)
    order = [(c, k) for k in reversed(range(10)) for c in (3, 1, 0, 2)]
    assert {key: other(*key) for key in order} == expected
    # ... and asking twice gives the same number again (no hidden state advances).
    assert other(2, 5) == expected[2, 5]
    # Another seed, another client or another index: other numbers.
    reseeded = timing.ServiceDraws(cfg, seed=4)
    assert all(reseeded(c, k) != expected[c, k] for c, k in expected)
    assert len(set(expected.values())) == len(expected)


def test_the_same_uniform_feeds_every_distribution():
    # One u per (seed, client, k): the distributions differ only in the inverse CDF applied to it.
    draws = {d: timing.ServiceDraws(timing_config(distribution=d, low=0.0, high=1.0), seed=5)
             for d in ("exponential", "uniform")}
    for k in range(50):
        u = draws["uniform"](1, k)  # uniform(0, 1): u itself
        assert 0.0 < u < 1.0
        assert draws["exponential"](1, k) == pytest.approx(-math.log(u), rel=1e-12)


# ----------------------------------------------------------------------------- client rates


def rates(n: int, seed: int = 0, **keys) -> np.ndarray:
    cfg = load_config({"data": {"num_clients": n}, "algorithm": {"concurrency": 1}, "timing": {"rates": keys},
                       "client": {"steps": 7}, "run": {"workload": "none", "updates": 10}})  # reads a trace already
    return timing.client_rates(cfg.timing.rates, n, seed)


def test_constant_rates():
    np.testing.assert_array_equal(rates(5, kind="constant", value=2.5), [2.5] * 5)


def test_group_rates_in_client_order():
    groups = [{"fraction": 0.3, "rate": 1.0}, {"fraction": 0.7, "rate": 0.2}]
    np.testing.assert_array_equal(rates(10, kind="groups", groups=groups), [1.0] * 3 + [0.2] * 7)


@pytest.mark.parametrize("fractions, n, sizes", [
    ([0.3, 0.7], 10, [3, 7]),
    ([1 / 3, 1 / 3, 1 / 3], 10, [4, 3, 3]),  # 3.33 each: the one leftover client to the first
    ([0.25, 0.75], 6, [2, 4]),  # 1.5 and 4.5: a tie of remainders goes to the first
    ([0.1, 0.9], 7, [1, 6]),  # 0.7 and 6.3: the leftover to the larger remainder (0.7)
    ([0.5, 0.5], 1, [1, 0]),
])
def test_group_sizes_round_by_largest_remainder(fractions, n, sizes):
    got = timing.group_sizes(fractions, n)
    np.testing.assert_array_equal(got, sizes)
    assert got.sum() == n


def test_lognormal_rates_have_mean_one_and_log_std_sigma():
    mu = rates(DRAWS, kind="lognormal", sigma=0.8)
    assert (mu > 0).all()
    std = math.sqrt(math.exp(0.8**2) - 1)
    assert abs(mu.mean() - 1.0) < 5 * std / math.sqrt(DRAWS)
    assert abs(np.log(mu).std() - 0.8) < 0.02


def test_uniform_rates_lie_in_low_high():
    mu = rates(DRAWS, kind="uniform", low=0.5, high=2.0)
    assert mu.min() >= 0.5 and mu.max() < 2.0
    assert abs(mu.mean() - 1.25) < 5 * (1.5 / math.sqrt(12)) / math.sqrt(DRAWS)


def test_trace_rates_read_by_client_id(tmp_path):
    path = tmp_path / "rates.csv"
    path.write_text("client,rate\n2,0.25\n0,1.5\n1,3\n")  # any row order
    np.testing.assert_array_equal(rates(3, kind="trace", path=str(path)), [1.5, 3.0, 0.25])


@pytest.mark.parametrize("text, problem", [
    ("client,rate\n0,1.5\n2,0.25\n", "has no rate for client 1"),
    ("id,mu\n0,1\n1,1\n2,1\n", "needs a header with columns client,rate"),
    ("client,rate\n0,1\n1,0\n2,1\n", "line 3: client must be in 0..2 and rate > 0"),
    ("client,rate\n0,1\n3,1\n2,1\n", "line 3: client must be in 0..2 and rate > 0"),
    ("client,rate\n0,1\n1,fast\n2,1\n", "line 3 is not 'client,rate' numbers"),
])
def test_a_bad_trace_is_a_config_error(tmp_path, text, problem):
    path = tmp_path / "rates.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        rates(3, kind="trace", path=str(path))


@pytest.mark.parametrize("kind", ["lognormal", "uniform"])
def test_random_rates_are_keyed_by_the_seed(kind):
    cfg = lambda seed: load_config({"seed": seed, "data": {"num_clients": 8},  # noqa: E731
                                    "timing": {"rates": {"kind": kind}},
                                    "run": {"workload": "none", "updates": 10}})
    a, b, c = (timing.client_rates(c.timing.rates, c.data.num_clients, c.seed) for c in (cfg(0), cfg(0), cfg(1)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(a, timing.client_rates(cfg(0).timing.rates, 8, 0))  # the (seed, RATES) stream
    np.testing.assert_array_equal(a, rates(8, seed=0, kind=kind))
    stream = numpy_stream(0, Stream.RATES)  # the keyed stream the rates come from
    expected = stream.uniform(0.5, 1.5, size=8) if kind == "uniform" else stream.lognormal(-0.5, 1.0, size=8)
    np.testing.assert_array_equal(a, expected)
