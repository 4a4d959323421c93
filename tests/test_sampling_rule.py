"""The sampling probe's ``afl_rule`` mode (``afl.run.probes``): the aggregate the ``afl`` rule really
applied (its clients and weights ``n_k s(tau_k)``) at the probe's fixed client updates."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from afl.run import probes
from afl.run.probes import round_weights, rule_deviations
from afl.sim.selection import draw_counts, sample_mean_variance

from helpers import train_tables


def gram_of(u: np.ndarray) -> np.ndarray:
    centred = u - u.mean(0)
    return centred @ centred.T


def test_weighted_aggregates_of_three_scalars_by_hand():
    # u = 0, 1, 2 with data weights n = 1, 1, 2: the rule targets (0 + 1 + 2*2) / 4 = 1.25.
    # The three pairs weighted by n: {0,1} -> 0.5, {0,2} -> 4/3, {1,2} -> 5/3, deviating from 1.25 by
    # 0.75, 1/12 and 5/12: squares 81/144, 1/144, 25/144, mean 107/432.
    gram = gram_of(np.array([[0.0], [1.0], [2.0]]))
    sizes = np.array([1.0, 1.0, 2.0])
    pairs = np.array([[1 / 2, 1 / 2, 0], [1 / 3, 0, 2 / 3], [0, 1 / 3, 2 / 3]])
    sigma_w2, dev = rule_deviations(gram, sizes, pairs)
    np.testing.assert_allclose(dev, [81 / 144, 1 / 144, 25 / 144], rtol=1e-12)
    assert dev.mean() == pytest.approx(107 / 432, rel=1e-12)
    # sigma_w^2 = (1/3) sum (n_i / nbar)^2 (u_i - 1.25)^2, nbar = 4/3: (0.5625 (1.5625 + 0.0625) + 2.25 0.5625) / 3.
    assert sigma_w2 == pytest.approx(93 / 128, rel=1e-12)
    # Its first-order formula (n-m)/(m(n-1)) sigma_w^2 = 93/512 is only an approximation of the exact 107/432
    # under such unequal weights (the denominator sum_S n_k varies from pair to pair).
    assert sample_mean_variance(sigma_w2, 2, 3, replace=False) == pytest.approx(93 / 512, rel=1e-12)
    # Equal data weights: the plain mean, the unweighted sigma^2 = 2/3 and the exact formula 1/6.
    equal = np.array([[1 / 2, 1 / 2, 0], [1 / 2, 0, 1 / 2], [0, 1 / 2, 1 / 2]])
    sigma_w2, dev = rule_deviations(gram, np.full(3, 7.0), equal)
    assert sigma_w2 == pytest.approx(2 / 3, rel=1e-12)
    assert dev.mean() == pytest.approx(sample_mean_variance(2 / 3, 2, 3, replace=False), rel=1e-12)


def test_round_weights_are_the_rows_of_each_update():
    # Update 4: clients 0 and 2; update 5: client 1 twice (released, picked and back within the update) and 3.
    w = round_weights(4, np.array([4, 4, 5, 5, 5]), np.array([0, 2, 1, 3, 1]), np.array([.25, .75, .5, .2, .3]))
    np.testing.assert_allclose(w, [[.25, 0, .75, 0], [0, .8, 0, .2]], rtol=0, atol=0)
    assert round_weights(4, np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.array([])).shape == (0, 4)


@pytest.mark.parametrize("m", [1, 3, 7])
@pytest.mark.parametrize("replace", [False, True])
def test_equal_weights_and_uniform_draws_give_the_uniform_formulas(m, replace):
    """Equal n_k and s = 1 (weights 1/m) on uniform draws: the mode measures what the uniform modes
    measure, within 4 standard errors of sigma^2/m (n-m)/(n-1) (and sigma^2/m with replacement)."""
    n, draws = 10, 40_000
    u = np.random.default_rng(3).normal(size=(n, 6)) * np.arange(1, n + 1)[:, None]
    gram = gram_of(u)
    weights = draw_counts(np.random.default_rng(5), n, m, replace, draws) / m
    sigma_w2, dev = rule_deviations(gram, np.full(n, 600.0), weights)
    assert sigma_w2 == pytest.approx(np.trace(gram) / n, rel=1e-12)
    theory = sample_mean_variance(sigma_w2, m, n, replace)
    assert abs(dev.mean() - theory) < 4 * dev.std(ddof=1) / math.sqrt(draws), (dev.mean(), theory)


def test_unequal_weights_over_every_sample_match_the_exact_weighted_mean():
    """Six clients of unequal data, every sample of 3 weighted by n_k: the mean deviation is the exact
    E||sum_S n_k u_k / sum_S n_k - sum n_i u_i / sum n_i||^2, computed here mean by mean; the first-order
    theory lies within 10% of it at these weights (1 to 3)."""
    n, m = 6, 3
    rng = np.random.default_rng(7)
    u = rng.normal(size=(n, 4)) + rng.normal(size=4)
    sizes = np.array([100.0, 150, 200, 250, 300, 120])
    target = sizes @ u / sizes.sum()
    subsets = list(itertools.combinations(range(n), m))
    weights = np.zeros((len(subsets), n))
    exact = []
    for r, s in enumerate(subsets):
        s = list(s)
        weights[r, s] = sizes[s] / sizes[s].sum()
        exact.append(((sizes[s] @ u[s] / sizes[s].sum() - target) ** 2).sum())
    c = u - rng.normal(size=4)  # the Gram matrix may be of the u_i about any centre
    sigma_w2, dev = rule_deviations(c @ c.T, sizes, weights)
    np.testing.assert_allclose(dev, exact, rtol=1e-10)
    by_hand = ((sizes / sizes.mean()) ** 2 * ((u - target) ** 2).sum(1)).mean()
    assert sigma_w2 == pytest.approx(by_hand, rel=1e-12)
    assert sample_mean_variance(sigma_w2, m, n, False) == pytest.approx(np.mean(exact), rel=0.1)


RAW = {"data": {"name": "synthetic", "num_clients": 6}, "model": {"name": "logreg"},
       "client": {"steps": 3, "batch_size": 16, "lr": 0.05}, "algorithm": {"name": "afl", "concurrency": 3},
       "run": {"rounds": 9, "eval_every": 2, "sampling_draws": 500}}


def test_afl_rule_rows_measure_the_updates_the_rule_applied(tmp_path, monkeypatch):
    """Each evaluation's afl_rule row takes the updates since the previous evaluation, with the clients
    and weights of updates.parquet, and the data weights n_k of clients.parquet."""
    seen = []

    def spy(gram, sizes, weights):
        seen.append((sizes.copy(), weights.copy()))
        return rule_deviations(gram, sizes, weights)

    monkeypatch.setattr(probes, "rule_deviations", spy)
    _, _, updates, evals, clients = train_tables(tmp_path, RAW)
    sampling = pd.read_parquet(tmp_path / "sampling.parquet")
    rule = sampling[sampling["mode"] == "afl_rule"].reset_index(drop=True)
    versions = evals["version"].tolist()
    assert versions == [0, 2, 4, 6, 8, 9]
    assert rule["version"].tolist() == versions[1:]  # none at version 0: no update before it
    assert len(seen) == len(rule)
    for (sizes, weights), row, (prev, cur) in zip(seen, rule.itertuples(), zip(versions, versions[1:])):
        np.testing.assert_array_equal(sizes, clients["num_samples"].to_numpy(dtype=float))
        window = updates[(updates["version"] > prev) & (updates["version"] <= cur)]
        expected = np.zeros((cur - prev, 6))
        np.add.at(expected, (window["version"].to_numpy() - prev - 1, window["client"].to_numpy()),
                  window["weight"].to_numpy())
        np.testing.assert_array_equal(weights, expected)
        assert row.draws == cur - prev and row.m == 3 and row.n == 6
        assert row.theory == pytest.approx(sample_mean_variance(row.sigma2, 3, 6, False), rel=1e-12)
        assert row.variance > 0 and (row.draws == 1) == math.isnan(row.stderr)


def test_no_afl_rule_rows_for_other_rules(tmp_path):
    raw = {**RAW, "algorithm": {"name": "sfl", "concurrency": 3}, "run": {**RAW["run"], "rounds": 4}}
    train_tables(tmp_path, raw)
    modes = pd.read_parquet(tmp_path / "sampling.parquet")["mode"]
    assert set(modes) == {"with_replacement", "without_replacement"}
