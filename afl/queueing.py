"""Closed Jackson network of generalized AsyncSGD (SPEC section 5).

Client ``i`` is a FIFO ``./M/1`` queue with exponential service rate ``mu_i``; ``m`` tasks
circulate; a finished task (one server update) is replaced by a task routed to client ``j``
with probability ``p_j``. The load of client ``i`` is ``rho_i = p_i / mu_i`` and the
stationary law at population ``c`` is the product form (Jackson; Gordon & Newell 1967)

    pi_c(x) = prod_i rho_i^{x_i} / G(c),   x in N^n, sum_i x_i = c,

with normalising constant ``G(c) = sum_{|x| = c} prod_i rho_i^{x_i}``.

Everything here is a torch float64 computation, differentiable with respect to ``mu`` and
``p`` through autograd (inputs may be tensors with ``requires_grad``, numpy arrays or lists).
``G`` is handled through logarithms and rescaled rows, so ``n`` and ``m`` in the tens of
thousands neither overflow nor underflow; the cost is ``O(n m)`` arithmetic in ``m``
vectorised steps of length ``n`` (with autograd, the graph keeps ``O(n m)`` floats: about
2.4 GB at ``n = m = 10,000``; use ``predict`` or ``torch.no_grad()`` for large forward-only work).

Conventions
-----------
* ``lambda(c) = G(c - 1) / G(c)``: server updates per unit time at population ``c``
  (client ``i`` completes the share ``p_i`` of them).
* ``E_c[X_i]``: mean number of tasks at client ``i`` (queued or in service) at population ``c``.
* Relative delay ``E[tau_i] = E_{m-1}[X_i] / p_i`` (discrete Little's law + arrival
  theorem): the mean number of *other* server updates applied between a task's dispatch to
  client ``i`` and the application of its result, i.e. the mean staleness ``t - v`` of the
  updates coming from client ``i``. Counting the task's own update as well gives
  ``E[tau_i] + 1``. A client with ``p_i = 0`` never receives a task: its relative delay is
  undefined and reported as ``nan``.
* Identity: ``sum_i p_i E[tau_i] = sum_i E_{m-1}[X_i] = m - 1`` for every ``p`` and ``mu``.

Routing optimisation (the second seed, Alahyane, Comte, Jonckheere & Moulines 2025) minimises
the working bound of SPEC section 5,

    B(p) = A / (eta T) + eta L sigma^2 sum_i 1 / (n^2 p_i)
           + eta^2 L^2 (sigma^2 + zeta^2) sum_i E[tau_i] / (n^2 p_i),

with ``T`` a fixed number of server updates (objective ``"update"``, per-update progress) or
``T = lambda(p) * time_budget`` (objective ``"time"``, progress per unit of wall-clock time).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import torch

from afl.errors import AflError

__all__ = [
    "QueueingError",
    "log_normalising_constants",
    "throughput",
    "mean_queue_lengths",
    "utilisation",
    "relative_delay",
    "sojourn_time",
    "mva",
    "Prediction",
    "predict",
    "BoundConstants",
    "bound",
    "OptimizedRouting",
    "optimize_routing",
    "OptimizedConcurrency",
    "optimize_concurrency",
    "power_routing",
    "expected_max_duration",
]

_DTYPE = torch.float64
_P_SUM_TOL = 1e-6
_OBJECTIVES = ("update", "time")


class QueueingError(AflError, ValueError):
    """Invalid input to the queueing model (a ``ValueError``); the message is one line."""


# --------------------------------------------------------------------------- validation


def _as_vector(x, name: str) -> torch.Tensor:
    """``x`` as a 1-D float64 tensor (autograd history kept for tensors)."""
    if isinstance(x, torch.Tensor):
        t = x if x.dtype == _DTYPE else x.to(_DTYPE)
    else:
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError):
            raise QueueingError(f"{name}: expected a 1-D array of numbers; fix: pass a list, numpy array or tensor of floats") from None
    if t.dim() != 1 or t.numel() == 0:
        raise QueueingError(f"{name}: expected a non-empty 1-D array, got shape {tuple(t.shape)}; fix: pass one value per client")
    if not bool(torch.isfinite(t.detach()).all()):
        raise QueueingError(f"{name}: contains nan or inf; fix: pass finite values")
    return t


def _as_count(m, name: str, minimum: int) -> int:
    """``m`` as a Python int ``>= minimum`` (integral floats such as ``10.0`` are accepted)."""
    if isinstance(m, bool):
        raise QueueingError(f"{name}: expected an integer >= {minimum}, got {m!r}; fix: pass an integer")
    if isinstance(m, torch.Tensor) and m.numel() == 1:
        m = m.item()
    if isinstance(m, numbers.Integral):
        value = int(m)
    elif isinstance(m, numbers.Real) and math.isfinite(float(m)) and float(m).is_integer():
        value = int(m)
    else:
        raise QueueingError(f"{name}: expected an integer >= {minimum}, got {m!r}; fix: pass an integer")
    if value < minimum:
        raise QueueingError(f"{name}: must be >= {minimum}, got {value}; fix: pass an integer >= {minimum}")
    return value


def _check_mu(mu) -> torch.Tensor:
    mu = _as_vector(mu, "mu")
    if not bool((mu.detach() > 0).all()):
        raise QueueingError("mu: service rates must all be > 0; fix: give every client a positive rate")
    return mu


def _check_p(p, n: int | None = None) -> torch.Tensor:
    p = _as_vector(p, "p")
    if n is not None and p.numel() != n:
        raise QueueingError(f"p: has {p.numel()} entries but mu has {n}; fix: give one routing probability per client")
    pd = p.detach()
    if not bool((pd >= 0).all()):
        raise QueueingError("p: routing probabilities must be >= 0; fix: remove the negative entries")
    total = float(pd.sum())
    if abs(total - 1.0) > _P_SUM_TOL:
        raise QueueingError(f"p: routing probabilities sum to {total:.9g}, not 1 (tolerance {_P_SUM_TOL:g}); fix: normalise p, e.g. p / p.sum()")
    return p


def _check_network(mu, p, m, m_name: str = "m", m_min: int = 1) -> tuple[torch.Tensor, torch.Tensor, int]:
    mu = _check_mu(mu)
    p = _check_p(p, mu.numel())
    m = _as_count(m, m_name, m_min)
    if p.device != mu.device:
        p = p.to(mu.device)
    return mu, p, m


# --------------------------------------------------------------------------- core recursions


def _log_ratios(rho: torch.Tensor, m: int) -> torch.Tensor:
    """``log G(c) - log G(c - 1)`` for ``c = 1..m`` (shape ``(m,)``) for validated loads ``rho``.

    Buzen's recursion ``g_j(c) = g_{j-1}(c) + rho_j g_j(c - 1)`` with ``g_0(c) = 0`` for
    ``c >= 1`` unrolls over ``j`` to ``g_j(c) = sum_{k <= j} rho_k g_k(c - 1)``: row ``c`` of
    Buzen's table is the cumulative sum over clients of ``rho_j g_j(c - 1)`` (in log space,
    ``logcumsumexp(log rho + log g(c - 1))``). We evaluate that scan in rescaled linear form,
    which is the same computation several times faster than ``logcumsumexp``: loads are
    divided by ``s = max rho`` (so ``r_j = rho_j / s <= 1``) and each row is divided by its last
    entry ``G'(c)``, so every stored entry lies in ``[0, 1]``; the logarithms of the scale
    factors carry the magnitude. Because ``G'(c) >= r_max G'(c - 1) = G'(c - 1)``, each
    normaliser is ``>= 1``: nothing overflows, and an entry that underflows to 0 is one whose
    share of every later ``G`` is below the float64 range. All terms are positive (no
    cancellation), and the ratios ``G(c) / G(c - 1) = 1 / lambda(c)`` come out directly,
    without differencing large logarithms.
    """
    positive = rho.detach() > 0
    if not bool(positive.all()):
        # A client with rho_i = 0 contributes the factor 1 (x_i = 0) to every term of G.
        rho = rho[positive]
    scale = rho.detach().max()
    r = rho / scale
    log_scale = torch.log(scale)
    row = torch.ones_like(r)  # row c = 0: g_j(0) = 1
    lasts = []
    for _ in range(m):
        row = torch.cumsum(r * row, dim=0)
        last = row[-1]
        lasts.append(last)
        row = row / last
    if not lasts:
        return torch.zeros(0, dtype=rho.dtype, device=rho.device)
    return torch.log(torch.stack(lasts)) + log_scale


def _log_g(rho: torch.Tensor, m: int) -> torch.Tensor:
    """``log G(0..m)`` for validated loads (see ``_log_ratios``)."""
    ratios = _log_ratios(rho, m)
    return torch.cat([torch.zeros(1, dtype=ratios.dtype, device=ratios.device), torch.cumsum(ratios, dim=0)])


def _queue_lengths(rho: torch.Tensor, lam: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(E_{c-1}[X], E_c[X]) by Q_i(k) = rho_i lambda(k) (1 + Q_i(k-1)), Q_i(0) = 0 (c >= 1).

    ``lam[k - 1] = lambda(k) = G(k - 1) / G(k)``. Each factor ``rho_i lambda(k)`` is the
    utilisation of client ``i`` at population ``k`` (<= 1), so errors do not grow.
    """
    q_prev = torch.zeros_like(rho)
    q = q_prev
    for k in range(1, c + 1):
        q_prev, q = q, rho * lam[k - 1] * (1.0 + q)
    return q_prev, q


