"""The second and third seeds' experiments as ordinary workflow experiments, on tiny settings.

One Snakemake run (module fixture) plans, runs and aggregates five small experiments like any
other and draws the five queueing figure kinds (afl/figures/<kind>.py); the checks are on
the numbers those figures draw, recomputed from the aggregated tables by the kinds' ``*_table``
functions: the simulations agree with the closed forms within their standard errors, the bound's
routing comes from a pilot on its own seed, and the gains are paired by seed.
"""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from afl.figures.common import bound_constants
from afl.figures.concurrency_budget import concurrency_table
from afl.figures.minibatch import minibatch_table
from afl.figures.queue_staleness import staleness_table
from afl.figures.routing_gain import predicted_improvement, routing_table, step_gains, tuned_gains
from afl.figures.target import first_reached
from afl.figures.throughput import throughput_table
from afl.queueing.rounds import expected_max_duration
from afl.queueing.routing import BoundConstants, bound, optimize_concurrency, optimize_routing
from helpers import REPO, TWO_GROUPS, snakemake, train_jobs, write_yaml

JACKSON = str(REPO / "config" / "runs" / "jackson.yaml")
OPTIMIZED = {"optimize": "update", "pilot": 20, "pilot_seed": 1000}
OPTIMIZED_TIME = {"optimize": "time", "pilot": 20, "pilot_seed": 1000, "time_budget": 80}


def mnist(root, clients: int, **extra) -> dict:
    return {"name": "mnist", "root": str(root), "num_clients": clients, "train_subset": 3000, "test_subset": 500,
            "verify": False, **extra}


