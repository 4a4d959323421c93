"""Tests for afl.queueing.network, .routing and .rounds: the closed Jackson network of generalized AsyncSGD."""

import dataclasses
import itertools
import math
import time
from collections import deque

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

from afl.errors import AflError
from afl.queueing.network import (
    Prediction,
    QueueingError,
    log_normalising_constants,
    mean_queue_lengths,
    mva,
    predict,
    relative_delay,
    sojourn_time,
    throughput,
    utilisation,
)
from afl.queueing.rounds import expected_max_duration
from afl.queueing.routing import (
    BoundConstants,
    OptimizedRouting,
    bound,
    optimize_concurrency,
    optimize_routing,
    power_routing,
)

TWO_GROUPS_MU = np.array([1.0] * 5 + [0.2] * 5)


# --------------------------------------------------------------------------- brute force


def states(n, c):
    """All x in N^n with sum x = c."""
    for bars in itertools.combinations(range(c + n - 1), n - 1):
        cuts = (-1,) + bars + (c + n - 1,)
        yield np.array([cuts[k + 1] - cuts[k] - 1 for k in range(n)])


def brute(rho, c):
    """G(c), E_c[X] and P_c(X_i >= 1) by summing pi_c(x) over the whole state space."""
    xs = np.array(list(states(len(rho), c)))
    weights = np.prod(rho[None, :] ** xs, axis=1)
    g = weights.sum()
    return g, (weights[:, None] * xs).sum(0) / g, (weights[:, None] * (xs >= 1)).sum(0) / g


def random_network(rng, n):
    mu = rng.uniform(0.1, 3.0, n)
    p = rng.dirichlet(np.ones(n))
    return mu, p


def test_state_enumeration_counts():
    assert len(list(states(3, 5))) == math.comb(7, 2)
    assert all(x.sum() == 5 and (x >= 0).all() for x in states(3, 5))


# --------------------------------------------------------------------------- Buzen vs enumeration


@pytest.mark.parametrize("seed", range(5))
def test_buzen_matches_enumeration(seed):
    rng = np.random.default_rng(seed)
    mu, p = random_network(rng, 3)
    rho = p / mu
    lg = log_normalising_constants(rho, 5)
    assert lg.shape == (6,) and lg.dtype == torch.float64
    for c in range(6):
        g, ex, busy = brute(rho, c)
        assert lg[c].item() == pytest.approx(math.log(g), abs=1e-12)
        np.testing.assert_allclose(mean_queue_lengths(mu, p, c).numpy(), ex, rtol=1e-11, atol=1e-14)
        if c >= 1:
            g_prev = brute(rho, c - 1)[0]
            assert throughput(mu, p, c).item() == pytest.approx(g_prev / g, rel=1e-11)
            np.testing.assert_allclose(utilisation(mu, p, c).numpy(), busy, rtol=1e-11)


@pytest.mark.parametrize("seed", range(3))
def test_delay_and_sojourn_match_enumeration_at_population_m_minus_1(seed):
    rng = np.random.default_rng(100 + seed)
    mu, p = random_network(rng, 3)
    m = 5
    _, ex_m1, _ = brute(p / mu, m - 1)
    np.testing.assert_allclose(relative_delay(mu, p, m).numpy(), ex_m1 / p, rtol=1e-11)
    np.testing.assert_allclose(sojourn_time(mu, p, m).numpy(), (1 + ex_m1) / mu, rtol=1e-11)


def test_log_normalising_constants_extreme_loads_do_not_overflow():
    rho = np.array([1e-200, 1e150, 3.0])
    lg = log_normalising_constants(rho, 50)
    assert torch.isfinite(lg).all()
    # G(c) is dominated by rho_max^c: log G(c) ~ c log(1e150).
    assert lg[50].item() == pytest.approx(50 * math.log(1e150), rel=1e-12)
    assert lg[0].item() == 0.0


# --------------------------------------------------------------------------- the closed network, simulated


