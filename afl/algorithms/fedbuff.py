"""FedBuff (Nguyen et al. 2022): buffer ``K`` client deltas, then take one server step."""

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class FedBuff:
    """When ``K`` deltas ``d_i = x_i - x_v`` are buffered: ``x <- x + eta_g (1/K) sum_i s(tau_i) d_i``."""

    batch: int
    server_lr: float
    s: Callable
    barrier: bool = False

    def aggregate(self, x, arrivals, taus):
        w = self.server_lr * self.s(np.asarray(taus, dtype=float)) / self.batch
        out = x.clone()
        for a, w_i in zip(arrivals, w):
            out.add_(a.vector - a.base, alpha=float(w_i))
        return out, w