def _throughputs(rho: torch.Tensor, m: int) -> torch.Tensor:
    """``lambda(c) = G(c - 1) / G(c)`` for ``c = 1..m``."""
    return torch.exp(-_log_ratios(rho, m))


def log_normalising_constants(rho, m) -> torch.Tensor:
    """``log G(c)`` for ``c = 0..m``, shape ``(m + 1,)`` (SPEC section 5; Buzen 1973).

    Buzen's convolution recursion ``g_0(0) = 1``, ``g_0(c > 0) = 0``,
    ``g_j(c) = g_{j-1}(c) + rho_j g_j(c - 1)``, ``G(c) = g_n(c)``, returned in log space. For
    ``c >= 1`` the recursion over ``j`` unrolls to ``g_j(c) = sum_{k <= j} rho_k g_k(c - 1)``,
    so each row ``c`` of the table is one cumulative sum over the clients (in log space,
    ``logcumsumexp(log rho + log g(c - 1))``): ``m`` vectorised steps of length ``n``. The scan
    is run on rows rescaled to ``[0, 1]``, with the logarithms of the scale factors carrying
    the magnitude, so ``n = m = 10,000`` neither overflows nor underflows (about a second on
    one CPU core). All terms are positive, so there is no cancellation. Clients with
    ``rho_i = 0`` are dropped (factor 1 in every term).

    ``rho`` are the loads ``p_i / mu_i`` (``>= 0``, at least one positive); ``m >= 0``.
    """
    rho = _as_vector(rho, "rho")
    if not bool((rho.detach() >= 0).all()):
        raise QueueingError("rho: loads must be >= 0; fix: pass rho_i = p_i / mu_i with p_i >= 0 and mu_i > 0")
    if not bool((rho.detach() > 0).any()):
        raise QueueingError("rho: all loads are zero; fix: route some traffic (p_i > 0) to at least one client")
    return _log_g(rho, _as_count(m, "m", 0))


