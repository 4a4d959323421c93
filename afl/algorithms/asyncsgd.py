"""Generalized AsyncSGD (Leconte et al. 2024; Alahyane et al. 2025; Koloskova et al. 2022)."""

from dataclasses import dataclass
from typing import Callable

import numpy as np

from afl import lr


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
    batch: int = 1
    barrier: bool = False

    def aggregate(self, x, arrivals, taus):
        (arrival,), (tau,) = arrivals, taus
        eta = self.server_lr
        if self.step_rule == "delay_adaptive":
            eta = lr.delay_adaptive(eta, tau, self.tau_c, self.drop)
        step = eta * float(self.s(tau)) / (len(self.routing) * self.routing[arrival.client])
        return x.add(arrival.vector, alpha=-step), np.array([step])