def simulate(mu, p, m, updates, seed):
    """Event-driven simulation of the closed network; per-client mean staleness and sojourn time, throughput."""
    rng = np.random.default_rng(seed)
    n = len(mu)
    queues = [deque() for _ in range(n)]  # FIFO of (dispatch version, dispatch time)
    for j in rng.choice(n, size=m, p=p):
        queues[j].append((0, 0.0))
    route = np.minimum(np.searchsorted(np.cumsum(p), rng.random(updates), side="right"), n - 1)
    pick, wait = rng.random(updates), rng.exponential(size=updates)
    rate = [float(x) for x in mu]
    t, now = 0, 0.0
    stale_sum, soj_sum, count = np.zeros(n), np.zeros(n), np.zeros(n)
    for k in range(updates):
        busy = [i for i in range(n) if queues[i]]
        total = sum(rate[i] for i in busy)
        now += wait[k] / total  # next completion among the busy clients
        x = pick[k] * total
        for i in busy:
            x -= rate[i]
            if x < 0:
                break
        v, t0 = queues[i].popleft()
        stale_sum[i] += t - v  # staleness of the update applied at version t
        soj_sum[i] += now - t0
        count[i] += 1
        t += 1
        queues[route[k]].append((t, now))  # replacement task gets the new model x_t
    return stale_sum / count, soj_sum / count, t / now


def test_relative_delay_convention_matches_simulated_staleness():
    # Staleness tau = t - v of each applied update, averaged per client, against E[tau_i].
    mu = np.array([2.0, 1.0, 0.3])
    p = np.array([0.5, 0.3, 0.2])
    m = 4
    stale, soj, lam = simulate(mu, p, m, updates=200_000, seed=7)
    delay = relative_delay(mu, p, m).numpy()
    np.testing.assert_allclose(stale, delay, rtol=0.04)
    np.testing.assert_allclose(soj, sojourn_time(mu, p, m).numpy(), rtol=0.04)
    assert lam == pytest.approx(throughput(mu, p, m).item(), rel=0.02)
    # Counting the task's own update (+1) would be clearly off.
    assert np.all(np.abs(stale - (delay + 1)) > 0.5)


# --------------------------------------------------------------------------- MVA, closed forms, identity


@pytest.mark.parametrize("seed", range(4))
def test_mva_matches_buzen_random(seed):
    rng = np.random.default_rng(200 + seed)
    mu, p = random_network(rng, 7)
    lam, q = mva(mu, p, 12)
    assert lam.item() == pytest.approx(throughput(mu, p, 12).item(), rel=1e-12)
    np.testing.assert_allclose(q.numpy(), mean_queue_lengths(mu, p, 12).numpy(), rtol=1e-11)


def test_mva_matches_buzen_large():
    rng = np.random.default_rng(3)
    mu = rng.lognormal(0.0, 1.0, 200)
    p = rng.dirichlet(np.ones(200))
    lam, q = mva(mu, p, 300)
    pred = predict(mu, p, 300)
    assert lam.item() == pytest.approx(pred.throughput, rel=1e-10)
    np.testing.assert_allclose(q.numpy(), pred.queue_length, rtol=1e-9, atol=1e-12)
    assert q.sum().item() == pytest.approx(300, rel=1e-12)


@pytest.mark.parametrize("n,m,mu", [(4, 1, 1.0), (5, 7, 0.5), (10, 10, 2.0), (3, 40, 1.3)])
def test_equal_loads_closed_form(n, m, mu):
    mus = np.full(n, mu)
    p = np.full(n, 1 / n)
    rho = (1 / n) / mu
    assert throughput(mus, p, m).item() == pytest.approx(m / (rho * (m + n - 1)), rel=1e-12)
    np.testing.assert_allclose(mean_queue_lengths(mus, p, m - 1).numpy(), (m - 1) / n, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(relative_delay(mus, p, m).numpy(), (m - 1), rtol=1e-12, atol=1e-13)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 12),
    m=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    spread=st.floats(0.0, 3.0),
)
def test_mean_staleness_identity(n, m, seed, spread):
    rng = np.random.default_rng(seed)
    mu = rng.lognormal(0.0, spread, n)
    p = rng.dirichlet(np.full(n, 0.5)) * 0.98 + 0.02 / n  # keep every p_i > 0
    p = p / p.sum()
    delay = relative_delay(mu, p, m).numpy()
    assert np.all(delay >= 0)
    assert float((p * delay).sum()) == pytest.approx(m - 1, rel=1e-9, abs=1e-9)
    assert predict(mu, p, m).mean_staleness == pytest.approx(m - 1, rel=1e-9, abs=1e-9)


def test_spec_numerical_check():
    p = np.full(10, 0.1)
    pred = predict(TWO_GROUPS_MU, p, 10)
    assert round(pred.throughput, 3) == 1.390
    assert np.all(np.round(pred.relative_delay[:5], 3) == 1.538)
    assert np.all(np.round(pred.relative_delay[5:], 2) == 16.46)
    assert pred.mean_staleness == pytest.approx(9.0, rel=1e-12)