@pytest.fixture(scope="module")
def grid(tmp_path_factory, shared_data_root):
    """The five experiments run through the workflow; their tables and figure specs."""
    tmp = tmp_path_factory.mktemp("queueing")
    learning = write_yaml(tmp / "learning.yaml", {
        "data": mnist(shared_data_root, 10, partition="dirichlet", alpha=0.5), "model": {"name": "logreg"},
        "client": {"optimizer": "sgd", "batch_size": 32},
        "algorithm": {"name": "asyncsgd", "concurrency": 10, "server_lr": 0.005},
        "timing": {"distribution": "exponential", "rates": TWO_GROUPS}, "run": {"time": 80, "eval_every": 10}})
    koloskova = write_yaml(tmp / "koloskova.yaml", {
        "data": mnist(shared_data_root, 100, partition="iid"), "model": {"name": "logreg"}, "client": {"batch_size": 16},
        "algorithm": {"name": "asyncsgd", "concurrency": 5, "server_lr": 0.02},
        "timing": {"distribution": "constant",
                   "rates": {"kind": "groups", "groups": [{"fraction": 0.9, "rate": 0.1}, {"fraction": 0.1, "rate": 1 / 60}]}},
        "run": {"time": 900, "eval_every": 50}})
    minibatch = {"algorithm.name": "sfl", "client.steps": 1, "client.optimizer": "sgd", "client.momentum": 0.0,
                 "algorithm.weighting": "uniform", "run.eval_every": 10, "client.lr": 0.1}
    config = {"threads": 1, "experiments": {
        "qs": {"config": JACKSON, "variants": [
            {"data.num_clients": 4, "algorithm.concurrency": 3, "timing.rates": {"kind": "constant", "value": 1.0},
             "run.updates": 10000},
            {"run.updates": 30000}]},
        "qc": {"config": JACKSON, "set": {"run.updates": 25000},
               "grid": {"algorithm.routing": ["uniform", {"power": 1}], "algorithm.concurrency": [1, 5]}},
        "routing": {"config": str(learning), "grid": {
            "algorithm.server_lr": [0.005, 0.02], "algorithm.routing": ["uniform", OPTIMIZED, OPTIMIZED_TIME],
            "seed": [0, 1]}},
        "concurrency": {"config": str(learning), "grid": {
            "algorithm.concurrency": [2, 5], "algorithm.routing": ["uniform", OPTIMIZED_TIME]}},
        "mb": {"config": str(koloskova), "variants": [{"algorithm.server_lr": 0.02}, minibatch]},
    }, "figures": {
        "queue_staleness": {"kind": "queue_staleness", "experiment": "qs", "batches": 20},
        "throughput": {"kind": "throughput", "experiment": "qc", "hue": ["algorithm.routing"], "batches": 20},
        "routing_gain": {"kind": "routing_gain", "experiment": "routing", "budget": 80,
                         "panel": "algorithm.server_lr"},
        "concurrency_budget": {"kind": "concurrency_budget", "experiment": "concurrency", "budget": 80},
        "minibatch": {"kind": "minibatch", "experiment": "mb", "warmup": 0.0, "batches": 6,
                      "steps": {"asyncsgd": "algorithm.server_lr", "sfl": "client.lr"}},
    }}
    wf = write_yaml(tmp / "wf.yaml", config)
    result = snakemake(tmp, "--configfile", str(wf), "--cores", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert train_jobs(result.stdout + result.stderr) == 2 + 4 + 12 + 4 + 2  # one cell per run, as every experiment
    tables = {e: {k: pd.read_parquet(tmp / "results" / e / "tables" / f"{k}.parquet")
                  for k in ("runs", "evals", "updates", "clients")} for e in config["experiments"]}
    return tmp, tables, config["figures"]


def test_every_queueing_figure_is_drawn_with_its_log(grid):
    tmp, _, figures = grid
    for name in figures:
        assert (tmp / "results" / "figures" / f"{name}.png").stat().st_size > 10_000
        assert (tmp / "results" / "figures" / f"{name}.pdf").stat().st_size > 5_000
    log = (tmp / "results" / "logs" / "figures" / "routing_gain.log").read_text()
    assert "gain over uniform routing" in log and "bound-optimal per update" in log
    assert "routing_gain: no tuning_seeds: each routing's server_lr was chosen on the seeds shown (0, 1)" in log
    assert "routing_gain: tuned: bound-optimal per update (server_lr " in log and "no interval below 10" in log


def test_staleness_per_client_matches_the_closed_network(grid):
    _, tables, _ = grid
    t = tables["qs"]
    data = staleness_table(t, t["runs"], pd.Series(t["runs"]["cell"].to_numpy(), index=t["runs"]["cell"]), 0.1, 20)
    assert len(data) == 14
    by_n = {n: d for n, d in data.groupby(data["group"].str.extract(r"n=(\d+)$")[0].astype(int))}
    # SPEC section 5's check network (two groups, rates 1 and 0.2, m = n = 10) and the homogeneous
    # closed form E[tau_i] = m - 1.
    assert by_n[10]["predicted"].round(3).tolist() == [1.538] * 5 + [16.462] * 5
    assert np.allclose(by_n[4]["predicted"], 2.0)
    assert np.all(np.abs(data["z"]) < 3), data[["group", "client", "z"]]
    assert np.allclose(data["relative"], data["simulated"] / data["predicted"] - 1)
    assert by_n[4]["updates"].sum() == 9000 and by_n[10]["updates"].sum() == 27000  # after the 10% warm-up


def test_throughput_and_staleness_against_m_match_the_closed_forms(grid):
    _, tables, _ = grid
    t = tables["qc"]
    data, networks = throughput_table(t, t["runs"], "algorithm.routing", 0.1, 20)
    assert set(networks) == {"uniform", "p ~ mu (equal loads)"}
    assert len(data) == 2 * 2 * 4  # routings x m x (throughput + staleness of all, rate 1, rate 0.2)
    thr = data[data["quantity"] == "throughput"].set_index(["routing", "m"])["predicted"]
    # m = 1: lambda = 1 / sum_i p_i / mu_i; equal loads (p ~ mu): lambda = m sum(mu) / (m + n - 1).
    assert thr[("uniform", 1)] == pytest.approx(1 / (0.5 / 1.0 + 0.5 / 0.2))
    for m in (1, 5):
        assert thr[("p ~ mu (equal loads)", m)] == pytest.approx(m * 6.0 / (m + 9))
    staleness = data[data["quantity"] == "staleness"]
    single = staleness[staleness["m"] == 1]
    assert (single["predicted"] == 0).all() and (single["simulated"] == 0).all()
    everyone = staleness[staleness["group"] == "all"]
    assert np.allclose(everyone["predicted"], everyone["m"] - 1)  # sum_i p_i E[tau_i] = m - 1
    varying = data[data["se"] > 0]
    assert len(varying) == len(data) - 6
    z = (varying["simulated"] - varying["predicted"]) / varying["se"]
    assert np.all(np.abs(z) < 3), varying.assign(z=z)


def test_optimized_routing_comes_from_its_own_pilot_and_the_gain_is_paired(grid):
    _, tables, _ = grid
    t = tables["routing"]
    runs, clients = t["runs"], t["clients"]
    assert (runs["status"] == "completed").all()
    cells, choices = routing_table(t, runs, 80, "algorithm.server_lr", "algorithm.routing")  # no tuning seeds
    assert cells["shown"].all()
    gains = step_gains(cells, "algorithm.server_lr")
    assert set(zip(gains["routing"], gains["algorithm.server_lr"])) == {
        (r, lr) for r in ("bound-optimal per update", "bound-optimal per unit of time") for lr in (0.005, 0.02)}
    assert (gains["seeds"] == 2).all() and gains["low"].isna().all()  # 2 pairs: no interval (10)
    for row in gains.itertuples(index=False):
        same = cells[(cells["algorithm.server_lr"] == row[1])]
        mine = same[same["route"] == row.routing].set_index("seed")["acc"]
        base = same[same["route"] == "uniform"].set_index("seed")["acc"]
        assert row.gain == pytest.approx((mine - base).mean())
    # Tuned against tuned: each routing at the step of its best mean accuracy, paired by seed.
    mean = cells.groupby(["route", "algorithm.server_lr"])["acc"].mean()
    best = {route: mean[route].idxmax() for route in cells["route"].unique()}
    assert {c.method["route"]: c.values["algorithm.server_lr"] for c in choices} == best
    at_best = {r: cells[(cells["route"] == r) & (cells["algorithm.server_lr"] == lr)].set_index("seed")["acc"]
               for r, lr in best.items()}
    for row in tuned_gains(cells, choices, "algorithm.server_lr").itertuples(index=False):
        assert (row.step, row.uniform_step) == (best[row.routing], best["uniform"])
        assert row.gain == pytest.approx((at_best[row.routing] - at_best["uniform"]).mean()) and row.seeds == 2
    mu = np.array([1.0] * 5 + [0.2] * 5)
    for r in runs.itertuples(index=False):
        p = clients[clients["cell"] == r.cell].sort_values("client")["routing_p"].to_numpy()
        assert p.sum() == pytest.approx(1.0)
        if not isinstance(r.routing, str):  # uniform: no pilot, no constants
            assert np.allclose(p, 0.1)
            continue
        info = json.loads(r.routing)
        assert info["pilot_seed"] == 1000 and info["bound"] <= info["bound_uniform"]
        # The recorded constants give back the run's routing (same optimiser, same inputs).
        constants = bound_constants(pd.DataFrame({"routing": [r.routing]}))[info["objective"]]
        np.testing.assert_allclose(optimize_routing(mu, 10, constants, info["objective"]).p, p, rtol=1e-6)
    # The pilot runs on its own seed: evaluation seeds 0 and 1 get the same routing.
    spread = clients.groupby(["algorithm.routing", "algorithm.server_lr", "client"])["routing_p"].agg(np.ptp)
    assert (spread == 0).all()
    # Updates within the budget follow the closed network's throughput (a Poisson-like count).
    counts = t["updates"][t["updates"]["time"] <= 80].groupby("cell").size()
    expected = (runs.set_index("cell")["predicted_throughput"] * 80).reindex(counts.index).to_numpy()
    assert np.all(np.abs(counts.to_numpy() - expected) < 4 * np.sqrt(expected) + 10)
    # The bound's predicted improvement, per step size, is 1 - B(p*) / B(uniform) with B evaluated
    # here at the optimiser's p* and at uniform p (the brute-force minimum: tests/test_queueing.py).
    etas = [0.005, 0.02]
    improvement = predicted_improvement(mu, 10, constants, info["objective"], etas)
    for eta, got in zip(etas, improvement):
        at = dataclasses.replace(constants, eta=eta)
        best = optimize_routing(mu, 10, at, info["objective"]).p
        uniform = np.full(len(mu), 1 / len(mu))
        expected = 100 * (1 - float(bound(mu, best, 10, at, info["objective"]))
                          / float(bound(mu, uniform, 10, at, info["objective"])))
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-9) and expected > 0


