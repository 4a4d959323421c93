"""Each server rule (SPEC section 3) on a few small arrivals, against values worked out by hand.

The rules are built the way the trainer builds them, ``afl.rules.make`` on a resolved config,
so the config's defaults (staleness function, buffer size, tau_C) are part of what is checked. Every
expected vector below is written out as literal numbers with its arithmetic in the comment.
"""

import numpy as np
import pytest
import torch

from afl import rules
from afl.rules import Arrival, Clients, make
from afl.config import load_config
from afl.config import routing_vector

TOL = {"rtol": 1e-13, "atol": 1e-15}


def vec(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def rule_of(algorithm: dict, num_clients: int = 4):
    cfg = load_config({"data": {"num_clients": num_clients}, "algorithm": algorithm,
                       "run": {"workload": "none", "updates": 10}})
    return make(cfg.algorithm, Clients(routing_vector(cfg.algorithm.routing, np.ones(num_clients)),
                                       np.ones(num_clients), cfg.timing))


def arrival(vector, *, client=0, n=1, base=None, base_version=0) -> Arrival:
    base = vec(0.0, 0.0, 0.0) if base is None else base
    return Arrival(client=client, base_version=base_version, base=base, vector=vector, num_samples=n,
                   train_loss=0.0)


def aggregate(rule, x, arrivals, taus):
    """``rule.aggregate``, checking that it leaves its inputs alone (snapshots are never modified)."""
    before = [x.clone()] + [a.vector.clone() for a in arrivals] + [a.base.clone() for a in arrivals]
    new, weights = rule.aggregate(x, arrivals, taus)
    after = [x] + [a.vector for a in arrivals] + [a.base for a in arrivals]
    for b, a in zip(before, after):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert new.dtype == torch.float64 and new.shape == x.shape
    return new, np.asarray(weights, dtype=float)


X1, X2, X3 = vec(1.0, 2.0, 3.0), vec(4.0, -2.0, 0.0), vec(0.0, 0.0, 6.0)


# ----------------------------------------------------------------------------- batching


@pytest.mark.parametrize("algorithm, batch, barrier", [
    ({"name": "sfl", "concurrency": 3}, 3, True),
    ({"name": "afl", "concurrency": 3}, 3, False),
    ({"name": "fedasync", "concurrency": 3}, 1, False),
    ({"name": "fedbuff", "concurrency": 3, "buffer_size": 2}, 2, False),
    ({"name": "fedbuff", "concurrency": 30}, 10, False),  # default K = min(m, 10)
    ({"name": "asyncsgd", "concurrency": 3}, 1, False),
    ({"name": "fadas", "concurrency": 30}, 5, False),  # default M = min(m, 5), the authors' code's
    ({"name": "rennala", "concurrency": 30}, 10, False),  # default S = min(m, 10)
    ({"name": "msync", "concurrency": 30}, 30, True),  # default: all of the round (mini-batch SGD)
    ({"name": "ringmaster", "concurrency": 3}, 1, False),
])
def test_batch_and_barrier(algorithm, batch, barrier):
    cfg = load_config({"data": {"num_clients": 40}, "algorithm": algorithm, "run": {"workload": "none", "updates": 10}})
    rule = rules.get(algorithm["name"])
    assert (rule.batch(cfg.algorithm), rule.barrier) == (batch, barrier)


# ----------------------------------------------------------------------------- sfl and afl

# Weighted averages of the arrivals X1 = [1, 2, 3], X2 = [4, -2, 0], X3 = [0, 0, 6] (the first
# len(n_k) of them); the old x plays no part. (algorithm, n_k, tau_k, w by hand, x by hand)
AVERAGES = [
    # sfl: w_k = n_k / sum n = 10/100, 30/100, 60/100
    # x = 0.1 [1, 2, 3] + 0.3 [4, -2, 0] + 0.6 [0, 0, 6] = [0.1 + 1.2, 0.2 - 0.6, 0.3 + 3.6] = [1.3, -0.4, 3.9]
    pytest.param({"name": "sfl", "concurrency": 3}, [10, 30, 60], [0, 0, 0], [0.1, 0.3, 0.6], [1.3, -0.4, 3.9],
                 id="sfl-data_size"),
    # sfl, weighting: uniform: w_k = 1/3 whatever n_k
    # x = ([1, 2, 3] + [4, -2, 0] + [0, 0, 6]) / 3 = [5/3, 0, 3]
    pytest.param({"name": "sfl", "concurrency": 3, "weighting": "uniform"}, [10, 30, 60], [0, 0, 0],
                 [1 / 3, 1 / 3, 1 / 3], [5 / 3, 0.0, 3.0], id="sfl-uniform"),
    # afl, default s = polynomial, a = 0.5: s(0) = 1, s(3) = 4^-0.5 = 1/2, s(8) = 9^-0.5 = 1/3
    # n s = 10 * 1, 40 * 1/2, 30 * 1/3 = 10, 20, 10  ->  w = [0.25, 0.5, 0.25]
    # x = 0.25 [1, 2, 3] + 0.5 [4, -2, 0] + 0.25 [0, 0, 6] = [0.25 + 2, 0.5 - 1, 0.75 + 1.5] = [2.25, -0.5, 2.25]
    pytest.param({"name": "afl", "concurrency": 3}, [10, 40, 30], [0, 3, 8], [0.25, 0.5, 0.25], [2.25, -0.5, 2.25],
                 id="afl-data_size-polynomial"),
    # afl, weighting: uniform, s = polynomial a = 1: s(0) = 1, s(1) = 1/2, s(2) = 1/3; sum = 11/6
    # w = [6/11, 3/11, 2/11]
    # x = (6 [1, 2, 3] + 3 [4, -2, 0] + 2 [0, 0, 6]) / 11 = ([6, 12, 18] + [12, -6, 0] + [0, 0, 12]) / 11
    #   = [18/11, 6/11, 30/11]
    pytest.param({"name": "afl", "concurrency": 3, "weighting": "uniform", "staleness": {"a": 1.0}},
                 [10, 40, 30], [0, 1, 2], [6 / 11, 3 / 11, 2 / 11], [18 / 11, 6 / 11, 30 / 11],
                 id="afl-uniform-polynomial-a1"),
    # afl, staleness 5 for both: s cancels in the normalisation, w = n_k / sum n = [0.5, 0.5]
    # x = ([1, 2, 3] + [4, -2, 0]) / 2 = [2.5, 0, 1.5]
    pytest.param({"name": "afl", "concurrency": 2}, [7, 7], [5, 5], [0.5, 0.5], [2.5, 0.0, 1.5],
                 id="afl-equal-staleness-is-fedavg"),
]


@pytest.mark.parametrize("algorithm, sizes, taus, weights, expected", AVERAGES)
def test_sfl_and_afl_weighted_averages(algorithm, sizes, taus, weights, expected):
    rule = rule_of(algorithm)
    arrivals = [arrival(x, client=k, n=n) for k, (x, n) in enumerate(zip((X1, X2, X3), sizes))]
    new, w = aggregate(rule, vec(100.0, -100.0, 100.0), arrivals, taus)
    np.testing.assert_allclose(w, weights, **TOL)
    torch.testing.assert_close(new, vec(*expected), **TOL)


# ----------------------------------------------------------------------------- fedasync


@pytest.mark.parametrize("staleness, tau, a_t, expected", [
    # x = [1, 2, 3], x_i = [11, -8, 3]; x <- (1 - a_t) x + a_t x_i = x + a_t [10, -10, 0]
    ({}, 0, 0.6, (7.0, -4.0, 3.0)),  # a_t = 0.6 * s(0) = 0.6: [1 + 6, 2 - 6, 3]
    ({}, 3, 0.3, (4.0, -1.0, 3.0)),  # polynomial a = 0.5: s(3) = 1/2, a_t = 0.3: [1 + 3, 2 - 3, 3]
    ({"name": "hinge", "a": 1.0, "b": 2}, 5, 0.15, (2.5, 0.5, 3.0)),  # s(5) = 1/(1 (5 - 2) + 1) = 1/4: a_t = 0.15
    ({"name": "hinge", "a": 1.0, "b": 2}, 2, 0.6, (7.0, -4.0, 3.0)),  # tau <= b: s = 1
    ({"name": "constant"}, 50, 0.6, (7.0, -4.0, 3.0)),
])
def test_fedasync_mixes_by_a_times_s_tau(staleness, tau, a_t, expected):
    rule = rule_of({"name": "fedasync", "concurrency": 2, "mixing": 0.6, "staleness": staleness})
    new, w = aggregate(rule, vec(1.0, 2.0, 3.0), [arrival(vec(11.0, -8.0, 3.0), n=123)], [tau])
    np.testing.assert_allclose(w, [a_t], **TOL)
    torch.testing.assert_close(new, vec(*expected), **TOL)


# ----------------------------------------------------------------------------- fedbuff


def test_fedbuff_steps_along_the_staleness_weighted_mean_delta():
    # K = 2, eta_g = 2, default s = fedbuff: s(0) = 1, s(3) = 1/sqrt(4) = 1/2
    # deltas against each arrival's own base: d_1 = [1, 2, 3] - [0, 0, 0] = [1, 2, 3],
    #                                         d_2 = [3, 1, 5] - [1, 1, 1] = [2, 0, 4]
    # w_i = eta_g s(tau_i) / K = [2 * 1 / 2, 2 * 1/2 / 2] = [1, 0.5]
    # x <- [1, 1, 1] + 1 [1, 2, 3] + 0.5 [2, 0, 4] = [3, 3, 6]
    rule = rule_of({"name": "fedbuff", "concurrency": 3, "buffer_size": 2, "server_lr": 2.0})
    new, w = aggregate(rule, vec(1.0, 1.0, 1.0),
                       [arrival(vec(1.0, 2.0, 3.0), base=vec(0.0, 0.0, 0.0), n=10, base_version=4),
                        arrival(vec(3.0, 1.0, 5.0), base=vec(1.0, 1.0, 1.0), n=90, client=1, base_version=1)],
                       [0, 3])
    np.testing.assert_allclose(w, [1.0, 0.5], **TOL)
    torch.testing.assert_close(new, vec(3.0, 3.0, 6.0), **TOL)


def test_fedbuff_constant_staleness_and_unit_lr_adds_the_mean_delta():
    # K = 3, eta_g = 1, s = 1: w_i = 1/3; deltas [3, 0, 0], [0, 3, 0], [0, 0, -3] (bases = x = [2, 2, 2])
    # x <- [2, 2, 2] + [1, 1, -1] = [3, 3, 1]   (data sizes play no part)
    rule = rule_of({"name": "fedbuff", "concurrency": 3, "buffer_size": 3, "staleness": "constant"})
    x = vec(2.0, 2.0, 2.0)
    new, w = aggregate(rule, x, [arrival(vec(5.0, 2.0, 2.0), base=x, n=1),
                                 arrival(vec(2.0, 5.0, 2.0), base=x, n=1000, client=1),
                                 arrival(vec(2.0, 2.0, -1.0), base=x, n=7, client=2)], [7, 0, 2])
    np.testing.assert_allclose(w, [1 / 3, 1 / 3, 1 / 3], **TOL)
    torch.testing.assert_close(new, vec(3.0, 3.0, 1.0), **TOL)


# ----------------------------------------------------------------------------- asyncsgd

ROUTING = [0.5, 0.25, 0.125, 0.125]  # n = 4: n p = 2, 1, 0.5, 0.5
G = vec(1.0, -1.0, 0.5)


@pytest.mark.parametrize("client, step, expected", [
    (0, 0.1, (0.9, 2.1, 2.95)),  # eta / (n p_0) = 0.2 / 2 = 0.1: [1, 2, 3] - 0.1 [1, -1, 0.5]
    (1, 0.2, (0.8, 2.2, 2.9)),  # 0.2 / 1
    (2, 0.4, (0.6, 2.4, 2.8)),  # 0.2 / 0.5 = 0.4: [1 - 0.4, 2 + 0.4, 3 - 0.2]
])
def test_asyncsgd_constant_step_scaled_by_one_over_n_p(client, step, expected):
    rule = rule_of({"name": "asyncsgd", "concurrency": 4, "server_lr": 0.2, "routing": ROUTING})
    new, w = aggregate(rule, vec(1.0, 2.0, 3.0), [arrival(G, client=client, n=500)], [9])  # s = constant: tau is ignored
    np.testing.assert_allclose(w, [step], **TOL)
    torch.testing.assert_close(new, vec(*expected), **TOL)


def test_asyncsgd_uniform_routing_is_plain_sgd():
    # p_i = 1/4, n p_i = 1: x <- x - eta g = [1, 2, 3] - 0.2 [1, -1, 0.5] = [0.8, 2.2, 2.9]
    rule = rule_of({"name": "asyncsgd", "concurrency": 4, "server_lr": 0.2})
    new, w = aggregate(rule, vec(1.0, 2.0, 3.0), [arrival(G, client=3)], [0])
    np.testing.assert_allclose(w, [0.2], **TOL)
    torch.testing.assert_close(new, vec(0.8, 2.2, 2.9), **TOL)


@pytest.mark.parametrize("drop, tau, step, expected", [
    # tau_C = 2, eta = 0.2, client 0 (n p = 2)
    (False, 1, 0.1, (0.9, 2.1, 2.95)),  # tau <= tau_C: eta_t = 0.2, step 0.2 / 2
    (False, 2, 0.1, (0.9, 2.1, 2.95)),  # tau = tau_C is not stale
    (False, 5, 0.04, (0.96, 2.04, 2.98)),  # eta_t = min(0.2, 0.2 * 2/5) = 0.08, step 0.08 / 2 = 0.04
    (True, 2, 0.1, (0.9, 2.1, 2.95)),
    (True, 5, 0.0, (1.0, 2.0, 3.0)),  # drop_stale: eta_t = 0, the update is discarded
])
def test_asyncsgd_delay_adaptive_step(drop, tau, step, expected):
    rule = rule_of({"name": "asyncsgd", "concurrency": 4, "server_lr": 0.2, "routing": ROUTING,
                    "step_rule": "delay_adaptive", "tau_c": 2, "drop_stale": drop})
    new, w = aggregate(rule, vec(1.0, 2.0, 3.0), [arrival(G, client=0)], [tau])
    np.testing.assert_allclose(w, [step], **TOL)
    torch.testing.assert_close(new, vec(*expected), **TOL)


def test_asyncsgd_delay_adaptive_threshold_defaults_to_concurrency():
    # tau_C = m = 4: tau = 4 keeps eta = 0.2; tau = 8: eta_t = 0.2 * 4/8 = 0.1; client 1 (n p = 1)
    rule = rule_of({"name": "asyncsgd", "concurrency": 4, "server_lr": 0.2, "routing": ROUTING,
                    "step_rule": "delay_adaptive"})
    _, w4 = aggregate(rule, vec(1.0, 2.0, 3.0), [arrival(G, client=1)], [4])
    new, w8 = aggregate(rule, vec(1.0, 2.0, 3.0), [arrival(G, client=1)], [8])
    np.testing.assert_allclose([w4[0], w8[0]], [0.2, 0.1], **TOL)
    torch.testing.assert_close(new, vec(0.9, 2.1, 2.95), **TOL)  # [1, 2, 3] - 0.1 [1, -1, 0.5]


def test_asyncsgd_step_also_scaled_by_a_staleness_function():
    # s = inverse_linear, beta = 1: s(3) = 1/4; client 0: step = 0.2 * 1/4 / 2 = 0.025
    # x <- [1, 2, 3] - 0.025 [1, -1, 0.5] = [0.975, 2.025, 2.9875]
    rule = rule_of({"name": "asyncsgd", "concurrency": 4, "server_lr": 0.2, "routing": ROUTING,
                    "staleness": {"name": "inverse_linear", "beta": 1.0}})
    new, w = aggregate(rule, vec(1.0, 2.0, 3.0), [arrival(G, client=0)], [3])
    np.testing.assert_allclose(w, [0.025], **TOL)
    torch.testing.assert_close(new, vec(0.975, 2.025, 2.9875), **TOL)


# ----------------------------------------------------------------------------- fadas


def test_fadas_amsgrad_steps_keep_their_moments_and_the_larger_second_moment():
    # M = 2, eta = 1, b1 = 0.5, b2 = 0.96, eps = 0.5 (sqrt(1 - b2) = 0.2, sqrt(1 - b2^2) = 0.28).
    # Step 1: deltas [2, 0] and [0, -4] against their bases: D = [1, -2].
    #   m = 0.5 D = [0.5, -1]; v = 0.04 D^2 = [0.04, 0.16] = v_hat; sqrt(v_hat) / 0.2 + 0.5 = [1.5, 2.5]
    #   x <- [1, 1] + 1 / (1 - 0.5) [0.5 / 1.5, -1 / 2.5] = [1, 1] + [2/3, -0.8] = [5/3, 0.2]
    rule = rule_of({"name": "fadas", "concurrency": 3, "buffer_size": 2, "server_lr": 1.0, "server_beta1": 0.5,
                    "server_beta2": 0.96, "server_eps": 0.5})
    base = vec(1.0, 1.0)
    x1, w = aggregate(rule, vec(1.0, 1.0), [arrival(vec(3.0, 1.0), base=base), arrival(vec(1.0, -3.0), base=base)],
                      [0, 0])
    np.testing.assert_allclose(w, [0.5, 0.5], **TOL)  # eta / M
    torch.testing.assert_close(x1, vec(5 / 3, 0.2), **TOL)
    # Step 2: deltas [4.6, 0] and [0, 0]: D = [2.3, 0].
    #   m = 0.5 [0.5, -1] + 0.5 [2.3, 0] = [1.4, -0.5]
    #   v = 0.96 [0.04, 0.16] + 0.04 [5.29, 0] = [0.25, 0.1536]; v_hat = max([0.04, 0.16], v) = [0.25, 0.16]
    #   sqrt(v_hat) / 0.28 + 0.5 = [0.5 / 0.28 + 0.5, 0.4 / 0.28 + 0.5] = [16/7, 27/14]
    #   x <- x1 + 1 / (1 - 0.25) [1.4 / (16/7), -0.5 / (27/14)] = x1 + 4/3 [49/80, -7/27] = x1 + [49/60, -28/81]
    x2, _ = aggregate(rule, x1, [arrival(vec(4.6, 0.0), base=vec(0.0, 0.0)), arrival(vec(0.0, 0.0), base=vec(0.0, 0.0))],
                      [1, 0])
    torch.testing.assert_close(x2, vec(5 / 3 + 49 / 60, 0.2 - 28 / 81), **TOL)
    assert rule.state["step"] == 2


def test_fadas_delay_adaptive_step_divides_by_the_largest_delay_over_tau_c():
    # tau_c = 1, delays [0, 3]: tau_max = 3 > 1, eta_t = 0.3 / 3 = 0.1; one step from zero moments with
    # b1 = 0, b2 = 0 (plain sign-like step): m = D, v_hat = D^2, denom = |D| + eps, x <- x + eta_t D / (|D| + eps)
    # D = ([2, -2] + [0, 0]) / 2 = [1, -1]; eps = 1: x <- [0, 0] + 0.1 [1/2, -1/2] = [0.05, -0.05]
    rule = rule_of({"name": "fadas", "concurrency": 3, "buffer_size": 2, "server_lr": 0.3, "server_beta1": 0.0,
                    "server_beta2": 0.0, "server_eps": 1.0, "step_rule": "delay_adaptive", "tau_c": 1})
    z = vec(0.0, 0.0)
    x, w = aggregate(rule, z, [arrival(vec(2.0, -2.0), base=z), arrival(z, base=z)], [0, 3])
    np.testing.assert_allclose(w, [0.05, 0.05], **TOL)
    torch.testing.assert_close(x, vec(0.05, -0.05), **TOL)
    # delays [1, 1]: tau_max = 1, not over tau_c: eta_t = 0.3
    rule = rule_of({"name": "fadas", "concurrency": 3, "buffer_size": 2, "server_lr": 0.3, "server_beta1": 0.0,
                    "server_beta2": 0.0, "server_eps": 1.0, "step_rule": "delay_adaptive", "tau_c": 1})
    x, _ = aggregate(rule, z, [arrival(vec(2.0, -2.0), base=z), arrival(z, base=z)], [1, 1])
    torch.testing.assert_close(x, vec(0.15, -0.15), **TOL)