def test_single_task_has_no_staleness():
    mu, p = np.array([1.0, 0.5, 4.0]), np.array([0.2, 0.3, 0.5])
    pred = predict(mu, p, 1)
    assert pred.throughput == pytest.approx(1 / np.sum(p / mu), rel=1e-13)
    np.testing.assert_array_equal(pred.relative_delay, 0.0)
    np.testing.assert_allclose(pred.sojourn_time, 1 / mu, rtol=1e-13)


def test_unrouted_client_has_nan_delay_and_does_not_change_the_rest():
    mu = np.array([1.0, 0.5, 2.0, 0.3])
    p = np.array([0.4, 0.0, 0.35, 0.25])
    m = 6
    delay = relative_delay(mu, p, m).numpy()
    assert np.isnan(delay[1]) and np.isfinite(delay[[0, 2, 3]]).all()
    keep = [0, 2, 3]
    np.testing.assert_allclose(delay[keep], relative_delay(mu[keep], p[keep], m).numpy(), rtol=1e-12)
    assert throughput(mu, p, m).item() == pytest.approx(throughput(mu[keep], p[keep], m).item(), rel=1e-12)
    pred = predict(mu, p, m)
    assert pred.queue_length[1] == 0.0 and pred.utilisation[1] == 0.0
    assert pred.mean_staleness == pytest.approx(m - 1, rel=1e-12)
    assert bound(mu, p, m).item() == math.inf


def test_large_network_is_stable():
    rng = np.random.default_rng(11)
    n = m = 10_000
    mu = rng.lognormal(0.0, 1.0, n)
    p = rng.dirichlet(np.ones(n))
    start = time.perf_counter()
    pred = predict(mu, p, m)
    elapsed = time.perf_counter() - start
    print(f"predict(n=m=10000) took {elapsed:.2f} s")
    assert math.isfinite(pred.throughput) and pred.throughput > 0
    for arr in (pred.queue_length, pred.relative_delay, pred.utilisation, pred.sojourn_time):
        assert np.isfinite(arr).all()
    assert pred.mean_staleness == pytest.approx(m - 1, rel=1e-6)
    assert pred.queue_length.sum() == pytest.approx(m, rel=1e-6)
    assert np.all(pred.utilisation <= 1 + 1e-9)
    lam, _ = mva(mu, p, m)
    assert pred.throughput == pytest.approx(lam.item(), rel=1e-8)


# --------------------------------------------------------------------------- gradients


def test_throughput_gradient_matches_finite_difference():
    rng = np.random.default_rng(5)
    mu0, p0 = random_network(rng, 6)
    m = 8
    p = torch.tensor(p0, requires_grad=True)
    mu = torch.tensor(mu0, requires_grad=True)
    lam = throughput(mu, p, m)
    lam.backward()
    h = 1e-6
    # Directions within the simplex (sum zero) for p; any direction for mu.
    for a, b in [(0, 1), (2, 5), (4, 3)]:
        d = np.zeros(6)
        d[a], d[b] = 1.0, -1.0
        fd = (throughput(mu0, p0 + h * d, m).item() - throughput(mu0, p0 - h * d, m).item()) / (2 * h)
        assert float(p.grad.numpy() @ d) == pytest.approx(fd, rel=1e-6, abs=1e-9)
    for i in range(6):
        e = np.zeros(6)
        e[i] = h
        fd = (throughput(mu0 + e, p0, m).item() - throughput(mu0 - e, p0, m).item()) / (2 * h)
        assert mu.grad[i].item() == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_gradcheck_normalising_constants_and_delays():
    rng = np.random.default_rng(6)
    rho = torch.tensor(rng.uniform(0.1, 2.0, 5), requires_grad=True)
    assert torch.autograd.gradcheck(lambda r: log_normalising_constants(r, 6), (rho,))
    mu = torch.tensor(rng.uniform(0.2, 2.0, 5), requires_grad=True)
    p0 = rng.dirichlet(np.ones(5))
    assert torch.autograd.gradcheck(lambda u: relative_delay(u, p0, 6), (mu,))
    assert torch.autograd.gradcheck(lambda u: mean_queue_lengths(u, p0, 4), (mu,))


