"""Synchronous FedAvg (``sfl``) and the first seed's staleness-aware buffered FedAvg (``afl``)."""

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


def weighted_average(vectors: list[torch.Tensor], weights: np.ndarray) -> torch.Tensor:
    """``sum_k w_k x_k`` for weights that sum to 1."""
    out = torch.zeros_like(vectors[0])
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

    batch: int
    weighting: str
    barrier: bool = True

    def aggregate(self, x, arrivals, taus):
        w = data_weights(arrivals, self.weighting)
        w = w / w.sum()
        return weighted_average([a.vector for a in arrivals], w), w


@dataclass(frozen=True)
class StalenessAwareFedAvg:
    """``afl``: every ``m`` arrivals, ``x <- sum_k w_k x_k`` with ``w_k`` proportional to ``n_k s(tau_k)``."""

    batch: int
    weighting: str
    s: Callable
    barrier: bool = False

    def aggregate(self, x, arrivals, taus):
        w = data_weights(arrivals, self.weighting) * self.s(np.asarray(taus, dtype=float))
        w = w / w.sum()
        return weighted_average([a.vector for a in arrivals], w), w
