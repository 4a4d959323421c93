"""Rules that refuse work (Rennala, Ringmaster, m-synchronous SGD): their steps by hand, the
simulator's discards and stops on a few events worked out by hand, and their papers' invariants.

A refused result never reaches the rule: it is discarded on arrival (too stale) or its task is
stopped in flight; either way its client's time on it is counted in ``wasted_time`` and the
client starts again on the current model (``afl.sim.simulator``).
"""

import numpy as np
import pytest
import torch

from afl.config import load_config
from afl.errors import ConfigError
from helpers import TWO_GROUPS, assert_same_events, train_tables
from test_rules import TOL, aggregate, arrival, rule_of, vec

G1, G2, G3 = vec(1.0, -2.0, 4.0), vec(3.0, 0.0, -2.0), vec(-1.0, 5.0, 1.0)


# ----------------------------------------------------------------------------- steps by hand


@pytest.mark.parametrize("name", ["rennala", "msync"])
def test_mean_of_the_batch_of_gradients(name):
    # S = 3, gamma = 0.3: x <- [1, 1, 1] - 0.3 ([1, -2, 4] + [3, 0, -2] + [-1, 5, 1]) / 3
    #                       = [1, 1, 1] - 0.1 [3, 3, 3] = [0.7, 0.7, 0.7]; each weight 0.3 / 3 = 0.1
    rule = rule_of({"name": name, "concurrency": 4, "buffer_size": 3, "server_lr": 0.3})
    new, w = aggregate(rule, vec(1.0, 1.0, 1.0), [arrival(G1, n=5), arrival(G2, client=1, n=50),
                                                  arrival(G3, client=2, n=500)], [0, 0, 0])
    np.testing.assert_allclose(w, [0.1, 0.1, 0.1], **TOL)
    torch.testing.assert_close(new, vec(0.7, 0.7, 0.7), **TOL)


def test_ringmaster_is_plain_sgd_on_what_it_accepts():
    # gamma = 0.5, delay 3 < R = 4: x <- [1, 2, 3] - 0.5 [1, -2, 4] = [0.5, 3, 1]  (no routing factor, no s(tau))
    rule = rule_of({"name": "ringmaster", "concurrency": 4, "max_delay": 3, "server_lr": 0.5})
    new, w = aggregate(rule, vec(1.0, 2.0, 3.0), [arrival(G1, client=3, n=9)], [3])
    np.testing.assert_allclose(w, [0.5], **TOL)
    torch.testing.assert_close(new, vec(0.5, 3.0, 1.0), **TOL)


# ----------------------------------------------------------------------------- events by hand


def fixed_times(rule: dict, rates: list[float], updates: int, tmp_path):
    """A null-workload run whose task times are exactly ``1 / rate`` (distribution constant)."""
    n = len(rates)
    tmp_path.mkdir(parents=True, exist_ok=True)
    raw = {"data": {"num_clients": n}, "algorithm": rule,
           "timing": {"distribution": "constant", "rates": {"kind": "trace", "path": str(trace(tmp_path, rates))}},
           "run": {"workload": "none", "updates": updates}}
    _, info, updates_, _, clients = train_tables(tmp_path / "run", raw)
    return info, updates_, clients


def trace(tmp_path, rates):
    path = tmp_path / "rates.csv"
    path.write_text("client,rate\n" + "".join(f"{i},{r}\n" for i, r in enumerate(rates)))
    return path


def test_rennala_discards_a_gradient_that_arrives_after_the_step(tmp_path):
    # Times 1 and 2, S = 2. t = 1: client 0's gradient at x^0 (buffer 1/2), it starts again at x^0.
    # t = 2: client 1's timer (set at t = 0) fires before client 0's (set at t = 1): buffer full,
    # x^1. Client 0's second gradient, at x^0, arrives after the step: discarded, its 1 unit wasted.
    # Both restart at x^1 at t = 2: the same every 2 units. 3 updates end at t = 6, before client
    # 0's third discard: client 0 applied 3 and discarded 2 (2 units wasted), client 1 applied 3.
    info, u, c = fixed_times({"name": "rennala", "concurrency": 2, "buffer_size": 2}, [1.0, 0.5], 3, tmp_path)
    assert u.time.tolist() == [2.0] * 2 + [4.0] * 2 + [6.0] * 2
    assert c.tasks.tolist() == [3, 3] and c.discarded.tolist() == [2, 0] and c.cancelled.tolist() == [0, 0]
    np.testing.assert_allclose(c.wasted_time, [2.0, 0.0], rtol=0, atol=1e-12)
    assert (info["discarded"], info["cancelled"], info["wasted_time"]) == (2, 0, pytest.approx(2.0))