def throughput(mu, p, m) -> torch.Tensor:
    """Server updates per unit time ``lambda(m) = G(m - 1) / G(m)`` (SPEC section 5; Buzen 1973)."""
    mu, p, m = _check_network(mu, p, m)
    return _throughputs(p / mu, m)[m - 1]


def mean_queue_lengths(mu, p, c) -> torch.Tensor:
    """``E_c[X_i] = sum_{k=1..c} rho_i^k G(c - k) / G(c)``, shape ``(n,)`` (SPEC section 5).

    Evaluated by the equivalent positive recursion ``Q_i(k) = rho_i lambda(k) (1 + Q_i(k - 1))``,
    ``Q_i(0) = 0``, ``lambda(k) = G(k - 1) / G(k)`` (Reiser & Lavenberg 1980), vectorised over
    clients. ``c = 0`` gives zeros.
    """
    mu, p, c = _check_network(mu, p, c, "c", 0)
    rho = p / mu
    if c == 0:
        return torch.zeros_like(rho)
    return _queue_lengths(rho, _throughputs(rho, c), c)[1]


def utilisation(mu, p, m) -> torch.Tensor:
    """``P_m(X_i >= 1) = rho_i lambda(m)``, the fraction of time client ``i`` is busy (SPEC section 5)."""
    mu, p, m = _check_network(mu, p, m)
    rho = p / mu
    return rho * _throughputs(rho, m)[m - 1]


