"""Generalized AsyncSGD (Leconte et al. 2024; Alahyane et al. 2025; Koloskova et al. 2022)."""

from dataclasses import dataclass
from typing import Callable

import numpy as np

import afl.rules.lr as lr
from afl.rules.spec import Rule


@dataclass(frozen=True)
class AsyncSGD:
    """On each gradient ``g_i`` computed at ``x_v``: ``x <- x - eta_t / (n p_i) g_i``.

    ``eta_t`` is ``server_lr`` (constant) or Koloskova et al.'s delay-adaptive step
    (Thm 8) with threshold ``tau_c``; the ``1/(n p_i)`` factor keeps the update unbiased
    for ``(1/n) sum_i f_i`` under routing probabilities ``p``.
    """

    server_lr: float
    routing: np.ndarray
    step_rule: str
    tau_c: int
    drop: bool
    s: Callable

    def aggregate(self, x, arrivals, taus):
        (arrival,), (tau,) = arrivals, taus
        eta = self.server_lr
        if self.step_rule == "delay_adaptive":
            eta = lr.delay_adaptive(eta, tau, self.tau_c, self.drop)
        step = eta * float(self.s(tau)) / (len(self.routing) * self.routing[arrival.client])
        return x.add(arrival.vector, alpha=-step), np.array([step])


ASYNCSGD = Rule(
    name="asyncsgd",
    build=lambda a, s, clients: AsyncSGD(a.server_lr, clients.routing, a.step_rule, a.tau_c, a.drop_stale, s),
    gradient=True, selection="routing", keys=("server_lr", "step_rule", "tau_c", "drop_stale", "staleness"),
)
