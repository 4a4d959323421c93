"""FedAsync (Xie et al. 2019): mix each arriving model into the global one."""

from dataclasses import dataclass
from typing import Callable

import numpy as np

from afl.rules.spec import Rule


@dataclass(frozen=True)
class FedAsync:
    """On each arrival ``x <- (1 - a_t) x + a_t x_i`` with ``a_t = a s(tau)``."""

    mixing: float
    s: Callable

    def aggregate(self, x, arrivals, taus):
        (arrival,), (tau,) = arrivals, taus
        a_t = self.mixing * float(self.s(tau))
        return x.lerp(arrival.vector, a_t), np.array([a_t])  # x + a_t (x_i - x)


FEDASYNC = Rule(name="fedasync", build=lambda a, s, clients: FedAsync(a.mixing, s), staleness="polynomial",
                keys=("mixing", "staleness"))
