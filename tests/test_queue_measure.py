"""afl.queueing.measure: batch-means standard errors, per-client staleness, update rate, model at a time, t-interval."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from afl.queueing.measure import batch_means, staleness_per_client, steady_state, t_interval, update_rate, value_at


def ar1(phi, n, seed):
    rng = np.random.default_rng(seed)
    x = np.empty(n)
    x[0] = rng.normal() / np.sqrt(1 - phi**2)
    for k in range(1, n):
        x[k] = phi * x[k - 1] + rng.normal()
    return x


def test_batch_means_standard_error_of_an_autocorrelated_series():
    # AR(1): the variance of the mean of n values is about (1 + phi) / (1 - phi) / (1 - phi^2) / n.
    phi, n = 0.8, 40_000
    true_se = np.sqrt((1 + phi) / (1 - phi) / (1 - phi**2) / n)
    ses = [batch_means(ar1(phi, n, seed))[1] for seed in range(8)]
    assert np.mean(ses) == pytest.approx(true_se, rel=0.15)
    # The naive i.i.d. standard error is 3x too small here: the batches absorb the correlation.
    assert np.std(ar1(phi, n, 0)) / np.sqrt(n) < 0.4 * true_se
    mean, se = batch_means(np.arange(10.0), batches=40)  # too short for 40 batches
    assert mean == 4.5 and np.isnan(se)


def updates_frame():
    # Versions 1..10 at times 1..10 (one update per unit time); clients alternate 0, 1; staleness = client.
    v = np.arange(1, 11)
    return pd.DataFrame({"version": v, "time": v.astype(float), "client": v % 2, "staleness": v % 2})


def test_steady_state_staleness_and_rate():
    u = updates_frame()
    assert steady_state(u, 0.3).version.tolist() == list(range(4, 11))
    per_client = staleness_per_client(u, 3, warmup=0.0, batches=2)
    assert per_client.client.tolist() == [0, 1, 2] and per_client.updates.tolist() == [5, 5, 0]
    assert per_client.simulated[:2].tolist() == [0.0, 1.0] and np.isnan(per_client.simulated[2])
    lam, se = update_rate(u, warmup=0.0, batches=3)
    assert lam == 1.0 and se == 0.0
    # A synchronous rule records m rows per version: the gap is taken between versions.
    rounds = pd.DataFrame({"version": np.repeat([1, 2, 3, 4, 5, 6], 3), "time": np.repeat([2.0, 4, 6, 8, 10, 12], 3)})
    assert update_rate(rounds, warmup=0.0, batches=2)[0] == 0.5


def test_value_at_is_the_last_evaluation_at_or_before():
    evals = pd.DataFrame({"time": [0.0, 5.0, 9.0], "test_acc": [0.1, 0.5, 0.8]})
    assert value_at(evals.iloc[::-1], [0, 4.9, 5, 8, 100]).tolist() == [0.1, 0.1, 0.5, 0.5, 0.8]
    assert np.isnan(value_at(evals.assign(time=evals.time + 1), [0.5])[0])


def test_t_interval():
    x = [1.0, 2.0, 3.0, 6.0]
    low, high = t_interval(x)
    half = stats.t.ppf(0.975, 3) * np.std(x, ddof=1) / 2
    assert (low, high) == pytest.approx((3 - half, 3 + half))
    assert t_interval([2.0]) == (2.0, 2.0)
    assert t_interval([1.0, np.nan, 3.0]) == t_interval([1.0, 3.0])
