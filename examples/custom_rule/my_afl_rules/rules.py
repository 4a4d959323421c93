"""Coordinate-wise trimmed mean (Yin et al. 2018, "Byzantine-robust distributed learning"), a
server rule written outside afl.

Each synchronous round of ``m`` clients, every coordinate of the new model is the mean of the
clients' values of it less the ``floor(TRIM * m)`` largest and smallest. afl asks the ``Rule``
below for its facts (a round of ``m`` results, synchronous, models not gradients, its keys and
checks) exactly as it asks its built-in rules; name it in a config as
``algorithm.name: "my_afl_rules.rules:TRIMMED_MEAN"``, or, once this package is installed, by its
entry point ``trimmed_mean`` (pyproject.toml).
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from afl.errors import config_fail
from afl.rules import Rule

TRIM = 0.2  # the share of the results dropped at each end of every coordinate


@dataclass(frozen=True)
class TrimmedMean:
    trim: float

    def aggregate(self, x, arrivals, taus):
        """The new model and each arrival's weight (1/m: every result takes part in the sort)."""
        values = torch.stack([a.vector for a in arrivals]).sort(dim=0).values
        k = math.floor(self.trim * len(arrivals))
        return values[k:len(arrivals) - k].mean(dim=0), np.full(len(arrivals), 1 / len(arrivals))


def _check(algorithm) -> None:
    if math.floor(TRIM * algorithm.concurrency) < 1:
        config_fail("algorithm.concurrency", f"a trimmed mean of {algorithm.concurrency} results trims nothing "
                    f"at {TRIM:g} a side", f"set it to at least {math.ceil(1 / TRIM)}")


TRIMMED_MEAN = Rule(
    name="trimmed_mean", build=lambda algorithm, s, clients: TrimmedMean(TRIM),
    batch=lambda algorithm: algorithm.concurrency, barrier=True, check=_check,
)