def test_concurrency_marks_the_bounds_best_m(grid):
    """The marks are ``optimize_concurrency``'s best m over 1 .. the largest m run (5), on the first
    cell's rates and the constants its optimized cells' pilots recorded, without (steps=0: p stays
    uniform) and with the routing optimised; the accuracy is the last evaluation at or before 80."""
    _, tables, _ = grid
    t = tables["concurrency"]
    runs = t["runs"]
    cells, marks = concurrency_table(t, runs, 80, "algorithm.routing")
    recorded = runs.loc[(runs["status"] == "completed") & runs["routing"].notna(), "routing"].map(json.loads)
    assert len(recorded) == 2 and {r["objective"] for r in recorded} == {"time"}
    constants = BoundConstants(**{k: recorded.iloc[0][k] for k in ("A", "L", "sigma", "zeta", "eta", "T", "time_budget")})
    first = t["clients"][t["clients"]["cell"] == runs["cell"].iloc[0]].sort_values("client")
    mu = np.array(first["rate"], dtype=float)
    assert mu.tolist() == [1.0] * 5 + [0.2] * 5
    ms = range(1, runs["algorithm.concurrency"].max() + 1)
    assert marks == {"uniform": optimize_concurrency(mu, ms, constants, "time", steps=0).m,
                     "joint": optimize_concurrency(mu, ms, constants, "time").m}
    evals = t["evals"].sort_values("time")
    acc = {c: 100 * e.loc[e["time"] <= 80, "test_acc"].iloc[-1] for c, e in evals.groupby("cell")}
    assert len(cells) == 4 and cells.set_index("cell")["acc"].to_dict() == pytest.approx(acc)


