"""Queueing quantities measured on simulated runs, with batch-means standard errors.

The closed-form predictions of ``afl.queueing.network`` are stationary means; a run's
``updates.parquet`` (one row per result applied, in time order) gives their simulated
counterparts. A warm-up fraction of the updates is dropped (the network starts with every
task just dispatched, not in its stationary law), and standard errors use the method of
batch means: the time-ordered series is cut into ``B`` contiguous batches and
``SE = sd(batch means) / sqrt(B)``; long batches absorb the autocorrelation of the queue
(Law & Kelton, *Simulation Modeling and Analysis*, section 9.5.3).

``simulate_all`` runs many configs (in worker processes) for the workflow's experiments.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from afl.config import load_config
from afl.run.train import train

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


def _train(raw: dict, changes: dict, out: str) -> dict:
    overrides = [f"{key}={json.dumps(value)}" for key, value in changes.items()]
    return train(load_config(raw, overrides), Path(out), progress=False)


def _one_thread() -> None:
    torch.set_num_threads(1)


@contextlib.contextmanager
def one_torch_thread():
    """Run the block with one torch thread, then restore the setting.

    Many small models compute faster on one thread each, and on a busy machine idle intra-op
    threads spin: a tiny MNIST run takes 10x longer with 2 threads on 2 loaded cores.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def simulate_all(runs: list[tuple[dict, dict, Path]], processes: int = 1) -> list[dict]:
    """``afl.run.train.train`` each ``(raw config, changes, output folder)``; their ``run.json`` dicts, in order.

    ``changes`` maps dotted keys to values (``{"algorithm.routing": [...]}``), applied to the raw
    config as ``--set`` overrides. With ``processes > 1`` the runs are spread over that many worker processes, each with one
    torch thread (many small runs scale better over processes than over threads). A folder
    that already holds a completed run of its config is not run again (``afl.run.train``).
    """
    if processes <= 1 or len(runs) <= 1:
        return [_train(raw, changes, str(out)) for raw, changes, out in runs]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=min(processes, len(runs)), mp_context=context,
                             initializer=_one_thread) as pool:
        return list(pool.map(_train, *zip(*[(raw, changes, str(out)) for raw, changes, out in runs])))


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
