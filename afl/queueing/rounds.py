"""The synchronous round: its expected duration, the slowest of ``c`` tasks.

Mini-batch (synchronous) SGD waits each round for the slowest of the ``c`` clients it drew;
asynchronous SGD with ``c`` tasks in flight needs the mean duration per ``c`` gradients
(Koloskova, Stich & Jaggi 2022). The workflow's ``minibatch`` experiment
(the ``minibatch`` figure kind, ``afl/figures/minibatch.py``) draws its theory lines from here.
"""

from __future__ import annotations

import numpy as np

from afl.queueing.network import QueueingError, _as_count

__all__ = ["expected_max_duration"]


def expected_max_duration(durations, c, replace: bool = False) -> float:
    """Expected duration ``E[max_{k <= c} D_k]`` of a synchronous round of ``c`` tasks.

    Mini-batch (synchronous) SGD waits for the slowest of ``c`` clients drawn uniformly from a
    population whose task durations are ``durations`` (Koloskova, Stich & Jaggi 2022, the
    comparison of asynchronous with mini-batch SGD). With the sorted distinct durations
    ``d_1 < ... < d_k`` and ``N(d) = #{i : D_i <= d}`` out of ``N`` clients,

        P(max <= d) = (N(d) / N)^c                  (``replace=True``: i.i.d. draws),
        P(max <= d) = C(N(d), c) / C(N, c)          (``replace=False``: ``c`` distinct clients),
        E[max]      = sum_j d_j (P(max <= d_j) - P(max <= d_{j-1})).

    The binomial ratio is evaluated as ``prod_{k < c} (N(d) - k) / (N - k)``. Koloskova et al.'s
    example, 900 clients at 10 s and 100 at 60 s with ``c = 10``, gives ``60 - 50 * 0.9^10 = 42.57``
    with replacement (42.65 without), against the mean duration of 15 s that asynchronous SGD
    with ``c`` tasks in flight needs per ``c`` gradients.
    """
    d = np.sort(np.asarray(durations, dtype=np.float64))
    if d.ndim != 1 or d.size == 0 or not np.isfinite(d).all() or (d < 0).any():
        raise QueueingError("durations: expected a non-empty 1-D array of finite numbers >= 0; fix: pass one duration per client")
    n = d.size
    c = _as_count(c, "c", 1)
    if not replace and c > n:
        raise QueueingError(f"c: {c} distinct clients but only {n}; fix: pass c <= {n} or replace=True")
    values, counts = np.unique(d, return_counts=True)
    below = np.cumsum(counts)  # N(d_j)
    if replace:
        cdf = (below / n) ** c
    else:
        k = np.arange(c)
        cdf = np.prod(np.clip(below[:, None] - k, 0, None) / (n - k), axis=1)
    return float(np.sum(values * np.diff(cdf, prepend=0.0)))
