"""The optimal time of asynchronous SGD with fixed compute times (Tyurin & Richtárik, NeurIPS 2023).

Beside the closed Jackson network (random, exponential service) this module holds the other
theory of asynchronous SGD: ``n`` workers, worker ``i`` taking a fixed time ``tau_i`` per
stochastic gradient, a smooth nonconvex ``f`` (``L``-smooth, ``Delta = f(x^0) - f^*``, gradient
noise of variance ``sigma^2``) and the time to reach ``E||grad f(x)||^2 <= eps``. With the times
sorted, ``tau_(1) <= ... <= tau_(n)``, and their prefix harmonic means

    H_m = (1/m sum_{i <= m} 1/tau_(i))^{-1},

Tyurin and Richtárik ("Optimal Time Complexities of Parallel Stochastic Optimization Methods
Under a Fixed Computation Model", NeurIPS 2023, arXiv 2305.12387) prove that no method is
faster than, and Rennala SGD attains,

    T = Theta( min_{m in [n]} t(m) ),   t(m) = H_m (L Delta / eps + sigma^2 L Delta / (m eps^2)),

the form restated in their NeurIPS 2024 paper (eq. 5) and in Tyurin's ICLR 2026 submission
(eq. 2). Ringmaster ASGD (Maranjyan, Tyurin & Richtárik, ICML 2025, arXiv 2501.16168) attains it
too. The constants inside ``Theta`` were not read from the papers (``/work/notes/papers_issue21.md``
sections 1 and 2): every time here is the bound's expression, "up to a constant factor".

The best ``m*`` is how many of the fastest workers are worth using; Rennala's batch
``S = max(1, ceil(sigma^2 / eps))`` (Ringmaster's delay threshold ``R``, the same number) and about
``L Delta / eps`` steps give it. ``collection_time`` is Ringmaster's bound on ``R`` consecutive
updates, ``collect_time_fixed`` the exact time for the workers to finish ``S`` gradients together.

Everything but ``mean_compute_times`` (a config's clients as times ``tau_i``) is NumPy only;
``afl queue optimal`` (``afl.queueing.cli``) prints it for a config.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from afl.errors import AflError

__all__ = [
    "OptimalTimeError",
    "OptimalTime",
    "harmonic_prefix",
    "time_curve",
    "optimal_time",
    "batch_size",
    "collection_time",
    "collect_time_fixed",
    "mean_compute_times",
]

TIE_RTOL = 1e-12  # t(m) within this relative distance of the minimum counts as a tie (smallest m wins)


class OptimalTimeError(AflError, ValueError):
    """Invalid input to the optimal-time formulas (a ``ValueError``); the message is one line."""


# --------------------------------------------------------------------------- validation


def _times(tau) -> np.ndarray:
    """``tau`` as a 1-D float array of positive finite times (any order), or ``OptimalTimeError``."""
    try:
        t = np.asarray(tau, dtype=np.float64)
    except (TypeError, ValueError):
        raise OptimalTimeError("tau: expected numbers (one compute time per worker); "
                               "fix: pass a 1-D array of times > 0") from None
    if t.ndim != 1 or t.size == 0:
        raise OptimalTimeError(f"tau: expected a non-empty 1-D array, got shape {t.shape}; "
                               "fix: pass one compute time per worker")
    bad = ~(np.isfinite(t) & (t > 0))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise OptimalTimeError(f"tau: every compute time must be finite and > 0, tau[{k}] = {t[k]}; "
                               "fix: pass positive finite times")
    return t


def _positive(name: str, value, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise OptimalTimeError(f"{name}: expected a number, got {value!r}; fix: pass a finite number") from None
    if not (math.isfinite(v) and (v > 0 or (allow_zero and v == 0))):
        need = ">= 0" if allow_zero else "> 0"
        raise OptimalTimeError(f"{name}: must be a finite number {need}, got {value}; fix: pass a value {need}")
    return v


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise OptimalTimeError(f"{name}: expected an integer >= 1, got {value!r}; fix: pass a count >= 1")
    return int(value)


# --------------------------------------------------------------------------- the formulas


def harmonic_prefix(tau) -> np.ndarray:
    """``H_m = (1/m sum_{i <= m} 1/tau_(i))^{-1}`` for ``m = 1..n``: the harmonic mean of the ``m`` fastest.

    ``tau_(1) <= ... <= tau_(n)`` are the compute times sorted ascending (``tau`` itself may be in
    any order); the notation of Tyurin & Richtárik (NeurIPS 2023, Theorem of Rennala SGD's time;
    NeurIPS 2024 eq. 5) and of Ringmaster ASGD (ICML 2025, Lemma 4.1). ``H_1 = tau_(1)``, ``H_m``
    is nondecreasing in ``m`` and ``H_m <= tau_(m)``.
    """
    t = np.sort(_times(tau))
    return np.arange(1, t.size + 1) / np.cumsum(1.0 / t)


def time_curve(tau, L, delta, sigma2, eps) -> np.ndarray:
    """``t(m) = H_m (L Delta / eps + sigma^2 L Delta / (m eps^2))`` for ``m = 1..n`` (array of ``n``).

    The expression inside Tyurin & Richtárik's optimal time ``Theta(min_m t(m))`` (NeurIPS 2023;
    restated in their NeurIPS 2024 paper, eq. 5): ``m`` fastest workers, each of the about
    ``L Delta / eps`` steps waiting for a batch of about ``sigma^2 / eps`` gradients from them. The
    paper's constants inside ``Theta`` are not stated here: a time "up to a constant factor".
    ``L``, ``delta`` and ``eps`` must be > 0, ``sigma2`` >= 0.
    """
    h = harmonic_prefix(tau)
    L = _positive("L", L)
    delta = _positive("delta", delta)
    sigma2 = _positive("sigma2", sigma2, allow_zero=True)
    eps = _positive("eps", eps)
    m = np.arange(1, h.size + 1)
    return h * (L * delta / eps + sigma2 * L * delta / (m * eps**2))


def batch_size(sigma2, eps) -> int:
    """``S = max(1, ceil(sigma^2 / eps))``: Rennala SGD's batch and Ringmaster ASGD's delay threshold ``R``.

    Tyurin & Richtárik's batch (NeurIPS 2023; the NeurIPS 2024 restatement, Theorem 4) and
    Ringmaster's ``R`` (ICML 2025, Theorem 4.1; its value not read from the paper, see
    ``/work/notes/papers_issue21.md``). A quotient within ``1e-12`` of an integer counts as that
    integer (``1.1 / 0.1`` is ``11.000000000000002`` in floating point: ``S = 11``).
    """
    sigma2 = _positive("sigma2", sigma2, allow_zero=True)
    eps = _positive("eps", eps)
    r = sigma2 / eps
    k = round(r)
    return max(1, int(k) if math.isclose(r, k, rel_tol=1e-12, abs_tol=0.0) else math.ceil(r))


@dataclass(frozen=True)
class OptimalTime:
    """Tyurin & Richtárik's optimal time for given constants (``optimal_time``); times up to a constant factor.

    ``m_star``: the best number of fastest workers, ``argmin_m t(m)`` (1-based; the smallest ``m``
    among ties); ``time``: ``t(m*)``; ``batch``: ``S = R = max(1, ceil(sigma^2 / eps))``;
    ``iterations``: ``L Delta / eps``, the order of the number of steps; ``curve``: ``t(m)`` for
    ``m = 1..n`` (``curve[m - 1]``).
    """

    m_star: int
    time: float
    batch: int
    iterations: float
    curve: np.ndarray


def optimal_time(tau, L, delta, sigma2, eps) -> OptimalTime:
    """Tyurin & Richtárik's (NeurIPS 2023) optimal time ``Theta(min_m t(m))``, its ``m*`` and Rennala's ``S``.

    ``t(m)`` is ``time_curve``. ``m*`` is the smallest ``m`` whose ``t(m)`` is within a relative
    ``1e-12`` of the minimum (a tie up to rounding). With ``sigma2 = 0``, ``t(m) = H_m L Delta / eps``
    is nondecreasing and ``m* = 1``; as ``sigma2`` grows, ``t(m) ~ sigma^2 L Delta / (eps^2
    sum_{i <= m} 1/tau_(i))`` is decreasing and ``m* = n``.
    """
    curve = time_curve(tau, L, delta, sigma2, eps)
    best = float(curve.min())
    m_star = int(np.flatnonzero(curve <= best * (1 + TIE_RTOL))[0]) + 1
    return OptimalTime(m_star=m_star, time=float(curve[m_star - 1]), batch=batch_size(sigma2, eps),
                       iterations=float(L) * float(delta) / float(eps), curve=curve)


def collection_time(tau, R) -> float:
    """``t(R) = 2 min_m H_m (1 + R/m)``: Ringmaster ASGD's bound on the time of any ``R`` consecutive updates.

    Maranjyan, Tyurin & Richtárik (ICML 2025), Lemma 4.1 (as restated by the authors; see
    ``/work/notes/papers_issue21.md`` section 2): with fixed times, any ``R`` consecutive updates
    of Ringmaster ASGD (delay threshold ``R``) take at most ``t(R)``, so ``K`` updates take at most
    ``ceil(K / R) t(R)``. Equal to ``2 min_m (m + R) / sum_{i <= m} 1/tau_(i)``.
    """
    h = harmonic_prefix(tau)
    R = _count("R", R)
    m = np.arange(1, h.size + 1)
    return float(2.0 * np.min(h * (1.0 + R / m)))


def collect_time_fixed(tau, S) -> float:
    """``min{t : sum_i floor(t / tau_i) >= S}``: the exact time for the workers to finish ``S`` gradients.

    ``n`` workers with fixed times ``tau_i``, all starting together at time 0 and never stopping:
    worker ``i`` has finished ``floor(t / tau_i)`` gradients at time ``t``. This is Rennala SGD's
    time per step (Tyurin & Richtárik, NeurIPS 2023, Algorithm 4 collecting a batch of ``S``) when
    every worker restarts at each step, i.e. the ``S``-th smallest of the completion times
    ``k tau_i`` (``k >= 1``). It lies in ``[S / Lambda, (S + n) / Lambda]`` with
    ``Lambda = sum_i 1/tau_i`` (``t / tau - 1 < floor(t / tau) <= t / tau``) and below
    ``S tau_(1)``; only the about ``S + 2n`` candidates ``k tau_i`` up to that bound are formed
    (computed as ``k * tau_i`` in floating point, so the answer is one of them exactly).
    """
    t = _times(tau)
    S = _count("S", S)
    hi = min(S * float(t.min()), (S + t.size) / float(np.sum(1.0 / t))) * (1 + 1e-9)
    counts = np.floor(hi / t).astype(np.int64) + 1  # every k with k tau_i <= hi, and one more
    worker = np.repeat(np.arange(t.size), counts)
    k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    candidates = k * t[worker]
    return float(np.partition(candidates, S - 1)[S - 1])


# --------------------------------------------------------------------------- a config's times


def mean_compute_times(cfg, rates) -> np.ndarray:
    """Each client's mean task time ``download + E[S] / nu_i + upload`` (``afl.sim.timing.task_duration``).

    ``nu_i`` is the rate of a whole task, ``mu_i`` or ``mu_i / steps`` with ``timing.per: step``
    (``afl.queueing.model.service_rates``, which counts the steps as the queueing CLI does:
    a gradient rule's 1, else ``client.steps`` or 1). ``rates``: the clients' ``mu_i``
    (``afl.sim.timing.client_rates``). With ``timing.distribution: constant`` these are the
    fixed times ``tau_i`` of the theory; otherwise their means stand in for them.
    """
    # Imported here: afl.queueing.model pulls in the torch network module.
    from afl.queueing.model import service_rates
    from afl.sim.timing import mean_service

    t = cfg.timing
    return t.download + mean_service(t) / service_rates(cfg, np.asarray(rates, dtype=float)) + t.upload