def test_bound_formula_and_gradient():
    rng = np.random.default_rng(8)
    mu0, p0 = random_network(rng, 5)
    m = 6
    c = BoundConstants(A=2.0, L=1.5, sigma=0.7, zeta=0.4, eta=0.02, T=500, time_budget=300)
    n = 5
    tau = relative_delay(mu0, p0, m).numpy()
    lam = throughput(mu0, p0, m).item()
    rest = c.eta * c.L * c.sigma**2 * np.sum(1 / (n**2 * p0)) + c.eta**2 * c.L**2 * (c.sigma**2 + c.zeta**2) * np.sum(
        tau / (n**2 * p0)
    )
    assert bound(mu0, p0, m, c, "update").item() == pytest.approx(c.A / (c.eta * c.T) + rest, rel=1e-12)
    assert bound(mu0, p0, m, c, "time").item() == pytest.approx(c.A / (c.eta * lam * c.time_budget) + rest, rel=1e-12)
    p = torch.tensor(p0, requires_grad=True)
    bound(mu0, p, m, c, "time").backward()
    d = np.array([1.0, -1.0, 0.0, 0.5, -0.5])
    h = 1e-6
    fd = (bound(mu0, p0 + h * d, m, c, "time").item() - bound(mu0, p0 - h * d, m, c, "time").item()) / (2 * h)
    assert float(p.grad.numpy() @ d) == pytest.approx(fd, rel=1e-6)


# --------------------------------------------------------------------------- routing optimisation


@pytest.fixture(scope="module")
def two_group_optima():
    return {obj: optimize_routing(TWO_GROUPS_MU, 10, objective=obj) for obj in ("update", "time")}


@pytest.mark.parametrize("objective", ["update", "time"])
def test_optimiser_improves_and_is_feasible(two_group_optima, objective):
    res = two_group_optima[objective]
    assert isinstance(res, OptimizedRouting)
    n = len(TWO_GROUPS_MU)
    assert res.p.sum() == pytest.approx(1.0, abs=1e-12)
    assert res.p.min() >= 1e-3 / n
    assert res.bound < res.bound_uniform * (1 - 1e-3)
    assert res.bound == pytest.approx(bound(TWO_GROUPS_MU, res.p, 10, objective=objective).item(), rel=1e-12)
    assert res.bound_uniform == pytest.approx(bound(TWO_GROUPS_MU, np.full(n, 0.1), 10, objective=objective).item(), rel=1e-12)
    assert res.throughput_uniform == pytest.approx(1.3903, abs=1e-4)
    # Routing cannot change the update-weighted mean staleness (identity): m - 1 for both.
    assert res.mean_staleness == pytest.approx(9.0, rel=1e-10)
    assert res.mean_staleness_uniform == pytest.approx(9.0, rel=1e-10)
    # Clients of the same speed are treated alike.
    assert np.ptp(res.p[:5]) < 1e-4 and np.ptp(res.p[5:]) < 1e-4


def test_per_update_optimum_slows_the_system_and_time_optimum_speeds_it(two_group_optima):
    upd, tim = two_group_optima["update"], two_group_optima["time"]
    # (a) cuts the relative delay of the slow clients by routing more to them, at the cost of throughput.
    assert upd.p[5:].mean() > 0.1 > upd.p[:5].mean()
    assert upd.relative_delay[5:].mean() < upd.relative_delay_uniform[5:].mean()
    assert upd.throughput < upd.throughput_uniform
    # (b) rewards throughput: more mass on fast clients than (a), and a faster system than both.
    assert tim.p[:5].sum() > upd.p[:5].sum()
    assert tim.throughput > tim.throughput_uniform > upd.throughput
    # Each optimum is optimal for its own objective only.
    c = BoundConstants()
    assert bound(TWO_GROUPS_MU, upd.p, 10, c, "update").item() < bound(TWO_GROUPS_MU, tim.p, 10, c, "update").item()
    assert bound(TWO_GROUPS_MU, tim.p, 10, c, "time").item() < bound(TWO_GROUPS_MU, upd.p, 10, c, "time").item()


def test_optimiser_respects_a_binding_floor_and_adam_agrees():
    p_min = 0.06  # above the unconstrained time-optimal 0.040 for slow clients
    res = optimize_routing(TWO_GROUPS_MU, 10, objective="time", p_min=p_min)
    assert res.p.min() >= p_min
    assert res.p[5:] == pytest.approx(np.full(5, p_min), abs=2e-3)
    assert res.p.sum() == pytest.approx(1.0, abs=1e-12)
    adam = optimize_routing(TWO_GROUPS_MU, 10, objective="time", method="adam", steps=400, restarts=0)
    lbfgs = optimize_routing(TWO_GROUPS_MU, 10, objective="time")
    assert adam.bound == pytest.approx(lbfgs.bound, rel=1e-4)


