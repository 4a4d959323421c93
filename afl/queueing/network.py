"""Closed Jackson network of generalized AsyncSGD: the stationary analysis.

Client ``i`` is a FIFO ``./M/1`` queue with exponential service rate ``mu_i``; ``m`` tasks
circulate; a finished task (one server update) is replaced by a task routed to client ``j``
with probability ``p_j``. The load of client ``i`` is ``rho_i = p_i / mu_i`` and the
stationary law at population ``c`` is the product form (Jackson; Gordon & Newell 1967)

    pi_c(x) = prod_i rho_i^{x_i} / G(c),   x in N^n, sum_i x_i = c,

with normalising constant ``G(c) = sum_{|x| = c} prod_i rho_i^{x_i}`` (Buzen 1973).

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
  theorem; the relative delay of Alahyane, Comte, Jonckheere & Moulines 2025): the mean
  number of *other* server updates applied between a task's dispatch to client ``i`` and the
  application of its result, i.e. the mean staleness ``t - v`` of the updates coming from
  client ``i``. Counting the task's own update as well gives ``E[tau_i] + 1``. A client with
  ``p_i = 0`` never receives a task: its relative delay is undefined and reported as ``nan``.
* Identity: ``sum_i p_i E[tau_i] = sum_i E_{m-1}[X_i] = m - 1`` for every ``p`` and ``mu``.

The validation helpers and the recursions (``_check_network``, ``_throughputs``,
``_queue_lengths``, ...) are shared with ``afl.queueing.routing`` and ``afl.queueing.rounds``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

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
]

_DTYPE = torch.float64
_P_SUM_TOL = 1e-6


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
    """``log G(c)`` for ``c = 0..m``, shape ``(m + 1,)`` (Buzen 1973).

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
    """Server updates per unit time ``lambda(m) = G(m - 1) / G(m)`` (Buzen 1973)."""
    mu, p, m = _check_network(mu, p, m)
    return _throughputs(p / mu, m)[m - 1]


def mean_queue_lengths(mu, p, c) -> torch.Tensor:
    """``E_c[X_i] = sum_{k=1..c} rho_i^k G(c - k) / G(c)``, shape ``(n,)`` (Buzen 1973).

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
    """``P_m(X_i >= 1) = rho_i lambda(m)``, the fraction of time client ``i`` is busy (Buzen 1973)."""
    mu, p, m = _check_network(mu, p, m)
    rho = p / mu
    return rho * _throughputs(rho, m)[m - 1]


def _relative_delay(p: torch.Tensor, q_m1: torch.Tensor) -> torch.Tensor:
    """``E[tau_i] = E_{m-1}[X_i] / p_i`` (discrete Little's law), ``nan`` where ``p_i = 0``."""
    routed = p.detach() > 0
    if bool(routed.all()):
        return q_m1 / p
    safe_p = torch.where(routed, p, torch.ones_like(p))
    return torch.where(routed, q_m1 / safe_p, torch.full_like(p, math.nan))


def relative_delay(mu, p, m) -> torch.Tensor:
    """Mean staleness of client ``i``'s updates, ``E[tau_i] = E_{m-1}[X_i] / p_i``, shape ``(n,)``.

    The relative delay of Alahyane, Comte, Jonckheere & Moulines 2025 (discrete Little's law;
    by the arrival theorem a task routed to client ``i`` sees the network at population
    ``m - 1``). ``E[tau_i]`` counts the *other* server updates applied between the task's
    dispatch and the application of its result (staleness ``t - v``); counting the task's own
    update too gives ``E[tau_i] + 1``. Entries with ``p_i = 0`` are ``nan`` (such a client never
    receives a task). ``sum_i p_i E[tau_i] = m - 1``.
    """
    mu, p, m = _check_network(mu, p, m)
    rho = p / mu
    q_m1 = _queue_lengths(rho, _throughputs(rho, m), m)[0]
    return _relative_delay(p, q_m1)


def sojourn_time(mu, p, m) -> torch.Tensor:
    """Mean wall-clock time of a task at client ``i``: ``(1 + E_{m-1}[X_i]) / mu_i``.

    Mean-value analysis' residence time (Reiser & Lavenberg 1980): a task arriving at client
    ``i`` finds ``E_{m-1}[X_i]`` tasks there (arrival theorem) and waits for them and for its
    own exponential service, each of mean ``1 / mu_i``.
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
    """Stationary predictions of the closed network (see the module docstring); arrays have shape ``(n,)``.

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
    """Every ``Prediction`` from one Buzen pass (Buzen 1973; the formulas of the single-quantity functions)."""
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
