"""Rennala SGD (Tyurin and Richtárik, NeurIPS 2023): a mini-batch of gradients all at the current model."""

from dataclasses import dataclass

import numpy as np

from afl.errors import config_fail
from afl.rules.spec import Rule

DEFAULT_BATCH = 10  # S = min(m, 10) unless set, as fedbuff's K


def mean_gradient_step(x, arrivals, lr: float):
    """``x - lr (1/B) sum_j g_j`` over the ``B`` arriving gradients, and the weight ``lr / B`` of each."""
    w = lr / len(arrivals)
    out = x.clone()
    for a in arrivals:
        out.add_(a.vector, alpha=-w)
    return out, np.full(len(arrivals), w)


@dataclass(frozen=True)
class Rennala:
    """Once ``S`` gradients computed at ``x^k`` have arrived: ``x^{k+1} = x^k - gamma (1/S) sum g``.

    A gradient computed at an older model is discarded on arrival (``discard_after = 0``) and its
    worker starts again at the current one (the paper's Algorithm 4 with its workers' Method 5).
    """

    server_lr: float

    def aggregate(self, x, arrivals, taus):
        return mean_gradient_step(x, arrivals, self.server_lr)


def _check(a) -> None:
    if a.buffer_size < 1:
        config_fail("algorithm.buffer_size", f"must be >= 1, got {a.buffer_size}",
                    f"set algorithm.buffer_size (the batch S) to {DEFAULT_BATCH} or another count >= 1")


RENNALA = Rule(
    name="rennala", build=lambda a, s, clients: Rennala(a.server_lr), batch=lambda a: a.buffer_size, gradient=True,
    keys=("buffer_size", "server_lr"),
    defaults=lambda a: {"buffer_size": a.buffer_size if a.buffer_size is not None else min(a.concurrency, DEFAULT_BATCH)},
    check=_check, discard_after=lambda a: 0,
)