def test_optimiser_escapes_symmetric_saddle():
    # With a larger step size the staleness term dominates and the symmetric point is a saddle:
    # the restarts find a lower, asymmetric routing.
    c = BoundConstants(eta=0.05)
    sym = optimize_routing(TWO_GROUPS_MU, 10, c, "update", restarts=0)
    res = optimize_routing(TWO_GROUPS_MU, 10, c, "update", restarts=3)
    assert res.bound < sym.bound * (1 - 1e-2)
    assert res.bound <= res.bound_uniform


def test_optimize_concurrency():
    upd = optimize_concurrency(TWO_GROUPS_MU, [1, 4, 10], objective="update", restarts=0)
    # Per update, staleness only hurts: m = 1 (no staleness, uniform routing) is optimal.
    assert upd.m == 1
    assert upd.routing.p == pytest.approx(np.full(10, 0.1), abs=1e-6)
    tim = optimize_concurrency(TWO_GROUPS_MU, [1, 4, 10], objective="time", restarts=0)
    # Per unit of time, concurrency buys throughput.
    assert tim.m > 1
    assert tim.bounds[tim.m] == min(tim.bounds.values())
    assert set(tim.bounds) == {1, 4, 10}



def _bound_by_enumeration(mu, P, m, c: BoundConstants, objective: str) -> np.ndarray:
    """The working bound at each routing (row) of ``P``, from the product form summed over the state
    space (no Buzen recursion, no MVA, no autograd): ``lambda = G(m - 1) / G(m)``, ``E[tau_i] =
    E_{m-1}[X_i] / p_i`` and ``B = A / (eta T) + eta L sigma^2 sum 1 / (n^2 p_i) + eta^2 L^2 (sigma^2 +
    zeta^2) sum E[tau_i] / (n^2 p_i)``, ``T = c.T`` or ``lambda * time_budget``."""
    P = np.atleast_2d(P)
    n = P.shape[1]
    log_rho = np.log(P / mu)
    x_m, x_m1 = np.array(list(states(n, m))), np.array(list(states(n, m - 1)))
    w_m, w_m1 = np.exp(log_rho @ x_m.T), np.exp(log_rho @ x_m1.T)  # prod_i rho_i^{x_i}, per state
    lam = w_m1.sum(1) / w_m.sum(1)
    tau = (w_m1 @ x_m1) / w_m1.sum(1, keepdims=True) / P
    updates = c.T if objective == "update" else lam * c.time_budget
    return (c.A / (c.eta * updates) + c.eta * c.L * c.sigma**2 * (1 / P).sum(1) / n**2
            + c.eta**2 * c.L**2 * (c.sigma**2 + c.zeta**2) * (tau / P).sum(1) / n**2)


@pytest.mark.parametrize("objective", ["update", "time"])
def test_predicted_improvement_matches_brute_force_minimum(objective):
    """The figure's "bound's predicted improvement" ``100 (1 - B(p*) / B(uniform))`` (afl/figures/
    routing_gain.py) against the bound minimised independently: on 3 clients the simplex is
    gridded (step 1/200), the best point refined by Nelder-Mead, each value from state enumeration."""
    from afl.figures.routing_gain import predicted_improvement  # here: the rest of the file needs no matplotlib

    mu, m = np.array([2.0, 1.0, 0.1]), 3
    constants = BoundConstants(A=1.0, L=1.0, sigma=1.0, zeta=3.0, eta=0.01, T=1000, time_budget=300)
    etas = [0.005, 0.02]
    h = 1 / 200
    grid = np.array([(i * h, j * h) for i in range(1, 200) for j in range(1, 200 - i)])
    grid = np.column_stack([grid, 1 - grid.sum(1)])
    floor = 1e-3 / 3  # optimize_routing's default p_min: the optimum must lie inside it
    expected = []
    for eta in etas:
        c = dataclasses.replace(constants, eta=eta)
        values = _bound_by_enumeration(mu, grid, m, c, objective)

        def b(x):
            p = np.array([x[0], x[1], 1 - x[0] - x[1]])
            return _bound_by_enumeration(mu, p, m, c, objective)[0] if p.min() > floor else np.inf

        best = optimize.minimize(b, grid[values.argmin(), :2], method="Nelder-Mead",
                                 options={"xatol": 1e-12, "fatol": 1e-15, "maxiter": 5000})
        assert best.fun <= values.min() and min(*best.x, 1 - best.x.sum()) > 2 * floor  # an interior optimum
        uniform = _bound_by_enumeration(mu, np.full(3, 1 / 3), m, c, objective)[0]
        expected.append(100 * (1 - best.fun / uniform))
    # By hand from the enumeration: 0.0276% and 2.770% per update, 83.30% and 53.67% per unit of time.
    assert expected == pytest.approx({"update": [0.0276, 2.770], "time": [83.30, 53.67]}[objective], rel=1e-3)
    improvement = predicted_improvement(mu, m, constants, objective, etas)
    np.testing.assert_allclose(improvement, expected, rtol=1e-7, atol=1e-7)


