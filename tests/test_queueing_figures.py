"""The five queueing experiments of the workflow (workflow/scripts/queueing_*.py) on tiny settings.

Each script runs its simulations, writes its tidy table(s) and draws its figure (PNG and PDF);
the checks are on the numbers: the simulations agree with the closed forms within their
standard errors, and each table holds what its figure and the README's figures are read from.
"""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from afl.queueing.measure import value_at
from afl.queueing.network import throughput
from afl.queueing.rounds import expected_max_duration
from helpers import TWO_GROUPS

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"


def script(name):
    spec = importlib.util.spec_from_file_location(f"queueing_{name}", SCRIPTS / f"queueing_{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_figure(path: Path):
    assert path.with_suffix(".png").stat().st_size > 10_000
    assert path.with_suffix(".pdf").stat().st_size > 5_000


def mnist(root, clients, **extra):
    return {"name": "mnist", "root": str(root), "num_clients": clients, "train_subset": 3000, "test_subset": 500,
            "verify": False, **extra}


def test_staleness_scatter(tmp_path):
    spec = {"seed": 0, "updates": 10_000, "warmup": 0.1, "batches": 20, "networks": [
        {"name": "homogeneous", "clients": 4, "concurrency": 3, "rates": {"kind": "constant", "value": 1.0}},
        {"name": "two groups", "clients": 10, "concurrency": 10, "rates": TWO_GROUPS, "updates": 30_000,
         "routing_power": 0.0},
    ]}
    data = script("staleness").run(spec, tmp_path / "t.parquet", tmp_path / "f.png", tmp_path / "runs")
    assert list(data.columns) == ["network", "clients", "concurrency", "client", "rate", "p", "predicted",
                                  "simulated", "se", "z", "relative_error", "updates", "predicted_throughput",
                                  "simulated_throughput", "throughput_se"]
    assert len(data) == 14 and pd.read_parquet(tmp_path / "t.parquet").equals(data)
    # SPEC section 5's check network and the equal-load closed form E[tau_i] = m - 1.
    groups = data[data.network == "two groups"]
    assert groups.predicted.round(3).tolist() == [1.538] * 5 + [16.462] * 5
    assert np.allclose(data[data.network == "homogeneous"].predicted, 2.0)
    # The simulation agrees with the closed form within 3 standard errors, per client and in throughput.
    assert np.all(np.abs(data.z) < 3), data[["network", "client", "z"]]
    assert np.all(np.abs(data.simulated_throughput - data.predicted_throughput) < 3 * data.throughput_se)
    assert np.allclose(data.relative_error, data.simulated / data.predicted - 1)
    assert data.groupby("network").updates.sum().to_dict() == {"homogeneous": 9000, "two groups": 27000}
    assert_figure(tmp_path / "f.png")


def test_throughput_and_staleness_against_concurrency(tmp_path):
    spec = {"seed": 0, "updates": 25_000, "warmup": 0.1, "batches": 20, "clients": 10, "rates": TWO_GROUPS,
            "concurrency": [1, 5], "routing_powers": [0, 1]}
    data = script("concurrency").run(spec, tmp_path / "t.parquet", tmp_path / "f.png", tmp_path / "runs")
    assert list(data.columns) == ["routing_power", "concurrency", "quantity", "group", "predicted", "simulated", "se"]
    assert len(data) == 2 * 2 * 4  # routings x m x (throughput + staleness of all, rate 1, rate 0.2)
    thr = data[data.quantity == "throughput"].set_index(["routing_power", "concurrency"]).predicted
    # m = 1: a single task, lambda = 1 / sum_i p_i / mu_i; equal loads: lambda = m sum(mu) / (m + n - 1).
    assert thr[(0, 1)] == pytest.approx(1 / (0.5 / 1.0 + 0.5 / 0.2))
    for m in (1, 5):
        assert thr[(1, m)] == pytest.approx(m * 6.0 / (m + 9))
    staleness = data[data.quantity == "staleness"]
    single = staleness[staleness.concurrency == 1]
    assert (single.predicted == 0).all() and (single.simulated == 0).all()
    everyone = staleness[staleness.group == "all"]
    assert np.allclose(everyone.predicted, everyone.concurrency - 1)  # the identity sum_i p_i E[tau_i] = m - 1
    varying = data[data.se > 0]
    assert len(varying) == len(data) - 6
    z = (varying.simulated - varying.predicted) / varying.se
    assert np.all(np.abs(z) < 3), varying.assign(z=z)
    assert_figure(tmp_path / "f.png")


def test_routing_accuracy_at_a_time_budget(tmp_path, shared_data_root):
    spec = {"seeds": [0, 1], "time": 120, "budget": 80, "p_min": None,
            "constants": [{"name": "pilot", "pilot": 20}],
            "config": {"data": mnist(shared_data_root, 10, partition="dirichlet", alpha=0.5),
                       "model": {"name": "logreg"}, "client": {"optimizer": "sgd", "batch_size": 32},
                       "algorithm": {"name": "asyncsgd", "concurrency": 10, "server_lr": 0.005},
                       "timing": {"distribution": "exponential", "rates": TWO_GROUPS}, "run": {"eval_every": 10}}}
    module = script("routing")
    curves, summary = module.run(spec, tmp_path / "t.parquet", tmp_path / "s.parquet", tmp_path / "f.png",
                                 tmp_path / "runs")
    assert list(curves.columns) == ["constants", "routing", "seed", "version", "time", "test_acc", "test_loss"]
    assert sorted(set(zip(summary.constants, summary.routing))) == [
        ("pilot", "per-update optimal"), ("pilot", "wall-clock optimal"), ("uniform", "uniform")]
    assert (summary.status == "completed").all() and len(summary) == 6
    mu = np.array([1.0] * 5 + [0.2] * 5)
    for row in summary.itertuples():
        p = np.array(row.p)
        assert p.sum() == pytest.approx(1.0) and p.min() >= 1e-4
        assert row.predicted_throughput == pytest.approx(throughput(mu, p, 10).item())
        if row.routing != "uniform":
            assert row.bound <= row.bound_uniform and "A=" in row.constants_values
        # The accuracy at the budget is the model the server held then; the gain is over uniform, same seed.
        run = curves[(curves.constants == row.constants) & (curves.routing == row.routing) & (curves.seed == row.seed)]
        assert row.acc_at_budget == value_at(run, [80])[0] and 0.0 <= row.acc_at_budget <= 1.0
        assert run.version.max() >= row.updates_at_budget and run.time.iloc[-2] <= 120
        uniform = summary[(summary.routing == "uniform") & (summary.seed == row.seed)].acc_at_budget.item()
        assert (math.isnan(row.gain) if row.routing == "uniform" else row.gain == pytest.approx(row.acc_at_budget - uniform))
    # Updates within the budget follow the predicted throughput (a Poisson-like count around lambda * 80).
    expected = summary.predicted_throughput * 80
    assert np.all(np.abs(summary.updates_at_budget - expected) < 4 * np.sqrt(expected) + 10)
    assert (summary.acc_at_budget[summary.routing != "uniform"].notna()).all()
    gains = module.gains(summary)
    assert set(gains.index) == {("pilot", "per-update optimal"), ("pilot", "wall-clock optimal")}
    assert_figure(tmp_path / "f.png")


def test_constant_vs_delay_adaptive_step(tmp_path, shared_data_root):
    spec = {"seeds": [0, 1], "server_lr": [0.1], "rules": ["constant", "delay_adaptive"],
            "config": {"data": mnist(shared_data_root, 10, partition="dirichlet", alpha=0.5),
                       "model": {"name": "logreg"}, "client": {"optimizer": "sgd", "batch_size": 32},
                       "algorithm": {"name": "asyncsgd", "concurrency": 5},
                       "timing": {"distribution": "lognormal", "sigma": 2.5},
                       "run": {"updates": 150, "eval_every": 25}}}
    curves, staleness = script("stepsize").run(spec, tmp_path / "t.parquet", tmp_path / "s.parquet",
                                               tmp_path / "f.png", tmp_path / "runs")
    assert list(curves.columns) == ["rule", "server_lr", "seed", "status", "concurrency", "tau_c", "version",
                                    "time", "test_acc", "test_loss"]
    assert len(curves) == 2 * 2 * 7 and (curves.tau_c == 5).all()
    # Same seed, same task times: the two rules see the same delays but apply different steps.
    a = curves[curves.rule == "constant"].reset_index(drop=True)
    b = curves[curves.rule == "delay_adaptive"].reset_index(drop=True)
    assert np.array_equal(a.time, b.time) and not np.array_equal(a.test_loss, b.test_loss)
    assert list(staleness.columns) == ["seed", "staleness", "count"]
    assert staleness.groupby("seed")["count"].sum().tolist() == [150, 150]
    assert staleness.staleness.max() > 5  # heavy tails: some updates are staler than tau_C = m
    assert_figure(tmp_path / "f.png")


def test_async_vs_minibatch_sgd(tmp_path, shared_data_root):
    spec = {"seeds": [0], "clients": 100, "groups": [{"fraction": 0.9, "duration": 10}, {"fraction": 0.1, "duration": 60}],
            "gradients_per_round": 5, "time": 900, "eval_gradients": 50, "async_lr": [0.02], "minibatch_lr": [0.1],
            "warmup": 0.0, "batches": 6,
            "config": {"data": mnist(shared_data_root, 100, partition="iid"), "model": {"name": "logreg"},
                       "client": {"batch_size": 16}}}
    curves, timing = script("minibatch").run(spec, tmp_path / "t.parquet", tmp_path / "s.parquet", tmp_path / "f.png",
                                             tmp_path / "runs")
    assert list(curves.columns) == ["algorithm", "lr", "seed", "version", "gradients", "time", "test_acc", "test_loss"]
    t = timing.set_index("algorithm")
    durations = [10.0] * 90 + [60.0] * 10
    assert t.loc["asynchronous SGD", "theory"] == pytest.approx(15.0)
    assert t.loc["mini-batch SGD", "theory"] == pytest.approx(expected_max_duration(durations, 5))
    assert t.loc["mini-batch SGD", "theory_iid"] == pytest.approx(60 - 50 * 0.9**5)
    # Simulated time per C gradients: mini-batch rounds are i.i.d., so within 3 SE of E[max]; the
    # asynchronous tasks queue now and then (4 of 100 clients busy: about +4%), so within 3 SE + 8%.
    mb, asy = t.loc["mini-batch SGD"], t.loc["asynchronous SGD"]
    assert abs(mb.simulated - mb.theory) < 3 * mb.se
    assert abs(asy.simulated - asy.theory) < 3 * asy.se + 0.08 * asy.theory
    last = curves.groupby("algorithm").gradients.max()
    assert last["asynchronous SGD"] > 1.5 * last["mini-batch SGD"]  # async applies more gradients per time
    assert_figure(tmp_path / "f.png")
