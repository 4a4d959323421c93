"""``afl queue predict | optimize`` as a user runs them, and the pilot that estimates the bound's constants."""

import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from afl.cli import main
from afl.config import load_config, to_dict
from afl.queueing.model import network
from afl.run.pilot import pilot_constants, resolve_constants
from afl.queueing.network import mva, predict, throughput
from afl.queueing.routing import BoundConstants, bound
from afl.run.train import train
from helpers import REPO, TWO_GROUPS

# SPEC section 5's numerical check: 5 clients at rate 1, 5 at 0.2, uniform p, m = 10.
SPEC_NETWORK = {"data": {"num_clients": 10}, "algorithm": {"name": "asyncsgd", "concurrency": 10},
                "timing": {"rates": TWO_GROUPS}, "run": {"workload": "none", "updates": 1000}}


def write_config(tmp_path, raw, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def afl(capsys, *args):
    """Run the CLI in-process: (exit status, stdout, stderr)."""
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def table_rows(text):
    """The rows of the per-client table: lists of fields, keyed by the first field."""
    rows = {}
    for line in text.splitlines():
        fields = line.split()
        if fields and re.fullmatch(r"\d+", fields[0]):
            rows[int(fields[0])] = fields
    return rows


# --------------------------------------------------------------------------- predict


def test_predict_prints_spec_check_network(tmp_path, capsys):
    status, out, err = afl(capsys, "queue", "predict", write_config(tmp_path, SPEC_NETWORK))
    assert status == 0 and err == ""
    rows = table_rows(out)
    assert sorted(rows) == list(range(10))
    # client count rate p E[tau] utilisation sojourn
    for i in range(5):
        assert rows[i][2:5] == ["1.000", "0.1000", "1.538"]
    for i in range(5, 10):
        assert rows[i][2:5] == ["0.2000", "0.1000", "16.46"]
    assert "throughput lambda = 1.390 updates per unit time" in out
    assert "mean staleness sum_i p_i E[tau_i] = 9.000 (= m - 1)" in out
    # The utilisation column is rho_i lambda: 0.1 * 1.390 for a fast client.
    assert float(rows[0][5]) == pytest.approx(0.1390, abs=1e-4)


def test_predict_warns_outside_the_jackson_setting(tmp_path, capsys):
    raw = {**SPEC_NETWORK, "timing": {"distribution": "uniform", "rates": TWO_GROUPS}}
    status, out, err = afl(capsys, "queue", "predict", write_config(tmp_path, raw))
    assert status == 0 and "throughput lambda" in out
    assert err.count("\n") == 1 and err.startswith("afl: warning: the prediction is approximate:")
    assert "timing.distribution is uniform" in err


def test_predict_is_stable_at_ten_thousand_clients_and_tasks(tmp_path, capsys):
    raw = {"data": {"num_clients": 10_000}, "algorithm": {"name": "asyncsgd", "concurrency": 10_000},
           "timing": {"rates": {"kind": "lognormal", "sigma": 1.0}}, "run": {"workload": "none"}}
    status, out, _ = afl(capsys, "queue", "predict", write_config(tmp_path, raw))
    assert status == 0
    assert "n = 10000 clients, m = 10000 tasks" in out
    assert "mean staleness sum_i p_i E[tau_i] = 9999 (= m - 1)" in out
    lam = float(re.search(r"throughput lambda = (\S+)", out).group(1))
    mu, p, m = network(load_config(raw))
    assert lam == pytest.approx(mva(mu, p, m)[0].item(), rel=1e-3)  # 4 printed digits
    assert "nan" not in out and "inf" not in out
    assert "(clients binned by rate" in out and len(table_rows(out)) == 0  # 20 bins "k/20"
    assert out.count("/20 ") == 20


# --------------------------------------------------------------------------- optimize


@pytest.mark.parametrize("objective", ["update", "time"])
def test_optimize_improves_the_bound_and_writes_a_routing_file(tmp_path, capsys, objective):
    out_file = tmp_path / f"p-{objective}.json"
    status, out, err = afl(capsys, "queue", "optimize", write_config(tmp_path, SPEC_NETWORK),
                           "--objective", objective, "--out", out_file)
    assert status == 0 and err == ""
    doc = json.loads(out_file.read_text())
    p = np.array(doc["p"])
    assert doc["objective"] == objective and doc["m"] == 10 and len(p) == 10
    assert p.sum() == pytest.approx(1.0, abs=1e-12) and p.min() >= 1e-3 / 10
    pred = doc["predicted"]
    assert pred["bound"] < pred["bound_uniform"]
    # The file's numbers are the library's for its own constants.
    constants = BoundConstants(**{k: doc["constants"][k] for k in ("A", "L", "sigma", "zeta", "eta", "T",
                                                                   "time_budget")})
    mu = np.array([1.0] * 5 + [0.2] * 5)
    assert pred["bound"] == pytest.approx(bound(mu, p, 10, constants, objective).item(), rel=1e-10)
    assert pred["bound_uniform"] == pytest.approx(bound(mu, np.full(10, 0.1), 10, constants, objective).item(),
                                                  rel=1e-10)
    assert pred["throughput"] == pytest.approx(throughput(mu, p, 10).item(), rel=1e-10)
    assert pred["throughput_uniform"] == pytest.approx(1.3903, abs=1e-4)
    assert f"wrote {out_file}" in out
    # The lead's finding for the unit-scale constants (SPEC section 5 says (a) favours fast
    # clients; the bound says otherwise): the per-update optimum routes more to the slow
    # clients and slows the system, the wall-clock optimum routes more to the fast ones.
    if objective == "update":
        assert p[5:].mean() > 0.1 > p[:5].mean() and pred["throughput"] < pred["throughput_uniform"]
    else:
        assert p[:5].mean() > 0.1 > p[5:].mean() and pred["throughput"] > 2 * pred["throughput_uniform"]


def test_optimized_routing_file_is_used_by_a_training_run(tmp_path, capsys):
    out_file = tmp_path / "p.json"
    assert afl(capsys, "queue", "optimize", write_config(tmp_path, SPEC_NETWORK), "--objective", "time",
               "--out", out_file)[0] == 0
    p = np.array(json.loads(out_file.read_text())["p"])
    raw = {**SPEC_NETWORK, "algorithm": {**SPEC_NETWORK["algorithm"], "routing": str(out_file)},
           "run": {"workload": "none", "updates": 20_000}}
    cfg = load_config(raw)
    info = train(cfg, tmp_path / "run", progress=False)
    clients = pd.read_parquet(tmp_path / "run" / "clients.parquet")
    np.testing.assert_allclose(clients.routing_p, p, rtol=1e-12)
    pred = predict(network(cfg)[0], p, 10)
    np.testing.assert_allclose(clients.predicted_staleness, pred.relative_delay, rtol=1e-12)
    assert info["predicted_throughput"] == pytest.approx(pred.throughput, rel=1e-12)
    # Tasks are routed by p: each client's share of the 20,000 updates is p_i within 4 binomial SE.
    share = clients.tasks.to_numpy() / clients.tasks.sum()
    assert np.all(np.abs(share - p) < 4 * np.sqrt(p * (1 - p) / clients.tasks.sum()))
    # ...and the run is as fast as the routing predicts (2.88 updates per unit time, not 1.39).
    assert info["updates"] / info["virtual_time"] == pytest.approx(pred.throughput, rel=0.05)


def test_optimize_respects_a_binding_floor(tmp_path, capsys):
    out_file = tmp_path / "p.json"
    status, out, _ = afl(capsys, "queue", "optimize", write_config(tmp_path, SPEC_NETWORK), "--objective", "time",
                         "--p-min", "0.06", "--out", out_file)
    assert status == 0
    p = np.array(json.loads(out_file.read_text())["p"])
    assert p.min() >= 0.06 and p[5:] == pytest.approx(np.full(5, 0.06), abs=2e-3)
    assert json.loads(out_file.read_text())["p_min"] == 0.06


def test_constants_come_from_flags_then_the_run_budget(tmp_path, capsys):
    status, out, _ = afl(capsys, "queue", "optimize", write_config(tmp_path, SPEC_NETWORK), "--objective", "time",
                         "--L", "2", "--eta", "0.02", "--time-budget", "300")
    assert status == 0
    assert "L = 2.000 (given)" in out and "eta = 0.02000 (given)" in out and "A = 1.000 (default)" in out
    assert "time_budget = 300.0 (given)" in out
    cfg = load_config({**SPEC_NETWORK, "run": {"workload": "none", "time": 500}})
    constants, source = resolve_constants(cfg, {"zeta": 0.5})
    lam_uniform = 1.3903
    assert constants.zeta == 0.5 and source["zeta"] == "given" and source["A"] == "default"
    assert constants.time_budget == 500 and source["time_budget"] == "run.time"
    assert constants.T == pytest.approx(lam_uniform * 500, rel=1e-4) and source["T"] == "lambda(uniform) * run.time"
    constants, source = resolve_constants(load_config(SPEC_NETWORK))
    assert constants.T == 1000 and source["T"] == "run budget"
    assert constants.time_budget == pytest.approx(1000 / lam_uniform, rel=1e-4)


@pytest.mark.parametrize("flags, message", [
    (["--objective", "sideways"], "--objective: must be update or time, got 'sideways'"),
    (["--p-min", "0.5"], "p_min: must lie in [0, 1/n]"),
    (["--p-min", "-1"], "--p-min: must be a finite number >= 0, got -1"),
    (["--eta", "0"], "--eta: must be a finite number > 0, got 0"),
    (["--sigma", "nan"], "--sigma: must be a finite number >= 0, got nan"),
    (["--L", "big"], "--L: expected a number, got 'big'"),
    (["--pilot", "0"], "--pilot: must be >= 1, got 0"),
    (["--pilot", "ten"], "--pilot: expected an integer, got 'ten'"),
    (["--max-rows", "0"], "--max-rows: must be >= 1, got 0"),
    (["--out", "no/such/folder/p.json"], "--out no/such/folder/p.json: folder no/such/folder does not exist"),
    (["--pilot", "8"], "--pilot: needs training but run.workload is none"),
    (["--pilot", "8", "--set", "algorithm.name=fedasync"], "--pilot: runs AsyncSGD updates but algorithm.name is fedasync"),
])
def test_bad_flags_are_one_line_errors_with_exit_2(tmp_path, capsys, flags, message):
    status, out, err = afl(capsys, "queue", "optimize", write_config(tmp_path, SPEC_NETWORK), *flags)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("afl: error: ") and "; fix: " in lines[0], err
    assert message in lines[0]
    assert not list(tmp_path.glob("*.json"))


def test_entry_point_exits_2_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "afl.cli", "queue", "predict", str(tmp_path / "missing.yaml")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("afl: error: ")


# --------------------------------------------------------------------------- optimal

# Tyurin and Richtárik's tau_i = sqrt(i): constant draws, rates mu_i = i^-1/2.
POWER_TIMES = {"data": {"num_clients": 10}, "algorithm": {"name": "asyncsgd", "concurrency": 10},
               "timing": {"distribution": "constant", "rates": {"kind": "power", "exponent": 0.5}},
               "run": {"workload": "none", "updates": 100}}


def test_optimal_prints_the_best_m_and_the_curve(tmp_path, capsys):
    from afl.queueing.optimal import optimal_time

    status, out, err = afl(capsys, "queue", "optimal", write_config(tmp_path, POWER_TIMES), "--sigma2", "0.01")
    assert status == 0 and err == ""
    # L = Delta = 1, eps = 0.01, sigma2 = 0.01: t(m) = 100 (m + 1) / sum_{i<=m} 1/sqrt(i)
    # = 200, 175.74, 175.10, 179.57, ...: m* = 3, S = ceil(0.01/0.01) = 1.
    res = optimal_time(np.sqrt(np.arange(1, 11)), 1, 1, 0.01, 0.01)
    assert res.m_star == 3
    assert "best m* = 3 (the m* fastest of 10 clients)" in out
    assert "batch S = R = max(1, ceil(sigma^2/eps)) = 1" in out
    assert "t(m*) = 175.1;" in out
    assert "L = 1.000, Delta = 1.000, sigma^2 = 0.01000, eps = 0.01000; times up to a constant factor" in out
    ratio = float(re.search(r"t\(n\)/t\(m\*\) = (\S+)", out).group(1))
    assert ratio == pytest.approx(res.curve[-1] / res.time, rel=1e-3)
    lines = out.splitlines()
    clients = [line.split() for line in lines[lines.index(next(x for x in lines if x.startswith("client "))) + 1:][:10]]
    # client count time rank: client i has time sqrt(i + 1) and speed rank i + 1.
    assert [r[0] for r in clients] == [str(i) for i in range(10)]
    assert clients[3][2:] == ["2.000", "4"] and clients[8][2:] == ["3.000", "9"]
    curve_rows = [line.split() for line in lines[lines.index(next(x for x in lines if x.startswith("m "))) + 1:]]
    # m = 1, n = 10, m* = 3 and the rounded geometric grid 1, 1.39, 1.93, ..., 10 -> 1, 2, 3, 4, 5, 7, 10
    assert [int(r[0]) for r in curve_rows] == [1, 2, 3, 4, 5, 7, 10]
    # m H_m t(m) ratio: t(1) = 200 = 1.142 t(m*), t(10) = the printed t(n)/t(m*).
    assert curve_rows[0][1:4] == ["1.000", "200.0", "1.142"] and curve_rows[-1][3] == f"{ratio:#.4g}"
    star = [r for r in curve_rows if r[-1] == "m*"]
    assert len(star) == 1 and star[0][0] == "3" and star[0][3] == "1.000"


def test_optimal_finds_m_star_from_the_config(tmp_path, capsys):
    from afl.queueing.optimal import optimal_time

    for sigma2 in ["0", "0.003", "0.05", "1"]:
        raw = {**POWER_TIMES, "data": {"num_clients": 40}, "algorithm": {"name": "asyncsgd", "concurrency": 40}}
        status, out, _ = afl(capsys, "queue", "optimal", write_config(tmp_path, raw), "--sigma2", sigma2,
                             "--L", "2", "--delta", "3")
        assert status == 0
        m_star = int(re.search(r"best m\* = (\d+)", out).group(1))
        assert m_star == optimal_time(np.sqrt(np.arange(1, 41)), 2, 3, float(sigma2), 0.01).m_star
        assert "(clients binned by time)" in out  # 40 distinct times > 20 rows


def test_optimal_warns_on_random_times_and_refuses_varying_speeds(tmp_path, capsys):
    raw = {**POWER_TIMES, "timing": {"distribution": "exponential", "rates": {"kind": "power", "exponent": 0.5}}}
    status, out, err = afl(capsys, "queue", "optimal", write_config(tmp_path, raw))
    assert status == 0 and "best m* = " in out
    assert err.count("\n") == 1 and err.startswith("afl: warning: timing.distribution is exponential")
    raw = {**POWER_TIMES, "timing": {**POWER_TIMES["timing"], "modulation": {"kind": "markov"}}}
    status, out, err = afl(capsys, "queue", "optimal", write_config(tmp_path, raw))
    assert status == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("afl: error: timing.modulation is markov") and "; fix: " in lines[0]
    status, _, err = afl(capsys, "queue", "optimal", write_config(tmp_path, POWER_TIMES), "--eps", "0")
    assert status == 2 and err.startswith("afl: error: --eps: must be a finite number > 0")


# --------------------------------------------------------------------------- pilot


@pytest.fixture(scope="module")
def pilot_config(shared_data_root):
    return load_config({"data": {"name": "mnist", "root": str(shared_data_root), "num_clients": 6,
                                 "partition": "dirichlet", "alpha": 0.5, "train_subset": 3000, "test_subset": 500,
                                 "verify": False},
                        "model": {"name": "logreg"}, "client": {"batch_size": 32},
                        "algorithm": {"name": "asyncsgd", "concurrency": 4, "server_lr": 0.05},
                        "timing": {"rates": TWO_GROUPS}, "run": {"updates": 100}})


def test_pilot_estimates_plausible_constants(pilot_config):
    c = pilot_constants(pilot_config, 42)
    assert c["pilot_updates"] == 40  # rounded down to 4 checkpoints of 10 updates
    # A = f(x_0) of a 10-class model near its initialisation: about log 10.
    assert 1.5 < c["A"] < 4.0
    assert all(np.isfinite(c[k]) and c[k] > 0 for k in ("L", "sigma", "zeta"))
    # Dirichlet(0.5) shards disagree: the per-client gradients spread (zeta) by more than a tenth of sigma.
    assert c["zeta"] > 0.1 * c["sigma"]
    assert pilot_constants(pilot_config, 42) == c  # keyed streams: deterministic


def test_optimize_with_pilot_reports_estimated_constants(pilot_config, tmp_path, capsys):
    path = write_config(tmp_path, to_dict(pilot_config), "pilot.yaml")
    status, out, err = afl(capsys, "queue", "optimize", path, "--pilot", "40", "--sigma", "1.5",
                           "--out", tmp_path / "p.json")
    assert status == 0, err
    assert "sigma = 1.500 (given)" in out and "L = " in out and "(pilot (40 updates))" in out
    assert "eta = 0.05000 (algorithm.server_lr)" in out
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["constants"]["source"]["zeta"] == "pilot (40 updates)" and doc["constants"]["sigma"] == 1.5



def test_a_run_with_the_bounds_optimal_routing_runs_the_pilot_and_records_it(pilot_config, tmp_path, capsys):
    """algorithm.routing {optimize: time, pilot_seed: S}: the run's routing is `afl queue optimize`'s for
    the same config under the pilot's seed, the clients table and run.json say so, and the run's own
    seed does not change the routing (the rates are the groups')."""
    base = dataclasses.replace(pilot_config, run=dataclasses.replace(pilot_config.run, updates=None, time=40.0))
    path = write_config(tmp_path, to_dict(dataclasses.replace(base, seed=7)), "pilot.yaml")
    status, _, err = afl(capsys, "queue", "optimize", path, "--pilot", "40", "--objective", "time",
                         "--out", tmp_path / "p.json")
    assert status == 0, err
    expected = json.loads((tmp_path / "p.json").read_text())["p"]
    rule = {"optimize": "time", "pilot": 40, "pilot_seed": 7}
    for seed in (0, 1):
        cfg = load_config(to_dict(base), [f"seed={seed}", f"algorithm.routing={json.dumps(rule)}"])
        info = train(cfg, tmp_path / f"run{seed}", progress=False)
        assert info["status"] == "completed"
        clients = pd.read_parquet(tmp_path / f"run{seed}" / "clients.parquet")
        np.testing.assert_allclose(clients["routing_p"], expected, rtol=1e-9)
        assert info["routing"]["objective"] == "time" and info["routing"]["pilot_seed"] == 7
        assert info["routing"]["bound"] < info["routing"]["bound_uniform"]
        assert info["config"]["algorithm"]["routing"]["optimize"] == "time"  # the config as given
