"""FedAsync (Xie et al. 2019): mix each arriving model into the global one."""

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


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
        return torch.lerp(x, arrival.vector, a_t), np.array([a_t])  # x + a_t (x_i - x)
