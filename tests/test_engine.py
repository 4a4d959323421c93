"""The event simulator: determinism, synchronous rounds, FIFO queues, queueing theory, batching."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import afl

from afl.sim import executor as executor_module
from helpers import TWO_GROUPS, train_tables



def simulate(tmp_path, raw, name="run"):
    return train_tables(tmp_path / name, raw)[1:]


def null_run(rule, **extra):
    raw = {"data": {"num_clients": 10}, "algorithm": {"name": rule, "concurrency": 4},
           "timing": {"rates": TWO_GROUPS}, "run": {"workload": "none", "updates": 300}}
    for section, values in extra.items():
        raw.setdefault(section, {}).update(values)
    return raw


@pytest.mark.parametrize("algorithm", ["sfl", "afl", "fedasync", "fedbuff", "asyncsgd"])
def test_same_seed_same_events_other_seed_differs(tmp_path, algorithm):
    _, a, _, a_clients = simulate(tmp_path, null_run(algorithm), "a")
    _, b, _, b_clients = simulate(tmp_path, null_run(algorithm), "b")
    _, c, _, _ = simulate(tmp_path, {**null_run(algorithm), "seed": 1}, "c")
    # Promise 1 (docs/reproducibility.md): bitwise identical tables, so exact, not pandas' rtol 1e-5.
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    pd.testing.assert_frame_equal(a_clients, b_clients, check_exact=True)
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


# The event columns do not depend on the numbers training computes (counter-based durations).
EVENT_COLUMNS = ["version", "time", "client", "base_version", "staleness", "weight", "dispatch_time",
                 "start_time", "duration"]


def batching_config(data_root) -> dict:
    return {"data": {"name": "mnist", "root": str(data_root), "num_clients": 10, "train_subset": 3000,
                     "test_subset": 500},
            "model": {"name": "logreg"}, "algorithm": {"name": "fedbuff", "concurrency": 5, "buffer_size": 2},
            "client": {"steps": 5, "batch_size": 16, "lr": 0.01}, "run": {"updates": 12, "eval_every": 4}}


class Eager(executor_module.LazyExecutor):
    """Each task trained alone, the moment it is submitted (the lazy executor batches them)."""

    def submit(self, task):
        super().submit(task)
        self.done[task.id] = self.workload([self.pending.pop(task.id)])[0]


def lazy_and_eager(tmp_path, monkeypatch, raw):
    _, lazy_u, lazy_e, _ = simulate(tmp_path, raw, "lazy")
    monkeypatch.setattr("afl.run.build.LazyExecutor", Eager)
    _, eager_u, eager_e, _ = simulate(tmp_path, raw, "eager")
    return (lazy_u, lazy_e.drop(columns="wall_time")), (eager_u, eager_e.drop(columns="wall_time"))


@pytest.mark.blas
def test_batching_changes_results_only_by_float_rounding(tmp_path, monkeypatch, shared_data_root):
    """Promise 2 (docs/reproducibility.md): batching pending tasks changes float rounding only.

    The BLAS picks kernels (and so summation orders) by shape and CPU, so a batch of 5 tasks and 5
    single tasks round differently: bitwise equality held on one CPU only. The tolerance: float32
    rounds at u = 6e-8; a 784-long dot product summed in another order differs by about
    sqrt(784) u = 1.7e-6 relative; each parameter passes through at most 12 updates x 5 local steps
    = 60 such steps, and local SGD at lr 0.01 does not expand differences on this convex problem,
    so the runs agree to 60 x 1.7e-6 = 1e-4 relative (measured: <= 1e-6 under three MKL paths). A
    batching bug (a task trained on another's minibatches, a wrong learning rate) moves the losses
    by percents. (At lr 0.05 the first updates raise the loss from 6 to 8: a phase that amplifies
    rounding to 1e-2 over 40 updates; that is still rounding, but no short tolerance argues it.)
    """
    (lazy_u, lazy_e), (eager_u, eager_e) = lazy_and_eager(tmp_path, monkeypatch, batching_config(shared_data_root))
    pd.testing.assert_frame_equal(lazy_u[EVENT_COLUMNS], eager_u[EVENT_COLUMNS], check_exact=True)
    pd.testing.assert_frame_equal(lazy_u, eager_u, check_exact=False, rtol=1e-4, atol=0)
    pd.testing.assert_frame_equal(lazy_e, eager_e, check_exact=False, rtol=1e-4, atol=0)


def test_the_executor_computes_every_pending_task_or_only_those_asked_for():
    from types import SimpleNamespace

    for together, calls in ((True, [[0, 1, 2]]), (False, [[0, 1]])):
        computed = []
        ex = executor_module.LazyExecutor(lambda ts: computed.append([t.id for t in ts]) or [f"r{t.id}" for t in ts],
                                          dict, together)
        tasks = [SimpleNamespace(id=i) for i in range(4)]
        for t in tasks:
            ex.submit(t)
        ex.discard(tasks[3])  # stopped in flight: never computed
        assert ex.results(tasks[:2]) == ["r0", "r1"]
        assert computed == calls
        ex.discard(tasks[2])
        assert not ex.pending and not ex.done  # nothing left over, computed or not


def test_a_rule_that_stops_tasks_in_flight_computes_only_the_results_it_applies(tmp_path, monkeypatch):
    """Ringmaster with stopped computations (R = 2, 16 workers with compute times sqrt(i)): most
    tasks are stopped in flight, or arrive too stale and are discarded; the workload computes the
    gradients of the applied arrivals alone, one per server update."""
    computed = []

    class Counting(executor_module.LazyExecutor):
        def __init__(self, workload, result_type, together=True):
            super().__init__(lambda ts: computed.append(len(ts)) or workload(ts), result_type, together)

    monkeypatch.setattr("afl.run.build.LazyExecutor", Counting)
    raw = {"data": {"name": "synthetic", "num_clients": 16, "partition": "iid", "synthetic_clients": 4},
           "model": {"name": "logreg"}, "client": {"epochs": None, "batch_size": 4},
           "algorithm": {"name": "ringmaster", "concurrency": 16, "max_delay": 2, "stop_stale": True,
                         "server_lr": 0.01},
           "timing": {"distribution": "constant", "rates": {"kind": "power", "exponent": 0.5}},
           "run": {"updates": 60, "eval_every": 20}}
    _, u, _, clients = simulate(tmp_path, raw)
    assert sum(computed) == len(u) == 60
    assert clients.cancelled.sum() > 2 * len(u)  # the tasks the former batching computed in vain


PORTABLE_ENV_KEYS = ("AFL_PORTABLE_FLOAT", *afl.PORTABLE_ENV)


def test_portable_float_switch_makes_batching_bitwise(tmp_path, monkeypatch, shared_data_root, request):
    """Promise 3: under AFL_PORTABLE_FLOAT=1 batching changes no bit, even where the run amplifies rounding.

    The switch acts as torch loads, so without it this test runs itself in a fresh pytest with it.
    """
    if not afl.PORTABLE:
        env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV_KEYS} | {"AFL_PORTABLE_FLOAT": "1"}
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               f"{__file__}::{request.node.name}"], env=env, capture_output=True, text=True,
                              timeout=600, cwd=Path(__file__).parents[1])
        assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
        return
    import torch

    assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
    assert all(os.environ.get(k) == v for k, v in afl.PORTABLE_ENV.items())
    raw = batching_config(shared_data_root)
    raw["client"]["lr"] = 0.05  # the amplifying setting: batching moves losses by 1e-3 without the switch
    raw["run"]["updates"] = 30
    (lazy_u, lazy_e), (eager_u, eager_e) = lazy_and_eager(tmp_path, monkeypatch, raw)
    pd.testing.assert_frame_equal(lazy_u, eager_u, check_exact=True)
    pd.testing.assert_frame_equal(lazy_e, eager_e, check_exact=True)


def test_portable_float_switch_refuses_to_start_after_torch():
    env = {**os.environ, "AFL_PORTABLE_FLOAT": "1"}
    for key in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):
        env.pop(key, None)
    done = subprocess.run([sys.executable, "-c", "import torch, afl"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "AFL_PORTABLE_FLOAT=1 must take effect before torch loads" in done.stderr
