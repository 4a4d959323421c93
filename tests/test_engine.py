"""The event simulator: determinism, synchronous rounds, FIFO queues, queueing theory, batching."""

import numpy as np
import pandas as pd
import pytest

from afl.config import load_config
from afl.engine import executor as executor_module
from afl.train import train

TWO_GROUPS = {"kind": "groups", "groups": [{"fraction": 0.5, "rate": 1.0}, {"fraction": 0.5, "rate": 0.2}]}


def simulate(tmp_path, raw, name="run"):
    info = train(load_config(raw), tmp_path / name, progress=False)
    read = lambda f: pd.read_parquet(tmp_path / name / f)  # noqa: E731
    return info, read("updates.parquet"), read("evals.parquet"), read("clients.parquet")


def null_run(rule, **extra):
    raw = {"data": {"num_clients": 10}, "algorithm": {"name": rule, "concurrency": 4},
           "timing": {"rates": TWO_GROUPS}, "run": {"workload": "none", "updates": 300}}
    for section, values in extra.items():
        raw.setdefault(section, {}).update(values)
    return raw


@pytest.mark.parametrize("algorithm", ["sfl", "afl", "fedasync", "fedbuff", "asyncsgd"])
def test_same_seed_same_events_other_seed_differs(tmp_path, algorithm):
    _, a, _, _ = simulate(tmp_path, null_run(algorithm), "a")
    _, b, _, _ = simulate(tmp_path, null_run(algorithm), "b")
    _, c, _, _ = simulate(tmp_path, {**null_run(algorithm), "seed": 1}, "c")
    pd.testing.assert_frame_equal(a, b)
    assert not a[["client", "time"]].equals(c[["client", "time"]])


def test_staleness_is_versions_between_dispatch_and_application(tmp_path):
    _, u, _, _ = simulate(tmp_path, null_run("fedasync"))
    assert (u.staleness == u.version - 1 - u.base_version).all()
    assert (u.staleness >= 0).all() and u.staleness.max() > 0
    assert (u.time >= u.dispatch_time + u.duration - 1e-9).all()


def test_sfl_round_lasts_as_long_as_its_slowest_client(tmp_path):
    _, u, _, _ = simulate(tmp_path, null_run("sfl", run={"updates": 50}))
    rounds = u.groupby("version")
    assert (rounds.size() == 4).all()
    assert (u.staleness == 0).all()
    start = rounds.dispatch_time.first()
    end = rounds.time.first()
    np.testing.assert_allclose(end - start, rounds.duration.max(), rtol=1e-12)
    np.testing.assert_allclose(start.iloc[1:].to_numpy(), end.iloc[:-1].to_numpy())
    assert (rounds.client.nunique() == 4).all()  # without replacement: m distinct clients


def test_buffered_rules_apply_m_or_k_results_per_update(tmp_path):
    _, u, _, _ = simulate(tmp_path, null_run("afl"))
    assert (u.groupby("version").size() == 4).all()
    _, u, _, _ = simulate(tmp_path, null_run("fedbuff", algorithm={"buffer_size": 3}), "fb")
    assert (u.groupby("version").size() == 3).all()
    np.testing.assert_allclose(u.weight, 1.0 / np.sqrt(1 + u.staleness) / 3)


def test_with_replacement_queues_tasks_fifo_at_busy_clients(tmp_path):
    raw = null_run("fedasync", data={"num_clients": 2}, algorithm={"concurrency": 6,
                                                                    "selection": "with_replacement"})
    _, u, _, _ = simulate(tmp_path, raw)
    for _, rows in u.sort_values("dispatch_time").groupby("client"):
        finish = rows.start_time + rows.duration
        # a task starts when it arrives or when the previous one at that client is done
        expected = np.maximum(rows.dispatch_time.to_numpy()[1:], finish.to_numpy()[:-1])
        np.testing.assert_allclose(rows.start_time.to_numpy()[1:], expected)
        assert (rows.start_time.to_numpy()[1:] > rows.dispatch_time.to_numpy()[1:]).any()


def test_time_budget_stops_the_run(tmp_path):
    info, u, _, _ = simulate(tmp_path, null_run("fedasync", run={"updates": None, "time": 50.0}))
    assert u.time.max() <= 50.0 and info["virtual_time"] > 50.0
    assert info["status"] == "completed" and info["reason"] == "time budget spent"


def _batch_means_se(x, batches=50):
    means = np.array([b.mean() for b in np.array_split(np.asarray(x, float), batches)])
    return means.std(ddof=1) / np.sqrt(batches)


def test_asyncsgd_matches_the_closed_jackson_network(tmp_path):
    """SPEC section 5: 5 clients at mu = 1, 5 at 0.2, uniform p, m = 10."""
    updates = 60_000
    raw = {"data": {"num_clients": 10}, "algorithm": {"name": "asyncsgd", "concurrency": 10},
           "timing": {"distribution": "exponential", "rates": TWO_GROUPS},
           "run": {"workload": "none", "updates": updates}}
    info, u, _, clients = simulate(tmp_path, raw)
    u = u.iloc[updates // 10:]  # drop the transient
    se = _batch_means_se(u.staleness)
    assert abs(u.staleness.mean() - 9) < 4 * se  # sum_i p_i E[tau_i] = m - 1
    throughput = len(u) / (u.time.iloc[-1] - u.time.iloc[0])
    assert throughput == pytest.approx(1.390, rel=0.03)
    for clients_, expected in ((range(5), 1.538), (range(5, 10), 16.46)):
        rows = u[u.client.isin(clients_)]
        assert abs(rows.staleness.mean() - expected) < 4 * _batch_means_se(rows.staleness) + 1e-3 * expected
    assert clients.tasks.sum() == updates


def test_results_do_not_depend_on_batching(tmp_path, monkeypatch, shared_data_root):
    raw = {"data": {"name": "mnist", "root": str(shared_data_root), "num_clients": 10,
                    "train_subset": 3000, "test_subset": 500},
           "model": {"name": "logreg"}, "algorithm": {"name": "fedbuff", "concurrency": 5, "buffer_size": 2},
           "client": {"steps": 5, "batch_size": 16}, "run": {"updates": 12, "eval_every": 4}}
    _, lazy_u, lazy_e, _ = simulate(tmp_path, raw, "lazy")

    class Eager(executor_module.LazyExecutor):
        def submit(self, task):
            super().submit(task)
            self.done[task.id] = self.workload([self.pending.pop(task.id)])[0]

    monkeypatch.setattr("afl.train.LazyExecutor", Eager)
    _, eager_u, eager_e, _ = simulate(tmp_path, raw, "eager")
    pd.testing.assert_frame_equal(lazy_u, eager_u)
    pd.testing.assert_frame_equal(lazy_e.drop(columns="wall_time"), eager_e.drop(columns="wall_time"))
