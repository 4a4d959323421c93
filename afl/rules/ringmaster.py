"""Ringmaster ASGD (Maranjyan, Tyurin and Richtárik, ICML 2025): asynchronous SGD that refuses delays over R."""

from dataclasses import dataclass

import numpy as np

from afl.errors import config_fail
from afl.rules.spec import Rule


@dataclass(frozen=True)
class Ringmaster:
    """On each gradient ``g`` computed at ``x^{k - delta}`` with ``delta < R``: ``x^{k+1} = x^k - gamma g``.

    The inequality is strict, as in the paper's Algorithm 1 and its authors' code. A gradient of
    delay ``>= R`` is ignored on arrival (``discard_after = R - 1``); with ``stop_stale``
    (Algorithm 2) its computation is stopped as soon as an update makes its delay reach R
    (``cancel_after = R - 1``), so it wastes no more time than it must. Either way the worker
    starts again at the current model.
    """

    server_lr: float

    def aggregate(self, x, arrivals, taus):
        (arrival,) = arrivals
        return x.add(arrival.vector, alpha=-self.server_lr), np.array([self.server_lr])


def _check(a) -> None:
    if a.max_delay < 1:
        config_fail("algorithm.max_delay", f"must be >= 1 (only delays below R are applied), got {a.max_delay}",
                    "set algorithm.max_delay (R) to the concurrency m or another count >= 1")


RINGMASTER = Rule(
    name="ringmaster", build=lambda a, s, clients: Ringmaster(a.server_lr), gradient=True,
    keys=("server_lr", "max_delay", "stop_stale"),
    defaults=lambda a: {"max_delay": a.max_delay if a.max_delay is not None else a.concurrency},
    check=_check,
    discard_after=lambda a: a.max_delay - 1, cancel_after=lambda a: a.max_delay - 1 if a.stop_stale else None,
)