def _relative_delay(p: torch.Tensor, q_m1: torch.Tensor) -> torch.Tensor:
    routed = p.detach() > 0
    if bool(routed.all()):
        return q_m1 / p
    safe_p = torch.where(routed, p, torch.ones_like(p))
    return torch.where(routed, q_m1 / safe_p, torch.full_like(p, math.nan))


def relative_delay(mu, p, m) -> torch.Tensor:
    """Mean staleness of client ``i``'s updates, ``E[tau_i] = E_{m-1}[X_i] / p_i``, shape ``(n,)``.

    SPEC section 5 (discrete Little's law; by the arrival theorem a task routed to client ``i``
    sees the network at population ``m - 1``). ``E[tau_i]`` counts the *other* server updates
    applied between the task's dispatch and the application of its result (staleness
    ``t - v``); counting the task's own update too gives ``E[tau_i] + 1``. Entries with
    ``p_i = 0`` are ``nan`` (such a client never receives a task). ``sum_i p_i E[tau_i] = m - 1``.
    """
    mu, p, m = _check_network(mu, p, m)
    rho = p / mu
    q_m1 = _queue_lengths(rho, _throughputs(rho, m), m)[0]
    return _relative_delay(p, q_m1)


def sojourn_time(mu, p, m) -> torch.Tensor:
    """Mean wall-clock time of a task at client ``i``: ``(1 + E_{m-1}[X_i]) / mu_i`` (SPEC section 5).

    A task arriving at client ``i`` finds ``E_{m-1}[X_i]`` tasks there (arrival theorem) and
    waits for them and for its own exponential service, each of mean ``1 / mu_i``.
    """
    mu, p, m = _check_network(mu, p, m)
    rho = p / mu
    q_m1 = _queue_lengths(rho, _throughputs(rho, m), m)[0]
    return (1.0 + q_m1) / mu