def queued_delay(durations, c: int) -> float:
    """The asynchronous tasks' expected wait, to first order in (c - 1) / n: a task is sent to a
    client drawn uniformly from n, busy with one of the c - 1 other tasks with probability about
    (c - 1) / n, and then waits for the rest of that task, E[D^2] / (2 E[D]) on average (a task in
    service is caught in proportion to its duration; constant durations: half of it remains)."""
    d = np.asarray(durations, dtype=float)
    return (c - 1) / len(d) * (d**2).mean() / (2 * d.mean())


def test_async_vs_minibatch_timing_matches_koloskova(grid):
    _, tables, figures = grid
    t = tables["mb"]
    cells, choices, timing = minibatch_table(t, t["runs"], figures["minibatch"]["steps"], 0.0, 6)
    durations = [10.0] * 90 + [60.0] * 10
    assert timing.at["asynchronous SGD", "theory"] == pytest.approx(15.0)
    assert timing.at["mini-batch SGD", "theory"] == pytest.approx(expected_max_duration(durations, 5))
    # The simulated time per 5 gradients: 5 x the mean time between applied results (mini-batch: a
    # version is a round of 5), its SE from 6 batch means of those gaps (warm-up 0).
    for name, method in (("asyncsgd", "asynchronous SGD"), ("sfl", "mini-batch SGD")):
        (cell,) = t["runs"].loc[t["runs"]["algorithm.name"] == name, "cell"]
        u = t["updates"][t["updates"]["cell"] == cell]
        times = u.groupby("version")["time"].first().sort_index().to_numpy()
        gaps = np.diff(times) * 5 / (len(u) / len(times))
        assert len(u) / len(times) == (1 if name == "asyncsgd" else 5)
        assert timing.at[method, "simulated"] == pytest.approx(gaps.mean())
        assert timing.at[method, "se"] == pytest.approx(np.std([b.mean() for b in np.array_split(gaps, 6)], ddof=1) / np.sqrt(6))
    # Against the closed forms. Mini-batch rounds are i.i.d. (5 distinct clients each): E[max] without
    # bias, within 3 SE. The asynchronous tasks queue now and then: E[D] + queued_delay = 15 + 0.04 *
    # 450 / 30 = 15.6 (the next order, two tasks queued at one client, is (4/100)^2 smaller); within
    # 3 SE of that (one SE, 6 batch means of ~290 gaps, is ~11% here: the 4% bias is not resolved by
    # this short run, only allowed for).
    mb, asy = timing.loc["mini-batch SGD"], timing.loc["asynchronous SGD"]
    assert queued_delay(durations, 5) == pytest.approx(0.6)
    assert abs(mb.simulated - mb.theory) < 3 * mb.se
    assert abs(asy.simulated - (asy.theory + queued_delay(durations, 5))) < 3 * asy.se
    assert {c.method["method"]: c.values["step"] for c in choices} == \
        {"asynchronous SGD": 0.02, "mini-batch SGD": 0.1}  # one step each here (test_figures.py: three)
    applied = t["updates"].groupby("cell").size()
    method = t["runs"].set_index("cell")["algorithm.name"]
    assert applied[method == "asyncsgd"].item() > 1.5 * applied[method == "sfl"].item()


def test_first_reached_by_hand():
    """The target kind's measure: the first version where the mean of the last k evaluations is <= goal."""
    evals = pd.DataFrame({"cell": ["a"] * 5 + ["b"] * 3, "version": [0, 10, 20, 30, 40, 0, 10, 20],
                          "grad_norm_sq": [3.0, 0.4, 2.0, 0.2, 0.3, 1.0, 0.9, 0.8]})
    assert first_reached(evals, "grad_norm_sq", 0.5, 1).to_dict() == {"a": 10}
    # Means of the last two: 3, 1.7, 1.2, 1.1, 0.25.
    assert first_reached(evals, "grad_norm_sq", 0.5, 2).to_dict() == {"a": 40}
    assert first_reached(evals.iloc[::-1], "grad_norm_sq", 0.5, 2).to_dict() == {"a": 40}  # any row order
