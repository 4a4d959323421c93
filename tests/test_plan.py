"""``afl plan``: cells, pending cells, jobs and the estimated work of a cell, hand-computed."""

import json

import pytest

from afl.cli import main
from helpers import REPO, write_yaml

# The MLP of McMahan et al. on 28x28 inputs: 784-200-200-10, forward FLOPs = 2 x MACs.
MLP_FLOPS = 2 * (784 * 200 + 200 * 200 + 200 * 10)


def workflow(tmp_path, base: dict, **experiment) -> dict:
    path = write_yaml(tmp_path / "base.yaml", base)
    return {"results": str(tmp_path / "results"), "experiments": {"e": {"config": str(path), **experiment}}}


def test_work_of_a_round_budget_by_hand(tmp_path, capsys):
    """afl, m = 5 of 10 clients, one local epoch over 6,000 images (600 per client), 20 rounds,
    an evaluation every 2 server updates on 2,000 test images."""
    base = {"data": {"name": "mnist", "num_clients": 10, "train_subset": 6000, "test_subset": 2000},
            "model": {"name": "mlp"}, "client": {"epochs": 1, "batch_size": 50},
            "algorithm": {"name": "afl", "concurrency": 5}, "run": {"rounds": 20, "eval_every": 2}}
    config = write_yaml(tmp_path / "wf.yaml", workflow(tmp_path, base, grid={"seed": [0, 1, 2]}))
    assert main(["plan", str(config)]) == 0
    out = capsys.readouterr().out
    row = next(line.split() for line in out.splitlines() if line.startswith("e "))
    # 20 rounds x 5 results x 600 samples; 20 updates (afl applies m results per update): 11 evaluations.
    train, evals = 20 * 5 * 600, (20 // 2 + 1) * 2000
    flops = 3 * MLP_FLOPS * train + MLP_FLOPS * evals
    cells, pending, per_job, jobs, arrays = map(int, row[1:6])
    assert (cells, pending, per_job, jobs, arrays) == (3, 3, 1, 3, 1)
    assert float(row[9]) == pytest.approx(train, rel=1e-3)
    assert float(row[10]) == pytest.approx(flops / 1e12, rel=1e-3)
    assert float(row[12]) == pytest.approx(3 * flops / 1e12, rel=1e-3)


def test_finished_cells_are_not_pending_and_the_null_workload_is_free(tmp_path, capsys):
    from afl.cluster.pipeline import expand

    base = {"data": {"num_clients": 4}, "algorithm": {"name": "asyncsgd", "concurrency": 2},
            "run": {"workload": "none", "updates": 100}}
    config = workflow(tmp_path, base, grid={"seed": [0, 1, 2, 3]},
                      slurm={"gpus": 0, "time_min": 7, "cells_per_job": 2})
    cells = expand(config["experiments"], REPO)["e"]
    for cell, status in zip(cells, ("completed", "failed")):  # a failed run is still pending
        done = tmp_path / "results" / "e" / cell.name
        done.mkdir(parents=True)
        (done / "run.json").write_text(json.dumps({"config_hash": cell.config_hash, "status": status}))
    assert main(["plan", str(write_yaml(tmp_path / "wf.yaml", config))]) == 0
    row = next(line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("e "))
    # cells, pending, cells/job, jobs = ceil(3 / 2), arrays, gpus, cpus (default), time_min
    assert row[1:9] == ["4", "3", "2", "2", "1", "0", "8", "7"]
    assert float(row[10]) == 0.0


def test_time_budget_uses_the_closed_network_throughput(tmp_path):
    """AsyncSGD over 10 identical clients of rate 1 (equal loads), m = 10, for 50 time units:
    lambda = m sum(mu) / (m + n - 1) = 100 / 19; one gradient of 32 samples per result."""
    from afl.cluster import plan
    from afl.config import load_config

    cfg = load_config({"data": {"name": "mnist", "num_clients": 10, "test_subset": 1000}, "model": {"name": "logreg"},
                       "client": {"batch_size": 32}, "algorithm": {"name": "asyncsgd", "concurrency": 10},
                       "run": {"time": 50, "eval_every": 100}})
    results = plan.results_of(cfg)
    assert results == pytest.approx(50 * 100 / 19)
    work = plan.work_of(cfg, {})
    assert work.train_samples == pytest.approx(32 * results)
    assert work.eval_samples == (int(results // 100) + 1) * 1000


def test_a_bad_cell_is_one_line(tmp_path, capsys):
    base = {"data": {"num_clients": 4}, "algorithm": {"concurrency": 9}}
    assert main(["plan", str(write_yaml(tmp_path / "wf.yaml", workflow(tmp_path, base)))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("afl: error: experiments.e") and "fix:" in err[0]


def test_an_experiment_run_in_two_stages_says_its_counts_are_at_most(tmp_path, capsys):
    base = {"data": {"num_clients": 4}, "algorithm": {"name": "asyncsgd", "concurrency": 2},
            "run": {"workload": "none", "updates": 100}}
    config = workflow(tmp_path, base, grid={"algorithm.server_lr": [0.1, 0.2, 0.4], "seed": [0, 1, 100]})
    config["figures"] = {"f": {"kind": "target", "experiment": "e", "metric": "grad_norm_sq", "target": 1.0,
                               "x_key": "algorithm.concurrency", "hue": ["algorithm.name"],
                               "tune": "algorithm.server_lr", "tuning_seeds": [100]}}
    assert main(["plan", str(write_yaml(tmp_path / "wf.yaml", config))]) == 0
    out = capsys.readouterr().out
    assert "two stages: e runs its 3 cells of tuning seeds first, then of its 6 other cells only those its " \
           "figures choose" in out
    assert main(["plan", str(write_yaml(tmp_path / "one.yaml", {**config, "two_stage": False}))]) == 0
    assert "two stages" not in capsys.readouterr().out