def mva(mu, p, m) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean-value analysis (Reiser & Lavenberg 1980): ``(lambda(m), E_m[X])``.

    ``lambda(c) = c / sum_i rho_i (1 + Q_i(c - 1))`` and ``Q_i(c) = lambda(c) rho_i (1 + Q_i(c - 1))``
    from ``Q_i(0) = 0`` (visit ratios ``p_i``, mean service times ``1 / mu_i``). It uses no
    normalising constant, so it is an independent cross-check of Buzen's recursion.
    """
    mu, p, m = _check_network(mu, p, m)
    rho = p / mu
    q = torch.zeros_like(rho)
    lam = torch.zeros((), dtype=rho.dtype, device=rho.device)
    for c in range(1, m + 1):
        demand = rho * (1.0 + q)
        lam = c / demand.sum()
        q = lam * demand
    return lam, q


# --------------------------------------------------------------------------- predictions


@dataclass(frozen=True, eq=False)
class Prediction:
    """Stationary predictions of the closed network (SPEC section 5); arrays have shape ``(n,)``.

    ``queue_length`` is ``E_m[X_i]`` (time average); ``relative_delay`` is ``E[tau_i]``
    (``nan`` where ``p_i = 0``); ``mean_staleness = sum_i p_i E[tau_i]``, which equals ``m - 1``.
    """

    mu: np.ndarray
    p: np.ndarray
    m: int
    throughput: float
    queue_length: np.ndarray
    relative_delay: np.ndarray
    utilisation: np.ndarray
    sojourn_time: np.ndarray
    mean_staleness: float


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def predict(mu, p, m) -> Prediction:
    """All predictions of SPEC section 5 from one Buzen pass (see the single-quantity functions)."""
    mu, p, m = _check_network(mu, p, m)
    with torch.no_grad():
        rho = p / mu
        lams = _throughputs(rho, m)
        q_m1, q_m = _queue_lengths(rho, lams, m)
        lam = lams[m - 1]
        delay = _relative_delay(p, q_m1)
        routed = p > 0
        staleness = (p[routed] * delay[routed]).sum()
    return Prediction(
        mu=_numpy(mu),
        p=_numpy(p),
        m=m,
        throughput=float(lam),
        queue_length=_numpy(q_m),
        relative_delay=_numpy(delay),
        utilisation=_numpy(rho * lam),
        sojourn_time=_numpy((1.0 + q_m1) / mu),
        mean_staleness=float(staleness),
    )


# --------------------------------------------------------------------------- routing optimisation


@dataclass(frozen=True)
class BoundConstants:
    """Constants of the working convergence bound ``B(p)`` (SPEC section 5).

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
    """(B(p), lambda(p), E_{m-1}[X]) for validated inputs with every ``p_i > 0``."""
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
    """The working bound of SPEC section 5 (0-d tensor, differentiable w.r.t. ``mu`` and ``p``):

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
    every routing (SPEC section 5 identity); what routing changes is how staleness is spread
    over clients (``relative_delay``) and the throughput.
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
    """Routing ``p`` minimising ``bound(mu, p, m, constants, objective)`` (second seed; SPEC section 5).

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
    """The routing ``p_i = mu_i^a / sum_j mu_j^a`` (``a = power``), shape ``(n,)``.

    ``a = 0`` is uniform routing; ``a = 1`` gives equal loads ``rho_i = 1 / sum_j mu_j`` (the
    closed form ``lambda = m / (rho (m + n - 1))`` of SPEC section 5); ``a = 1/2`` lies between.
    """
    mu = _check_mu(mu).detach().cpu().numpy()
    weights = mu ** float(power)
    return weights / weights.sum()


# --------------------------------------------------------------------------- synchronous rounds


def expected_max_duration(durations, c, replace: bool = False) -> float:
    """Expected duration ``E[max_{k <= c} D_k]`` of a synchronous round of ``c`` tasks.

    Mini-batch (synchronous) SGD waits for the slowest of ``c`` clients drawn uniformly from a
    population whose task durations are ``durations`` (Koloskova, Stich & Jaggi 2022, the
    comparison of asynchronous with mini-batch SGD). With the sorted distinct durations
    ``d_1 < ... < d_k`` and ``N(d) = #{i : D_i <= d}`` out of ``N`` clients,

        P(max <= d) = (N(d) / N)^c                  (``replace=True``: i.i.d. draws),
        P(max <= d) = C(N(d), c) / C(N, c)          (``replace=False``: ``c`` distinct clients),
        E[max]      = sum_j d_j (P(max <= d_j) - P(max <= d_{j-1})).

    The binomial ratio is evaluated as ``prod_{k < c} (N(d) - k) / (N - k)``. Koloskova et al.'s
    example, 900 clients at 10 s and 100 at 60 s with ``c = 10``, gives ``60 - 50 * 0.9^10 = 42.57``
    with replacement (42.65 without), against the mean duration of 15 s that asynchronous SGD
    with ``c`` tasks in flight needs per ``c`` gradients.
    """
    d = np.sort(np.asarray(durations, dtype=np.float64))
    if d.ndim != 1 or d.size == 0 or not np.isfinite(d).all() or (d < 0).any():
        raise QueueingError("durations: expected a non-empty 1-D array of finite numbers >= 0; fix: pass one duration per client")
    n = d.size
    c = _as_count(c, "c", 1)
    if not replace and c > n:
        raise QueueingError(f"c: {c} distinct clients but only {n}; fix: pass c <= {n} or replace=True")
    values, counts = np.unique(d, return_counts=True)
    below = np.cumsum(counts)  # N(d_j)
    if replace:
        cdf = (below / n) ** c
    else:
        k = np.arange(c)
        cdf = np.prod(np.clip(below[:, None] - k, 0, None) / (n - k), axis=1)
    return float(np.sum(values * np.diff(cdf, prepend=0.0)))
