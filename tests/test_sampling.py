"""The first seed's sampling analysis (section 2.2) and the probes that measure it in a run."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from afl.config import load_config
from afl.learning import models
from afl.learning.models import gradient_norm_sq
from afl import params
from afl.run import checkpoint
from afl.run.train import train
from afl.sim.selection import draw_counts, sample_mean_deviations, sample_mean_variance

from helpers import assert_same_tables, train_killed_after, train_tables


def gram_of(u: np.ndarray) -> np.ndarray:
    centred = u - u.mean(0)
    return centred @ centred.T


def test_formulas_against_enumerating_every_sample_of_three_scalars():
    # u = 0, 1, 2: mean 1, population variance sigma^2 = 2/3.
    # With replacement, the 9 ordered pairs' means deviate from 1 by 1, .25, 0, .25, 0, .25, 0, .25, 1
    # (squared): 3/9 = 1/3 = sigma^2 / 2. Without, the pairs {0,1}, {0,2}, {1,2} give .25, 0, .25:
    # 1/6 = sigma^2 / 2 * (3 - 2) / (3 - 1).
    assert sample_mean_variance(2 / 3, 2, 3, replace=True) == pytest.approx(1 / 3, rel=1e-15)
    assert sample_mean_variance(2 / 3, 2, 3, replace=False) == pytest.approx(1 / 6, rel=1e-15)
    gram = gram_of(np.array([[0.0], [1.0], [2.0]]))
    pairs = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=float)
    assert sample_mean_deviations(gram, pairs).mean() == pytest.approx(1 / 6, rel=1e-15)
    ordered = np.array([np.bincount([i, j], minlength=3) for i in range(3) for j in range(3)], dtype=float)
    assert sample_mean_deviations(gram, ordered).mean() == pytest.approx(1 / 3, rel=1e-15)


def test_without_replacement_of_everyone_has_no_variance():
    assert sample_mean_variance(5.0, 10, 10, replace=False) == 0.0
    u = np.random.default_rng(0).normal(size=(10, 4))
    counts = draw_counts(np.random.default_rng(1), 10, 10, False, 50)
    np.testing.assert_array_equal(counts, 1.0)
    np.testing.assert_allclose(sample_mean_deviations(gram_of(u), counts), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="1 <= m <= n"):
        sample_mean_variance(1.0, 11, 10, replace=False)


def test_draws_are_uniform_samples_of_m():
    rng = np.random.default_rng(2)
    for replace in (True, False):
        counts = draw_counts(rng, 8, 3, replace, 20_000)
        np.testing.assert_array_equal(counts.sum(1), 3)
        if not replace:
            assert counts.max() == 1
        # Each client is in a sample 3/8 of a time on average (binomial: within 5 standard errors).
        share = counts.mean(0) / 3
        assert np.abs(share - 1 / 8).max() < 5 * math.sqrt(1 / 8 * 7 / 8 / (3 * 20_000))


@pytest.mark.parametrize("m", [1, 3, 7])
def test_measured_variance_matches_both_formulas_within_sampling_error(m):
    """Known client updates (10 fixed vectors): the variance measured over 40,000 draws lies within
    4 standard errors of sigma^2/m with replacement and of sigma^2/m (n-m)/(n-1) without."""
    n, draws = 10, 40_000
    u = np.random.default_rng(3).normal(size=(n, 6)) * np.arange(1, n + 1)[:, None]  # unequal spreads
    gram = gram_of(u)
    sigma2 = np.trace(gram) / n
    assert sigma2 == pytest.approx(((u - u.mean(0)) ** 2).sum(1).mean(), rel=1e-12)
    measured = {}
    for replace in (True, False):
        dev = sample_mean_deviations(gram, draw_counts(np.random.default_rng(4 + replace), n, m, replace, draws))
        theory = sample_mean_variance(sigma2, m, n, replace)
        stderr = dev.std(ddof=1) / math.sqrt(draws)
        assert abs(dev.mean() - theory) < 4 * stderr, (replace, dev.mean(), theory, stderr)
        measured[replace] = dev.mean()
    if m > 1:
        assert measured[False] < measured[True]  # the seed's conclusion, here by (n-m)/(n-1) < 1


def test_gradient_norm_of_logistic_regression_matches_its_closed_form():
    torch.manual_seed(0)
    model = models.build("logreg", 3, (4,), generator=torch.Generator().manual_seed(1)).double()
    x = torch.randn(50, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (50,))
    vector = params.flatten(model)
    w, b = vector[:12].view(3, 4).numpy(), vector[12:].numpy()
    logits = x.numpy() @ w.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    err = p - np.eye(3)[y.numpy()]  # d NLL / d logits
    expected = ((err.T @ x.numpy() / 50) ** 2).sum() + ((err.mean(0)) ** 2).sum()
    for batch in (50, 7):  # one batch or several: the same mean gradient
        assert gradient_norm_sq(model, vector, x, y, batch) == pytest.approx(expected, rel=1e-12)


RAW = {"data": {"name": "synthetic", "num_clients": 6}, "model": {"name": "logreg"},
       "client": {"steps": 3, "batch_size": 16, "lr": 0.05}, "algorithm": {"name": "afl", "concurrency": 3},
       "run": {"rounds": 6, "eval_every": 2}}


def test_probes_measure_without_changing_the_run(tmp_path):
    plain = train_tables(tmp_path / "plain", RAW)
    probed_raw = {**RAW, "run": {**RAW["run"], "sampling_draws": 4000, "grad_norm_samples": 500}}
    probed = train_tables(tmp_path / "probed", probed_raw)
    _, _, updates, evals, _ = plain
    _, _, p_updates, p_evals, _ = probed
    pd.testing.assert_frame_equal(updates, p_updates, check_exact=True)
    keep = ["version", "time", "test_loss", "test_acc", "server_loss"]
    pd.testing.assert_frame_equal(evals[keep], p_evals[keep], check_exact=True)
    assert evals["grad_norm_sq"].isna().all() and (p_evals["grad_norm_sq"] > 0).all()
    assert len(pd.read_parquet(tmp_path / "plain" / "sampling.parquet")) == 0

    everything = pd.read_parquet(tmp_path / "probed" / "sampling.parquet")
    # The afl rule's own aggregate at every evaluation but the first (no update precedes it), one
    # draw per update since the previous evaluation (tests/test_sampling_rule.py).
    rule = everything[everything["mode"] == "afl_rule"]
    assert rule["version"].tolist() == p_evals["version"].tolist()[1:] and (rule["draws"] == 2).all()
    assert (rule["sigma2"] > 0).all() and (rule["variance"] > 0).all()
    sampling = everything[everything["mode"] != "afl_rule"]
    assert len(sampling) == 2 * len(p_evals)
    assert set(sampling["mode"]) == {"with_replacement", "without_replacement"}
    assert (sampling[["m", "n", "draws"]] == [3, 6, 4000]).all().all()
    assert (sampling["sigma2"] > 0).all()
    # Each measurement within 5 standard errors of the seed's formula at the same model.
    z = (sampling["variance"] - sampling["theory"]) / sampling["stderr"]
    assert (z.abs() < 5).all(), sampling
    wo = sampling[sampling["mode"] == "without_replacement"].reset_index(drop=True)
    w = sampling[sampling["mode"] == "with_replacement"].reset_index(drop=True)
    np.testing.assert_allclose(wo["theory"] / w["theory"], (6 - 3) / (6 - 1), rtol=1e-12)


def test_probes_resume_like_the_rest(tmp_path, monkeypatch):
    """A run killed after a checkpoint and resumed writes the same tables, the sampling table with
    them, as one that was not."""
    raw = {**RAW, "run": {**RAW["run"], "sampling_draws": 500, "checkpoint_every": 2}}
    train_tables(tmp_path / "whole", raw)
    train_killed_after(load_config(raw), tmp_path / "cut", 2, monkeypatch)
    assert checkpoint.load(tmp_path / "cut") is not None
    train(load_config(raw), tmp_path / "cut", progress=False)
    assert {"with_replacement", "without_replacement", "afl_rule"} == set(
        pd.read_parquet(tmp_path / "cut" / "sampling.parquet")["mode"])
    assert_same_tables(tmp_path / "whole", tmp_path / "cut")
