"""Routing optimisation of generalized AsyncSGD against its working convergence bound.

The second seed (Alahyane, Comte, Jonckheere & Moulines 2025) bounds the optimisation error
of AsyncSGD on the closed Jackson network of ``afl.queueing.network`` by

    B(p) = A / (eta T) + eta L sigma^2 sum_i 1 / (n^2 p_i)
           + eta^2 L^2 (sigma^2 + zeta^2) sum_i E[tau_i] / (n^2 p_i),

with ``E[tau_i]`` the relative delay and ``T`` a fixed number of server updates (objective
``"update"``, per-update progress) or ``T = lambda(p) * time_budget`` (objective ``"time"``,
progress per unit of wall-clock time). ``bound`` evaluates it (differentiably, through
Buzen's recursion), ``optimize_routing`` and ``optimize_concurrency`` minimise it over ``p``
(and ``m``), ``power_routing`` is the one-parameter family ``p_i ~ mu_i^a`` the experiments
compare against. The constants ``A, L, sigma, zeta, eta`` of a config come from
``afl.queueing.model.resolve_constants``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import torch

from afl.queueing.network import (
    _DTYPE,
    QueueingError,
    _as_count,
    _check_mu,
    _check_network,
    _numpy,
    _queue_lengths,
    _throughputs,
)
from afl.sim import selection

__all__ = [
    "BoundConstants",
    "bound",
    "OptimizedRouting",
    "optimize_routing",
    "OptimizedConcurrency",
    "optimize_concurrency",
    "power_routing",
]

_OBJECTIVES = ("update", "time")


@dataclass(frozen=True)
class BoundConstants:
    """Constants of the working convergence bound ``B(p)`` (the second seed, Alahyane et al. 2025).

    ``A``: initial optimality gap ``f(x_0) - f*``; ``L``: smoothness constant; ``sigma``:
    stochastic-gradient noise level; ``zeta``: client heterogeneity (gradient dissimilarity);
    ``eta``: step size; ``T``: number of server updates (objective ``"update"``);
    ``time_budget``: wall-clock budget, ``T = lambda(p) * time_budget`` (objective ``"time"``).
    The defaults describe a unit-scale problem (``A = L = sigma = zeta = 1``) with step size
    ``eta = 0.01`` and 1000 updates or 1000 time units: for ~10 clients and ``m ~ 10`` the
    per-update optimum then trades variance against staleness and the wall-clock optimum
    also weighs throughput, the regime the second seed studies.
    """

    A: float = 1.0
    L: float = 1.0
    sigma: float = 1.0
    zeta: float = 1.0
    eta: float = 0.01
    T: float = 1000.0
    time_budget: float = 1000.0

    def __post_init__(self):
        for name in ("A", "L", "eta", "T", "time_budget"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
                raise QueueingError(f"BoundConstants.{name}: must be a finite number > 0, got {value!r}; fix: pass a positive value")
        for name in ("sigma", "zeta"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
                raise QueueingError(f"BoundConstants.{name}: must be a finite number >= 0, got {value!r}; fix: pass a non-negative value")


def _check_objective(objective: str) -> str:
    if objective not in _OBJECTIVES:
        raise QueueingError(f"objective: must be 'update' or 'time', got {objective!r}; fix: pick one of those")
    return objective


def _bound_terms(mu: torch.Tensor, p: torch.Tensor, m: int, c: BoundConstants, objective: str):
    """(B(p), lambda(p), E_{m-1}[X]) for validated inputs with every ``p_i > 0`` (``bound``'s formula)."""
    n = p.numel()
    rho = p / mu
    lams = _throughputs(rho, m)
    q_m1 = _queue_lengths(rho, lams, m)[0]
    lam = lams[m - 1]
    updates = c.T if objective == "update" else lam * c.time_budget
    n2 = float(n) ** 2
    b = (
        c.A / (c.eta * updates)
        + c.eta * c.L * c.sigma**2 * (1.0 / p).sum() / n2
        + c.eta**2 * c.L**2 * (c.sigma**2 + c.zeta**2) * (q_m1 / p**2).sum() / n2  # E[tau_i] / p_i
    )
    if not isinstance(b, torch.Tensor):
        b = torch.as_tensor(b, dtype=_DTYPE)
    return b, lam, q_m1


def bound(mu, p, m, constants: BoundConstants | None = None, objective: str = "time") -> torch.Tensor:
    """The working bound of Alahyane et al. 2025 (0-d tensor, differentiable w.r.t. ``mu`` and ``p``):

    ``B(p) = A / (eta T) + eta L sigma^2 sum_i 1/(n^2 p_i)
    + eta^2 L^2 (sigma^2 + zeta^2) sum_i E[tau_i] / (n^2 p_i)``,

    with ``T = constants.T`` (``objective="update"``) or ``T = lambda(p) * constants.time_budget``
    (``objective="time"``). ``E[tau_i] = E_{m-1}[X_i] / p_i`` is the relative delay. The bound is
    ``inf`` if some ``p_i = 0`` (the ``1 / p_i`` variance term diverges).
    """
    mu, p, m = _check_network(mu, p, m)
    constants = BoundConstants() if constants is None else constants
    objective = _check_objective(objective)
    if not bool((p.detach() > 0).all()):
        return torch.tensor(math.inf, dtype=_DTYPE)
    return _bound_terms(mu, p, m, constants, objective)[0]


@dataclass(frozen=True, eq=False)
class OptimizedRouting:
    """Result of ``optimize_routing``. Arrays have shape ``(n,)``.

    ``mean_staleness`` is the update-weighted ``sum_i p_i E[tau_i]``, which is ``m - 1`` for
    every routing (the identity of ``afl.queueing.network``); what routing changes is how
    staleness is spread over clients (``relative_delay``) and the throughput.
    """

    p: np.ndarray
    bound: float
    bound_uniform: float
    throughput: float
    throughput_uniform: float
    mean_staleness: float
    mean_staleness_uniform: float
    relative_delay: np.ndarray = field(default=None)
    relative_delay_uniform: np.ndarray = field(default=None)
    m: int = 0
    objective: str = ""


def _routing_from_theta(theta: torch.Tensor, p_min: float) -> torch.Tensor:
    """``p = p_min + (1 - n p_min) softmax(theta)``: ``p_i >= p_min`` and ``sum p = 1`` exactly."""
    n = theta.numel()
    return p_min + (1.0 - n * p_min) * torch.softmax(theta, dim=0)


def optimize_routing(
    mu,
    m,
    constants: BoundConstants | None = None,
    objective: str = "time",
    p_min: float | None = None,
    steps: int = 200,
    lr: float | None = None,
    method: str = "lbfgs",
    restarts: int = 3,
    seed: int = 0,
) -> OptimizedRouting:
    """Routing ``p`` minimising ``bound(mu, p, m, constants, objective)`` (Alahyane et al. 2025).

    ``p = p_min + (1 - n p_min) softmax(theta)``, so ``p_i >= p_min`` and ``sum p = 1`` hold
    exactly. The first run starts at ``theta = 0`` (uniform routing); the bound is not convex
    in ``p`` (for some constants the symmetric point is a saddle and the optimum concentrates
    on a few clients), so ``restarts`` further runs start from ``theta ~ N(0, I)`` drawn from
    a generator seeded with ``seed`` (deterministic). Each run minimises ``B(p) / B(uniform)``
    with autograd through Buzen's recursion, by L-BFGS with a strong-Wolfe line search
    (``method="lbfgs"``, at most ``steps`` evaluations, default ``lr`` 1) or Adam
    (``method="adam"``, ``steps`` iterations, default ``lr`` 0.05). The best routing evaluated
    is returned, so the result is never worse than uniform. ``p_min`` defaults to ``1e-3 / n``
    and must lie in ``[0, 1/n]``.
    """
    mu = _check_mu(mu).detach()
    n = mu.numel()
    m = _as_count(m, "m", 1)
    constants = BoundConstants() if constants is None else constants
    objective = _check_objective(objective)
    steps = _as_count(steps, "steps", 0)
    restarts = _as_count(restarts, "restarts", 0)
    if method not in ("lbfgs", "adam"):
        raise QueueingError(f"method: must be 'lbfgs' or 'adam', got {method!r}; fix: pick one of those")
    p_min = 1e-3 / n if p_min is None else float(p_min)
    if not (0.0 <= p_min <= 1.0 / n):
        raise QueueingError(f"p_min: must lie in [0, 1/n] = [0, {1.0 / n:.6g}], got {p_min!r}; fix: lower the floor")
    if lr is None:
        lr = 1.0 if method == "lbfgs" else 0.05
    if not (math.isfinite(lr) and lr > 0):
        raise QueueingError(f"lr: must be a finite number > 0, got {lr!r}; fix: pass a positive learning rate")

    uniform = torch.full((n,), 1.0 / n, dtype=_DTYPE, device=mu.device)
    with torch.no_grad():
        b_uni, lam_uni, q_uni = _bound_terms(mu, uniform, m, constants, objective)
    scale = float(b_uni)
    best = {"value": scale, "theta": torch.zeros(n, dtype=_DTYPE, device=mu.device)}

    def run(theta: torch.Tensor) -> None:
        def objective_fn() -> torch.Tensor:
            p = _routing_from_theta(theta, p_min)
            value = _bound_terms(mu, p, m, constants, objective)[0]
            v = float(value.detach())
            if math.isfinite(v) and v < best["value"]:
                best["value"] = v
                best["theta"] = theta.detach().clone()
            return value / scale

        if method == "lbfgs":
            opt = torch.optim.LBFGS(
                [theta], lr=lr, max_iter=steps, max_eval=steps, history_size=20,
                tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe",
            )

            def closure():
                opt.zero_grad()
                loss = objective_fn()
                if torch.isfinite(loss):
                    loss.backward()
                return loss

            opt.step(closure)
        else:
            opt = torch.optim.Adam([theta], lr=lr)
            for _ in range(steps):
                opt.zero_grad()
                loss = objective_fn()
                if not torch.isfinite(loss):
                    break
                loss.backward()
                opt.step()
            with torch.no_grad():
                objective_fn()  # score the last iterate too

    if steps > 0 and n > 1 and p_min < 1.0 / n:
        gen = torch.Generator().manual_seed(int(seed))
        starts = [torch.zeros(n, dtype=_DTYPE)] + [torch.randn(n, generator=gen, dtype=_DTYPE) for _ in range(restarts)]
        for start in starts:
            run(start.to(mu.device).requires_grad_(True))

    with torch.no_grad():
        p = _routing_from_theta(best["theta"], p_min)
        b, lam, q = _bound_terms(mu, p, m, constants, objective)
        delay, delay_uni = q / p, q_uni / uniform
    return OptimizedRouting(
        p=_numpy(p),
        bound=float(b),
        bound_uniform=scale,
        throughput=float(lam),
        throughput_uniform=float(lam_uni),
        mean_staleness=float((p * delay).sum()),
        mean_staleness_uniform=float((uniform * delay_uni).sum()),
        relative_delay=_numpy(delay),
        relative_delay_uniform=_numpy(delay_uni),
        m=m,
        objective=objective,
    )


@dataclass(frozen=True, eq=False)
class OptimizedConcurrency:
    """Result of ``optimize_concurrency``: the best ``m``, its routing, and the bound for each ``m`` tried."""

    m: int
    routing: OptimizedRouting
    bounds: dict


def optimize_concurrency(mu, m_values, constants: BoundConstants | None = None, objective: str = "time", **kwargs) -> OptimizedConcurrency:
    """Choose ``m`` (from ``m_values``) and ``p`` jointly: ``optimize_routing`` at each ``m``, keep the smallest bound.

    ``kwargs`` go to ``optimize_routing``. Ties go to the smaller ``m``.
    """
    values = sorted({_as_count(v, "m_values", 1) for v in np.atleast_1d(np.asarray(m_values, dtype=object))})
    if not values:
        raise QueueingError("m_values: is empty; fix: pass at least one concurrency level")
    results = {v: optimize_routing(mu, v, constants, objective, **kwargs) for v in values}
    best_m = min(values, key=lambda v: (results[v].bound, v))
    return OptimizedConcurrency(m=best_m, routing=results[best_m], bounds={v: results[v].bound for v in values})


def power_routing(mu, power: float) -> np.ndarray:
    """``afl.sim.selection.power_routing`` (``p_i ~ mu_i^a``) of checked rates ``mu``, shape ``(n,)``."""
    return selection.power_routing(_check_mu(mu).detach().cpu().numpy(), power)
