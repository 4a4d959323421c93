"""FedAsync (Xie et al. 2019): mix each arriving model into the global one."""

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class FedAsync:
    """On each arrival ``x <- (1 - a_t) x + a_t x_i`` with ``a_t = a s(tau)``."""

    mixing: float
    s: Callable
    batch: int = 1
    barrier: bool = False

    def aggregate(self, x, arrivals, taus):
        (arrival,), (tau,) = arrivals, taus
        a_t = self.mixing * float(self.s(tau))
        return x.mul(1 - a_t).add_(arrival.vector, alpha=a_t), np.array([a_t])
