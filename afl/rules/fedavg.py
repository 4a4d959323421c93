"""Synchronous FedAvg (``sfl``) and the first seed's staleness-aware buffered FedAvg (``afl``)."""

from dataclasses import dataclass
from typing import Callable

import numpy as np

from afl.rules.spec import Rule


def weighted_average(vectors: list, weights: np.ndarray):
    """``sum_k w_k x_k`` (tensors) for weights that sum to 1."""
    out = vectors[0].new_zeros(vectors[0].shape)
    for v, w in zip(vectors, weights):
        out.add_(v, alpha=float(w))
    return out


def data_weights(arrivals, weighting: str) -> np.ndarray:
    """``n_k`` (data_size) or 1 (uniform) per arrival, before normalisation."""
    if weighting == "uniform":
        return np.ones(len(arrivals))
    return np.array([a.num_samples for a in arrivals], dtype=float)


@dataclass(frozen=True)
class SyncFedAvg:
    """``sfl``: per round, ``x <- sum_k w_k x_k`` with ``w_k = n_k / sum n`` (McMahan et al. 2017)."""

    weighting: str

    def aggregate(self, x, arrivals, taus):
        w = data_weights(arrivals, self.weighting)
        w = w / w.sum()
        return weighted_average([a.vector for a in arrivals], w), w


@dataclass(frozen=True)
class StalenessAwareFedAvg:
    """``afl``: every ``m`` arrivals, ``x <- sum_k w_k x_k`` with ``w_k`` proportional to ``n_k s(tau_k)``."""

    weighting: str
    s: Callable

    def aggregate(self, x, arrivals, taus):
        w = data_weights(arrivals, self.weighting) * self.s(np.asarray(taus, dtype=float))
        w = w / w.sum()
        return weighted_average([a.vector for a in arrivals], w), w


SFL = Rule(
    name="sfl", build=lambda a, s, clients: SyncFedAvg(a.weighting), batch=lambda a: a.concurrency,
    barrier=True, keys=("weighting",),
)
# The first seed's two contributions: staleness weights s(tau) (polynomial by default) and the
# delay-aware local learning rate (afl.rules.lr.delay_aware), the default local rule here.
AFL = Rule(
    name="afl", build=lambda a, s, clients: StalenessAwareFedAvg(a.weighting, s), batch=lambda a: a.concurrency,
    staleness="polynomial", lr_rule="delay_aware", keys=("weighting", "staleness"),
)
