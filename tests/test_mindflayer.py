"""MindFlayer SGD (afl.rules.mindflayer): its attempts per client by hand, and its rounds in
simulation against the keyed draws (which attempts are stopped, when each round ends)."""

import numpy as np
import pytest

from afl.config import load_config
from afl.errors import ConfigError
from afl.rules.mindflayer import attempts
from afl.sim import timing
from helpers import assert_same_events, train_tables


@pytest.mark.parametrize("p, limits, batch, expected", [
    # p = 1 is Rennala's choice: p/T = 1, 1, .1, .01; t(m) = (4 + m) / (1, 2, 2.1, 2.11) = 5, 3, 3.33, 3.79;
    # m* = 2, t = 3: B = ceil(3/1 - 1) = 2 for the two fast clients, 0 for the others.
    (1.0, [1.0, 1.0, 10.0, 100.0], 4, [2, 2, 0, 0]),
    # p = 0.5, T = 2, 4, 6, 8: p/T sums to .25, .375, .4583, .5208; t(m) = (4 + m/2) / those = 18, 13.33,
    # 12, 11.52; m* = 4: B = ceil(11.52 / (2, 4, 6, 8) - 1) = ceil(4.76, 1.88, 0.92, 0.44) = 5, 2, 1, 1.
    (0.5, [2.0, 4.0, 6.0, 8.0], 4, [5, 2, 1, 1]),
    (0.5, [6.0, 2.0, 8.0, 4.0], 4, [1, 5, 1, 2]),  # the same clients in another order
])
def test_attempts_by_hand(p, limits, batch, expected):
    assert attempts(p, np.array(limits), batch).tolist() == expected


LIMIT, SIGMA, N = 2.0, 1.5, 4


def lognormal_run(tmp_path, updates=30, **algorithm):
    raw = {"data": {"num_clients": N},
           "algorithm": {"name": "mindflayer", "concurrency": N, "buffer_size": 4, "time_limit": LIMIT,
                         "server_lr": 0.5, **algorithm},
           "timing": {"distribution": "lognormal", "sigma": SIGMA, "rates": {"kind": "power", "exponent": 1}},
           "run": {"workload": "none", "updates": updates}}
    return train_tables(tmp_path, raw)


def test_rounds_follow_the_draws(tmp_path):
    cfg, info, u, _, c = lognormal_run(tmp_path)
    # Rates 1, 1/2, 1/3, 1/4; p = P(S <= 2) = Phi((ln 2 + 1.125) / 1.5) = 0.8873; attempts stopped at
    # T_i = 2 i: t(m) = 11.02, 8.68, 8.19, 8.17, m* = 4, B = ceil(8.17 / (2, 4, 6, 8) - 1) = 4, 2, 1, 1.
    p = timing.service_cdf(cfg.timing, LIMIT)
    assert p == pytest.approx(0.8873, abs=1e-4)
    b, rates = np.array([4, 2, 1, 1]), 1 / np.arange(1, N + 1)
    draw = timing.ServiceDraws(cfg.timing, cfg.seed)
    rounds = u.version.max()
    s = [np.array([draw(i, k) for k in range(b[i] * rounds)]) for i in range(N)]
    # Every round was whole (no round without a gradient here): each client's attempts are its
    # first B_i * rounds draws, and exactly those over the limit were stopped.
    assert c.tasks.tolist() == [int((si <= LIMIT).sum()) for si in s]
    assert c.cancelled.tolist() == [int((si > LIMIT).sum()) for si in s] and c.cancelled.sum() > 0
    np.testing.assert_allclose(c.wasted_time, c.cancelled * LIMIT / rates, rtol=1e-12)
    np.testing.assert_allclose(c.busy_time, [np.minimum(si, LIMIT).sum() / r for si, r in zip(s, rates)], rtol=1e-12)
    # A round ends when its slowest client has made its attempts, one after another.
    ends = np.cumsum([max(np.minimum(si[k * bi:(k + 1) * bi], LIMIT).sum() / r for si, bi, r in zip(s, b, rates))
                      for k in range(rounds)])
    np.testing.assert_allclose(u.groupby("version").time.first(), ends, rtol=1e-12)
    assert (u.staleness == 0).all()  # every gradient at the round's model
    np.testing.assert_allclose(u.weight, 0.5 / (p * b.sum()), rtol=1e-12)  # gamma / (p sum_i B_i), unbiased
    came_back = [sum(int((si[k * bi:(k + 1) * bi] <= LIMIT).sum()) for si, bi in zip(s, b)) for k in range(rounds)]
    assert u.groupby("version").size().tolist() == came_back  # a round's stopped attempts are not applied


def test_same_seed_same_events(tmp_path):
    a, b = lognormal_run(tmp_path / "a", updates=10), lognormal_run(tmp_path / "b", updates=10)
    assert_same_events(a, b)


@pytest.mark.parametrize("algorithm, timing_, key", [
    ({"name": "mindflayer", "concurrency": 10}, {}, "algorithm.time_limit"),  # no limit set
    ({"name": "mindflayer", "concurrency": 10, "time_limit": 0.5}, {"distribution": "constant"},
     "algorithm.time_limit"),  # every draw is 1: every attempt stopped
    ({"name": "mindflayer", "concurrency": 4, "time_limit": 2.0}, {}, "algorithm.concurrency"),
    ({"name": "fedbuff", "time_limit": 2.0}, {}, "algorithm.time_limit"),
])
def test_bad_keys_name_themselves(algorithm, timing_, key):
    with pytest.raises(ConfigError) as err:
        load_config({"data": {"num_clients": 10}, "algorithm": algorithm, "timing": timing_,
                     "run": {"workload": "none"}})
    assert str(err.value).startswith(key)
