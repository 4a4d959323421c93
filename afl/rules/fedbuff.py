"""FedBuff (Nguyen et al. 2022): buffer ``K`` client deltas, then take one server step."""

from dataclasses import dataclass
from typing import Callable

import numpy as np

from afl.errors import config_fail
from afl.rules.spec import Rule

DEFAULT_BUFFER = 10  # K = min(m, 10) unless set


@dataclass(frozen=True)
class FedBuff:
    """When ``K`` deltas ``d_i = x_i - x_v`` are buffered: ``x <- x + eta_g (1/K) sum_i s(tau_i) d_i``."""

    buffer_size: int
    server_lr: float
    s: Callable

    def aggregate(self, x, arrivals, taus):
        w = self.server_lr * self.s(np.asarray(taus, dtype=float)) / self.buffer_size
        out = x.clone()
        for a, w_i in zip(arrivals, w):
            out.add_(a.vector - a.base, alpha=float(w_i))
        return out, w


def check_buffer(a) -> None:
    """A buffer of ``algorithm.buffer_size`` deltas that can fill: between 1 and the concurrency."""
    if a.buffer_size < 1:
        config_fail("algorithm.buffer_size", f"must be >= 1, got {a.buffer_size}", f"set algorithm.buffer_size to {DEFAULT_BUFFER} or more")
    if a.buffer_size > a.concurrency:
        config_fail("algorithm.buffer_size", f"buffer {a.buffer_size} can never fill with {a.concurrency} tasks in flight",
                    f"lower it to at most {a.concurrency} or raise algorithm.concurrency")


FEDBUFF = Rule(
    name="fedbuff", build=lambda a, s, clients: FedBuff(a.buffer_size, a.server_lr, s), batch=lambda a: a.buffer_size,
    staleness="fedbuff", keys=("buffer_size", "server_lr", "staleness"),
    defaults=lambda a: {"buffer_size": a.buffer_size if a.buffer_size is not None else min(a.concurrency, DEFAULT_BUFFER)},
    check=check_buffer,
)