# --------------------------------------------------------------------------- API and validation


def test_prediction_is_frozen_and_consistent():
    rng = np.random.default_rng(9)
    mu, p = random_network(rng, 4)
    pred = predict(list(mu), list(p), 5)
    assert isinstance(pred, Prediction)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pred.m = 3
    assert pred.m == 5 and isinstance(pred.throughput, float)
    np.testing.assert_allclose(pred.queue_length, mean_queue_lengths(mu, p, 5).numpy(), rtol=1e-13)
    np.testing.assert_allclose(pred.relative_delay, relative_delay(mu, p, 5).numpy(), rtol=1e-13)
    np.testing.assert_allclose(pred.utilisation, utilisation(mu, p, 5).numpy(), rtol=1e-13)
    np.testing.assert_allclose(pred.sojourn_time, sojourn_time(mu, p, 5).numpy(), rtol=1e-13)
    # Little's law for the whole network: m = lambda * sum_i p_i * sojourn_i.
    assert pred.throughput * np.sum(p * pred.sojourn_time) == pytest.approx(5, rel=1e-12)


def test_accepts_float32_tensors_and_returns_float64():
    mu = torch.tensor([1.0, 2.0], dtype=torch.float32)
    p = torch.tensor([0.5, 0.5], dtype=torch.float32)
    out = relative_delay(mu, p, 3)
    assert out.dtype == torch.float64
    assert throughput(mu, p, 3).item() == pytest.approx(throughput([1.0, 2.0], [0.5, 0.5], 3).item(), rel=1e-7)


@pytest.mark.parametrize(
    "mu,p,m,word",
    [
        ([1.0, 0.0], [0.5, 0.5], 3, "mu"),
        ([1.0, -2.0], [0.5, 0.5], 3, "mu"),
        ([1.0, float("nan")], [0.5, 0.5], 3, "mu"),
        ([], [], 3, "mu"),
        ([[1.0, 2.0]], [0.5, 0.5], 3, "mu"),
        ([1.0, 2.0], [0.5, 0.6], 3, "p"),
        ([1.0, 2.0], [1.2, -0.2], 3, "p"),
        ([1.0, 2.0], [0.3, 0.3, 0.4], 3, "p"),
        ([1.0, 2.0], [0.5, 0.5], 0, "m"),
        ([1.0, 2.0], [0.5, 0.5], 2.5, "m"),
        ([1.0, 2.0], [0.5, 0.5], True, "m"),
        ([1.0, 2.0], [0.5, 0.5], "3", "m"),
        (["a", "b"], [0.5, 0.5], 3, "mu"),
    ],
)
def test_validation_errors(mu, p, m, word):
    for fn in (throughput, relative_delay, predict, mva):
        with pytest.raises(ValueError) as info:
            fn(mu, p, m)
        msg = str(info.value)
        assert msg.startswith(word + ":") and "fix:" in msg and "\n" not in msg
        assert isinstance(info.value, AflError)