def test_ringmaster_discards_delays_over_r_or_stops_them_in_flight(tmp_path):
    # Times 1 and 3, R = 2 (delays 0 and 1 applied); client 0 applies at t = 1, 2, 3, ... Algorithm 1: at t = 3 client 1's
    # timer (set at t = 0) fires before client 0's (set at t = 2): its gradient at x^0 arrives at
    # x^2, delay 2 > 1, discarded; it restarts at x^2 and arrives at t = 6 at x^5, delay 3,
    # discarded again. Over 6 updates client 1 applies nothing and wastes 2 x 3 units.
    info, u, c = fixed_times({"name": "ringmaster", "concurrency": 2, "max_delay": 2}, [1.0, 1 / 3], 6, tmp_path / "a")
    assert u.client.tolist() == [0] * 6 and u.staleness.max() == 0
    assert c.discarded.tolist() == [0, 2] and c.cancelled.tolist() == [0, 0]
    np.testing.assert_allclose(c.wasted_time, [0.0, 6.0], rtol=0, atol=1e-12)
    # Algorithm 2 (stop_stale): at t = 2 the update x^2 makes client 1's delay reach 2: stopped after
    # 2 units and restarted at x^2; again at t = 4 (x^4). The run ends at x^6 (t = 6) with its third
    # task in flight: 2 stops, 4 units wasted, nothing discarded.
    info, u, c = fixed_times({"name": "ringmaster", "concurrency": 2, "max_delay": 2, "stop_stale": True},
                             [1.0, 1 / 3], 6, tmp_path / "b")
    assert c.discarded.tolist() == [0, 0] and c.cancelled.tolist() == [0, 2]
    np.testing.assert_allclose(c.wasted_time, [0.0, 4.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(c.busy_time, [6.0, 4.0], rtol=0, atol=1e-12)


def test_msync_takes_the_first_m_and_stops_the_rest(tmp_path):
    # Times 1, 2, 4; a round sends 3 tasks, takes the first 2: the update at t = 2, client 2 stopped
    # after 2 units, the next round at t = 2. 3 updates end at t = 6 with the last round's client 2
    # in flight: 2 stops, 4 units wasted.
    info, u, c = fixed_times({"name": "msync", "concurrency": 3, "buffer_size": 2}, [1.0, 0.5, 0.25], 3, tmp_path)
    assert u.time.tolist() == [2.0, 2.0, 4.0, 4.0, 6.0, 6.0]
    assert u.client.tolist() == [0, 1] * 3
    assert c.cancelled.tolist() == [0, 0, 2] and c.tasks.tolist() == [3, 3, 0]
    np.testing.assert_allclose(c.wasted_time, [0.0, 0.0, 4.0], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- the papers' invariants


def null_run(rule: dict, tmp_path, updates=400, n=12):
    raw = {"data": {"num_clients": n}, "algorithm": rule, "timing": {"rates": TWO_GROUPS},
           "run": {"workload": "none", "updates": updates}}
    return train_tables(tmp_path, raw)


def test_rennala_applies_only_gradients_at_the_current_model(tmp_path):
    _, info, u, _, c = null_run({"name": "rennala", "concurrency": 12, "buffer_size": 5}, tmp_path)
    assert (u.staleness == 0).all() and (u.groupby("version").size() == 5).all()
    assert info["discarded"] > 0 and c.discarded.sum() == info["discarded"]  # the rule did refuse work
    assert (c.wasted_time <= c.busy_time + 1e-9).all()


@pytest.mark.parametrize("stop", [False, True])
def test_ringmaster_never_applies_a_delay_of_r_or_more(tmp_path, stop):
    _, info, u, _, c = null_run({"name": "ringmaster", "concurrency": 12, "max_delay": 4, "stop_stale": stop}, tmp_path)
    assert u.staleness.max() == 3  # delays up to R - 1 = 3 applied, never R (the paper's strict delta < R)
    refused = "cancelled" if stop else "discarded"
    assert info[refused] > 0 and info["discarded" if stop else "cancelled"] == 0
    assert (c.wasted_time <= c.busy_time + 1e-9).all() and (c.busy_time <= info["virtual_time"] + 1e-9).all()


def test_msync_applies_exactly_m_per_round(tmp_path):
    _, info, u, _, c = null_run({"name": "msync", "concurrency": 12, "buffer_size": 7}, tmp_path, updates=100)
    rounds = u.groupby("version")
    assert (rounds.size() == 7).all() and (u.staleness == 0).all()
    assert (rounds.dispatch_time.nunique() == 1).all()  # one round, one model
    np.testing.assert_array_equal(rounds.dispatch_time.first().iloc[1:].to_numpy(), rounds.time.first().iloc[:-1].to_numpy())
    assert info["cancelled"] == (12 - 7) * 99  # the last round's stragglers are still in flight at the end


@pytest.mark.parametrize("rule", [{"name": "rennala", "concurrency": 12, "buffer_size": 5},
                                  {"name": "ringmaster", "concurrency": 12, "max_delay": 4, "stop_stale": True},
                                  {"name": "msync", "concurrency": 12, "buffer_size": 7}])
def test_same_seed_same_events(tmp_path, rule):
    a = null_run(rule, tmp_path / "a", updates=150)
    b = null_run(rule, tmp_path / "b", updates=150)
    assert_same_events(a, b)


# ----------------------------------------------------------------------------- bad configs


@pytest.mark.parametrize("algorithm, key", [
    ({"name": "ringmaster", "max_delay": 0}, "algorithm.max_delay"),
    ({"name": "ringmaster", "stop_stale": True, "selection": "with_replacement"}, "algorithm.selection"),
    ({"name": "msync", "concurrency": 4, "buffer_size": 5}, "algorithm.buffer_size"),
    ({"name": "rennala", "buffer_size": 0}, "algorithm.buffer_size"),
    ({"name": "asyncsgd", "max_delay": 3}, "algorithm.max_delay"),
    ({"name": "fedbuff", "stop_stale": True}, "algorithm.stop_stale"),
    ({"name": "fadas", "server_beta1": 1.0}, "algorithm.server_beta1"),
    ({"name": "fadas", "server_eps": 0.0}, "algorithm.server_eps"),
    ({"name": "fadas", "drop_stale": True}, "algorithm.drop_stale"),
    ({"name": "fedbuff", "server_beta2": 0.9}, "algorithm.server_beta2"),
])
def test_bad_keys_name_themselves(algorithm, key):
    with pytest.raises(ConfigError) as err:
        load_config({"data": {"num_clients": 10}, "algorithm": algorithm, "run": {"workload": "none"}})
    assert str(err.value).startswith(key)
