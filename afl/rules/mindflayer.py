"""MindFlayer SGD (Maranjyan, Shaikh Omar and Richtárik, UAI 2025): rounds of attempts stopped at a time limit."""

from dataclasses import dataclass

import numpy as np

from afl.errors import config_fail
from afl.rules.rennala import DEFAULT_BATCH
from afl.rules.spec import Rule
from afl.sim import timing


def attempts(p: float, limits: np.ndarray, batch: float) -> np.ndarray:
    """Attempts ``B_i`` per client and round: with the clients sorted by ``T_i`` (``limits``, the
    time of an attempt stopped at the limit) and ``t(m) = (sum_{j<=m} p / T_j)^{-1} (S + m p)``
    (``S`` = ``batch``, ``p`` an attempt's chance to finish in time), ``m*`` the argmin of ``t``,
    ``B_i = ceil(t(m*) / T_i - 1)`` for the ``m*`` fastest clients and 0 for the others: the
    MindFlayer paper's choice, as its authors' code computes it (``MindFlayerBatchSize``)."""
    order = np.argsort(limits, kind="stable")
    t_sorted = np.asarray(limits, dtype=float)[order]
    t = (batch + p * np.arange(1, len(order) + 1)) / np.cumsum(p / t_sorted)
    m = int(np.argmin(t)) + 1
    out = np.zeros(len(order), dtype=np.int64)
    out[order[:m]] = np.ceil(t[m - 1] / t_sorted[:m] - 1)
    return out


def plan(a, clients) -> tuple[float, np.ndarray]:
    """``(p, B)``: an attempt's chance ``p = P(S <= time_limit)`` and the attempts per client."""
    p = timing.service_cdf(clients.timing, a.time_limit)
    limits = np.array([timing.task_duration(clients.timing, rate, 1, a.time_limit) for rate in clients.rates])
    return p, attempts(p, limits, a.buffer_size)


@dataclass(frozen=True)
class MindFlayer:
    """A round sends ``x^k`` to every client, which makes ``B_i`` attempts at a gradient there one
    after another; an attempt whose draw ``S`` exceeds ``time_limit`` is stopped at the time that
    draw would take and the next one starts (``afl.sim.simulator``'s time limit). Once every client
    is done: ``x^{k+1} = x^k - gamma (1 / B) sum g`` over the gradients that came back, ``B = p
    sum_i B_i`` the expected number (unbiased; the authors' code), no step if none came back."""

    server_lr: float
    expected: float

    def aggregate(self, x, arrivals, taus):
        w = self.server_lr / self.expected
        out = x.clone()
        for a in arrivals:
            out.add_(a.vector, alpha=-w)
        return out, np.full(len(arrivals), w)


def _build(a, s, clients) -> MindFlayer:
    p, b = plan(a, clients)
    return MindFlayer(a.server_lr, p * float(b.sum()))


def _check(a) -> None:
    if a.time_limit is None or not a.time_limit > 0:
        config_fail("algorithm.time_limit", f"mindflayer stops an attempt over a time limit, got {a.time_limit}",
                    "set algorithm.time_limit, in draws S of a rate-1 client, e.g. 2")
    if a.buffer_size < 1:
        config_fail("algorithm.buffer_size", f"must be >= 1, got {a.buffer_size}",
                    f"set algorithm.buffer_size (the batch S) to {DEFAULT_BATCH} or another count >= 1")


MINDFLAYER = Rule(
    name="mindflayer", build=_build, batch=lambda a: a.buffer_size, barrier=True, gradient=True,
    keys=("buffer_size", "server_lr", "time_limit"),
    defaults=lambda a: {"buffer_size": a.buffer_size if a.buffer_size is not None else min(a.concurrency, DEFAULT_BATCH)},
    check=_check, all_clients=True,
    plan=lambda a, clients: plan(a, clients)[1].tolist(), time_limit=lambda a: a.time_limit,
)