def test_validation_tolerance_and_other_arguments():
    throughput([1.0, 2.0], [0.5, 0.5 + 5e-7], 3)  # within the 1e-6 tolerance
    assert throughput([1.0, 2.0], [0.5, 0.5], 4.0).item() == throughput([1.0, 2.0], [0.5, 0.5], 4).item()
    with pytest.raises(QueueingError, match="^rho:"):
        log_normalising_constants([0.0, 0.0], 3)
    with pytest.raises(QueueingError, match="^rho:"):
        log_normalising_constants([1.0, -1.0], 3)
    with pytest.raises(QueueingError, match="^c:"):
        mean_queue_lengths([1.0], [1.0], -1)
    with pytest.raises(QueueingError, match="^objective:"):
        bound([1.0, 2.0], [0.5, 0.5], 3, objective="wallclock")
    with pytest.raises(QueueingError, match="^BoundConstants.eta:"):
        BoundConstants(eta=0.0)
    with pytest.raises(QueueingError, match="^p_min:"):
        optimize_routing([1.0, 2.0], 3, p_min=0.6)
    with pytest.raises(QueueingError, match="^method:"):
        optimize_routing([1.0, 2.0], 3, method="sgd")
    assert mean_queue_lengths([1.0, 2.0], [0.5, 0.5], 0).tolist() == [0.0, 0.0]


def test_power_routing():
    mu = np.array([0.5, 1.0, 2.0, 4.0])
    assert power_routing(mu, 0) == pytest.approx(np.full(4, 0.25))
    assert power_routing(mu, 0.5) == pytest.approx(np.sqrt(mu) / np.sqrt(mu).sum())
    p = power_routing(mu, 1)
    assert p / mu == pytest.approx(np.full(4, 1 / mu.sum()))  # equal loads
    m = 6
    assert throughput(mu, p, m).item() == pytest.approx(m * mu.sum() / (m + 4 - 1), rel=1e-12)
    with pytest.raises(QueueingError, match="^mu:"):
        power_routing([1.0, 0.0], 1)


# --------------------------------------------------------------------------- synchronous rounds


def test_koloskova_example_expected_round_time():
    # Koloskova, Stich & Jaggi 2022: 900 of 1000 clients take 10 s, 100 take 60 s, C = 10.
    durations = [10.0] * 900 + [60.0] * 100
    # i.i.d. draws: the round is 10 s only if all 10 are fast, P = 0.9^10, else 60 s.
    assert expected_max_duration(durations, 10, replace=True) == pytest.approx(60 - 50 * 0.9**10, rel=1e-12)
    assert round(expected_max_duration(durations, 10, replace=True), 1) == 42.6
    # 10 distinct clients: P(all fast) = C(900, 10) / C(1000, 10).
    distinct = 60 - 50 * math.comb(900, 10) / math.comb(1000, 10)
    assert expected_max_duration(durations, 10) == pytest.approx(distinct, rel=1e-12)
    assert 42.6 < distinct < 42.7
    # Asynchronous SGD with C tasks in flight needs the mean duration per C gradients.
    assert np.mean(durations) == 15.0


@pytest.mark.parametrize("seed", range(4))
def test_expected_max_duration_matches_enumeration(seed):
    rng = np.random.default_rng(seed)
    d = rng.choice([1.0, 2.5, 4.0, 7.0], size=6)
    for c in (1, 2, 3, 6):
        picks = list(itertools.combinations(range(6), c))
        assert expected_max_duration(d, c) == pytest.approx(np.mean([d[list(k)].max() for k in picks]), rel=1e-12)
        draws = list(itertools.product(range(6), repeat=c))
        assert expected_max_duration(d, c, replace=True) == pytest.approx(np.mean([d[list(k)].max() for k in draws]),
                                                                          rel=1e-12)


def test_expected_max_duration_validation():
    assert expected_max_duration([3.0, 3.0], 2) == 3.0
    with pytest.raises(QueueingError, match="^c:"):
        expected_max_duration([1.0, 2.0], 3)
    assert expected_max_duration([1.0, 2.0], 3, replace=True) == pytest.approx(2 - 0.5**3)
    with pytest.raises(QueueingError, match="^durations:"):
        expected_max_duration([], 1)
    with pytest.raises(QueueingError, match="^durations:"):
        expected_max_duration([1.0, -1.0], 1)


def test_optimize_concurrency_breaks_ties_toward_the_smaller_m(monkeypatch):
    """Documented: ties go to the smaller m (a mutation survivor: the optimiser's floats never tie)."""
    from types import SimpleNamespace

    from afl.queueing import routing

    monkeypatch.setattr(routing, "optimize_routing", lambda mu, m, *a, **k: SimpleNamespace(bound=1.0 if m > 2 else 2.0))
    assert optimize_concurrency(TWO_GROUPS_MU, [6, 3, 4, 1]).m == 3
