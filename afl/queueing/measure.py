"""Queueing quantities measured on simulated runs, with batch-means standard errors.

The closed-form predictions of ``afl.queueing.network`` are stationary means; a run's
``updates.parquet`` (one row per result applied, in time order) gives their simulated
counterparts. A warm-up fraction of the updates is dropped (the network starts with every
task just dispatched, not in its stationary law), and standard errors use the method of
batch means: the time-ordered series is cut into ``B`` contiguous batches and
``SE = sd(batch means) / sqrt(B)``; long batches absorb the autocorrelation of the queue
(Law & Kelton, *Simulation Modeling and Analysis*, section 9.5.3).

The workflow's figures (the queueing kinds of ``afl/figures/``) read them from the cells' tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

BATCHES = 40
WARMUP = 0.1


def batch_means(x, batches: int = BATCHES) -> tuple[float, float]:
    """``(mean, SE)`` of a time-ordered series; ``SE = sd(batch means) / sqrt(batches)`` (nan if too short)."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2 * batches:
        return (float(x.mean()) if len(x) else float("nan")), float("nan")
    means = np.array([b.mean() for b in np.array_split(x, batches)])
    return float(x.mean()), float(means.std(ddof=1) / np.sqrt(batches))


def steady_state(updates: pd.DataFrame, warmup: float = WARMUP) -> pd.DataFrame:
    """The rows of ``updates`` after the first ``warmup`` fraction of server versions."""
    first = updates.version.min() + int(warmup * (updates.version.max() - updates.version.min() + 1))
    return updates[updates.version >= first]


def staleness_per_client(updates: pd.DataFrame, n: int, warmup: float = WARMUP,
                         batches: int = BATCHES) -> pd.DataFrame:
    """Per client: mean staleness ``t - v`` of its updates after the warm-up, its batch-means SE, the count.

    Columns ``client, simulated, se, updates``; one row per client ``0..n-1`` (nan where a client
    has no update, SE nan where it has fewer than ``2 * batches``).
    """
    u = steady_state(updates, warmup)
    client, staleness = u.client.to_numpy(), u.staleness.to_numpy()
    rows = []
    for i in range(n):
        mean, se = batch_means(staleness[client == i], batches)
        rows.append((i, mean, se, int((client == i).sum())))
    return pd.DataFrame(rows, columns=["client", "simulated", "se", "updates"])


def update_rate(updates: pd.DataFrame, warmup: float = WARMUP, batches: int = BATCHES) -> tuple[float, float]:
    """``(lambda, SE)``: server updates per unit time after the warm-up.

    ``lambda = 1 / mean gap`` between consecutive server versions; its SE is the batch-means SE
    of the gaps times ``lambda^2`` (delta method). For a synchronous rule the gap is the round
    duration, ``1 / lambda``.
    """
    times = steady_state(updates, warmup).groupby("version").time.first().sort_index().to_numpy()
    gap, gap_se = batch_means(np.diff(times), batches)
    return 1.0 / gap, gap_se / gap**2


def value_at(evals: pd.DataFrame, times, column: str = "test_acc") -> np.ndarray:
    """``column`` of the global model the server holds at each of ``times``.

    ``evals`` are one run's evaluations (``evals.parquet``): the model at time ``t`` is the
    one of the last evaluation at or before ``t`` (nan before the first).
    """
    ordered = evals.sort_values("time")
    k = np.searchsorted(ordered.time.to_numpy(), np.asarray(times, dtype=float), side="right") - 1
    values = ordered[column].to_numpy(dtype=float)
    return np.where(k >= 0, values[np.maximum(k, 0)], np.nan)


def t_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval ``mean -+ t_{(1+level)/2, k-1} sd / sqrt(k)`` of ``k`` independent values.

    Used for means over seeds (also as seaborn's ``errorbar``); ``(mean, mean)`` for one value.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        mean = float(x.mean()) if len(x) else float("nan")
        return mean, mean
    half = stats.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)
