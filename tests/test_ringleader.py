"""Ringleader ASGD (afl.rules.ringleader): its table's steps by hand over two rounds, and the
paper's invariants in simulation (rounds of n steps, one per worker; delays below 2n - 1)."""

import numpy as np
import pytest
import torch

from afl.config import load_config
from afl.errors import ConfigError
from helpers import TWO_GROUPS, assert_same_events, train_tables
from test_rules import TOL, arrival, rule_of, vec

N, GAMMA = 3, 0.5


def feed(rule, x, client, g):
    """One arrival of gradient ``[g]`` from ``client``; the rule must leave its inputs alone."""
    a = arrival(vec(g), client=client, base=vec(0.0))
    new, w = rule.aggregate(x, [a], [0])
    torch.testing.assert_close(a.vector, vec(g), rtol=0, atol=0)
    return new, w


def test_two_rounds_by_hand():
    rule = rule_of({"name": "ringleader", "concurrency": N, "server_lr": GAMMA}, num_clients=N)
    x = vec(0.0)
    # Phase 1: gradients join the table without a step until every worker has one there.
    for client, g in ((0, 2.0), (0, 4.0), (1, 6.0)):
        assert feed(rule, x, client, g) == (None, None)
    # Worker 2's completes it: mean of means (1/3)((2 + 4)/2 + 6 + 3) = 4, x1 = 0 - 0.5 * 4 = -2,
    # its weight gamma / (n b_2) = 0.5 / 3.
    x, w = feed(rule, x, 2, 3.0)
    torch.testing.assert_close(x, vec(-2.0), **TOL)
    np.testing.assert_allclose(w, [0.5 / 3], **TOL)
    # Worker 2 again: already stepped for this round, so it waits for the next round's table.
    assert feed(rule, x, 2, 9.0) == (None, None)
    # Worker 0 (stale, kept): its mean 3 -> (2 + 4 + 6)/3 = 4, the mean 4 + (4 - 3)/3 = 13/3,
    # x2 = -2 - 0.5 * 13/3 = -25/6, weight 0.5 / (3 * 3).
    x, w = feed(rule, x, 0, 6.0)
    torch.testing.assert_close(x, vec(-25 / 6), **TOL)
    np.testing.assert_allclose(w, [0.5 / 9], **TOL)
    # Worker 1: its mean 6 -> (6 + 0)/2 = 3, the mean 13/3 - 1 = 10/3, x3 = -25/6 - 5/3 = -35/6.
    x, w = feed(rule, x, 1, 0.0)
    torch.testing.assert_close(x, vec(-35 / 6), **TOL)
    np.testing.assert_allclose(w, [0.5 / 6], **TOL)
    # Three steps: the round is over and worker 2's waiting 9 is the new table, alone in it.
    assert rule.state["counts"] == [0, 0, 1] and rule.state["next_counts"] == [0, 0, 0]
    assert feed(rule, x, 1, 3.0) == (None, None)
    # Worker 0 completes it: (6 + 3 + 9)/3 = 6, x4 = -35/6 - 3 = -53/6.
    x, w = feed(rule, x, 0, 6.0)
    torch.testing.assert_close(x, vec(-53 / 6), **TOL)
    assert rule.state["stepped"] == [True, False, False]


def null_run(tmp_path, n=6, updates=120, rates=TWO_GROUPS):
    raw = {"data": {"num_clients": n}, "algorithm": {"name": "ringleader", "concurrency": n},
           "timing": {"rates": rates}, "run": {"workload": "none", "updates": updates}}
    return train_tables(tmp_path, raw)


def test_rounds_of_n_steps_one_per_worker_and_delays_below_2n_minus_1(tmp_path):
    n = 6
    _, info, u, _, c = null_run(tmp_path, n=n, updates=20 * n)
    assert (u.groupby("version").size() == 1).all() and len(u) == 20 * n
    rounds = u.sort_values("version").client.to_numpy().reshape(20, n)
    assert all(sorted(r) == list(range(n)) for r in rounds)  # every worker steps once a round
    assert c.tasks.tolist() == [20] * n
    assert u.staleness.max() <= 2 * n - 2 and u.staleness.max() > n  # the bound, and it is not slack
    fast = c.rate > c.rate.min()
    assert (c.held[fast] > 0).all()  # fast workers' extra gradients wait in the table
    assert info["discarded"] == info["cancelled"] == 0  # nothing refused: no time wasted
    assert (c.wasted_time == 0).all()


def test_same_seed_same_events(tmp_path):
    a, b = null_run(tmp_path / "a", updates=60), null_run(tmp_path / "b", updates=60)
    assert_same_events(a, b)


@pytest.mark.parametrize("algorithm, key", [
    ({"name": "ringleader", "concurrency": 5}, "algorithm.concurrency"),
    ({"name": "ringleader", "concurrency": 10, "selection": "with_replacement"}, "algorithm.selection"),
    ({"name": "ringleader", "concurrency": 10, "buffer_size": 3}, "algorithm.buffer_size"),
    ({"name": "ringleader", "concurrency": 10, "step_rule": "delay_adaptive"}, "algorithm.step_rule"),
])
def test_bad_keys_name_themselves(algorithm, key):
    with pytest.raises(ConfigError) as err:
        load_config({"data": {"num_clients": 10}, "algorithm": algorithm, "run": {"workload": "none"}})
    assert str(err.value).startswith(key)
