"""Client speeds that change over virtual time (``timing.modulation``; ``afl.sim.timing``)."""

import math

import numpy as np
import pytest

from afl.config import load_config
from afl.errors import ConfigError
from afl.queueing.model import jackson_reasons, network
from afl.run.train import train
from afl.sim import timing

from helpers import assert_same_tables, train_killed_after, train_tables

MARKOV = {"kind": "markov", "slow_factor": 0.25, "to_slow": 0.2, "to_fast": 0.6}


def test_work_across_trace_segments_by_hand(tmp_path):
    # Client 0: speed 1 on [0, 2), 0.5 on [2, 4), 2 from 4 on. Work 3 started at t = 1: 1 unit by
    # t = 2, 1 more by t = 4, the last unit at speed 2 takes 0.5: done at 4.5, after 3.5.
    path = tmp_path / "speeds.csv"
    path.write_text("client,time,rate\n0,4,2\n0,0,1\n1,0,3\n0,2,0.5\n")
    speeds = timing.read_speed_trace(path, 2)
    assert speeds.compute_time(0, 1.0, 3.0) == 3.5
    assert speeds.compute_time(0, 5.0, 3.0) == 1.5  # past the trace: its last speed
    assert speeds.compute_time(1, 0.0, 3.0) == 1.0
    assert [speeds.speed_at(0, t) for t in (0.0, 1.99, 2.0, 3.0, 4.0, 100.0)] == [1, 1, 0.5, 0.5, 2, 2]
    # Time-averaged over the trace's span [0, 4]: (1 * 2 + 0.5 * 2) / 4 = 0.75; client 1: 3.
    np.testing.assert_allclose(speeds.mean_rates(), [0.75, 3.0], rtol=1e-15)


def test_markov_path_has_the_model_s_mean_speed_and_switching_frequency():
    """Over a long horizon the share of time slow, the mean speed and the switches per unit time
    match P(slow) = to_slow / (to_slow + to_fast) and 2 / (1/to_slow + 1/to_fast)."""
    speeds = timing.MarkovSpeeds(np.array([2.0, 0.5]), seed=3, **{k: MARKOV[k] for k in ("slow_factor", "to_slow", "to_fast")})
    horizon = 50_000.0
    p_slow = 0.2 / 0.8
    cycle = 1 / 0.2 + 1 / 0.6
    for client, mu in enumerate((2.0, 0.5)):
        speeds._extend(client, horizon)
        times = np.array(speeds.times[client])
        rates = np.array(speeds.speeds[client])
        inside = times < horizon
        edges = np.append(times[inside], horizon)
        length = np.diff(edges)
        slow_share = length[np.isclose(rates[inside], mu * 0.25)].sum() / horizon
        switches = inside.sum() - 1
        # Standard errors from the number of cycles (about 7,500): a few percent at most.
        assert abs(slow_share - p_slow) < 0.02, slow_share
        assert abs(switches / horizon - 2 / cycle) / (2 / cycle) < 0.04, switches
        mean = (rates[inside] * length).sum() / horizon
        assert abs(mean / speeds.mean_rates()[client] - 1) < 0.02
    assert speeds.mean_rates() == pytest.approx([2.0 * (1 - p_slow * 0.75), 0.5 * (1 - p_slow * 0.75)], rel=1e-15)


def test_markov_path_is_a_function_of_seed_and_client_only():
    a = timing.MarkovSpeeds(np.ones(3), 0.5, 1.0, 1.0, seed=1)
    b = timing.MarkovSpeeds(np.ones(3), 0.5, 1.0, 1.0, seed=1)
    a._extend(2, 100.0)  # drawn in another order, to another horizon
    b._extend(0, 10.0)
    b._extend(2, 50.0)
    assert b.times[2] == a.times[2][:len(b.times[2])]
    c = timing.MarkovSpeeds(np.ones(3), 0.5, 1.0, 1.0, seed=2)
    c._extend(2, 50.0)
    assert c.times[2][:5] != a.times[2][:5]


def raw(modulation, **run):
    return {"data": {"num_clients": 4}, "algorithm": {"name": "fedasync", "concurrency": 4,
                                                      "selection": "with_replacement"},
            "timing": {"distribution": "constant", "modulation": modulation},
            "run": {"workload": "none", "updates": 4000, "eval_every": 10**9, **run}}


def test_simulated_service_follows_the_speed_path(tmp_path):
    """Every task takes the time its client's speed path needs for its work (S = 1) from the time
    it started, whether it waited in a queue or not."""
    cfg, info, updates, _, clients = train_tables(tmp_path / "run", raw(MARKOV))
    speeds = timing.speeds(cfg.timing, clients["rate"].to_numpy(), cfg.seed)
    expected = [speeds.compute_time(int(c), s, 1.0) for c, s in zip(updates["client"], updates["start_time"])]
    np.testing.assert_array_equal(updates["duration"].to_numpy(), expected)
    assert (updates["start_time"] > updates["dispatch_time"]).sum() > 100  # many tasks waited in a queue


def test_a_busy_client_completes_work_at_its_mean_speed(tmp_path):
    """With one task per client always in flight (m = n, without replacement), each client works
    all the time: its tasks per unit time (work 1 each) tend to its long-run mean speed."""
    config = raw(MARKOV, updates=40_000)
    config["algorithm"]["selection"] = "without_replacement"
    cfg, info, updates, _, clients = train_tables(tmp_path / "run", config)
    mean = timing.speeds(cfg.timing, clients["rate"].to_numpy(), cfg.seed).mean_rates()
    np.testing.assert_allclose(clients["busy_time"], info["virtual_time"], rtol=1e-3)
    throughput = updates.groupby("client").size().to_numpy() / info["virtual_time"]
    # About 10,000 tasks and 600 fast/slow cycles per client: the pooled rate within 3%.
    assert abs(throughput.sum() / mean.sum() - 1) < 0.03, (throughput, mean)


def test_trace_speeds_drive_the_run(tmp_path):
    path = tmp_path / "speeds.csv"
    path.write_text("client,time,rate\n" + "".join(f"{c},0,1\n{c},50,{0.25 if c < 2 else 1}\n" for c in range(4)))
    cfg, info, updates, _, clients = train_tables(tmp_path / "run", raw({"kind": "trace", "path": str(path)}, updates=600))
    before = updates[updates["start_time"] + updates["duration"] <= 50]
    after = updates[updates["start_time"] >= 50]
    assert len(before) > 0 and (before["duration"] == 1.0).all()  # work 1 at speed 1
    slow = after[after["client"] < 2]["duration"]
    assert (slow == 4.0).all() and len(slow) > 0  # work 1 at speed 0.25
    assert (after[after["client"] >= 2]["duration"] == 1.0).all()


def test_resume_gives_the_uninterrupted_tables(tmp_path, monkeypatch):
    config = raw(MARKOV, updates=600, checkpoint_every=100)
    train_tables(tmp_path / "whole", config)
    train_killed_after(load_config(config), tmp_path / "cut", 3, monkeypatch)
    train(load_config(config), tmp_path / "cut", progress=False)
    assert_same_tables(tmp_path / "whole", tmp_path / "cut")


def test_queueing_model_uses_the_mean_speeds_and_says_it_approximates():
    cfg = load_config({"data": {"num_clients": 4}, "algorithm": {"name": "asyncsgd", "concurrency": 3,
                                                                 "selection": "routing"},
                       "client": {"epochs": None}, "timing": {"modulation": MARKOV},
                       "run": {"workload": "none", "updates": 10}})
    mu, _, _ = network(cfg)
    np.testing.assert_allclose(mu, 1 - 0.25 * 0.75, rtol=1e-15)
    assert any("timing.modulation is markov" in r for r in jackson_reasons(cfg))


@pytest.mark.parametrize("modulation, key, words", [
    ({"kind": "markov", "slow_factor": 0.0}, "timing.modulation.slow_factor", "must be in (0, 1]"),
    ({"kind": "markov", "slow_factor": 1.5}, "timing.modulation.slow_factor", "must be in (0, 1]"),
    ({"kind": "markov", "to_slow": 0.0}, "timing.modulation.to_slow", "must be > 0"),
    ({"kind": "markov", "to_fast": math.inf}, "timing.modulation.to_fast", "finite"),
    ({"kind": "trace"}, "timing.modulation.path", "needs a CSV file"),
    ({"kind": "markov", "path": "x.csv"}, "timing.modulation.path", "only kind: trace reads a file"),
    ({"kind": "wobbly"}, "timing.modulation.kind", "wobbly"),
])
def test_bad_modulation_is_a_one_line_config_error(modulation, key, words):
    with pytest.raises(ConfigError) as err:
        load_config({"timing": {"modulation": modulation}})
    assert str(err.value).startswith(f"{key}:") and words in str(err.value) and "fix:" in str(err.value)


def test_trace_with_rates_is_refused():
    with pytest.raises(ConfigError, match="timing.modulation.path: the trace gives each client's speed"):
        load_config({"timing": {"rates": {"kind": "lognormal"}, "modulation": {"kind": "trace", "path": "x.csv"}}})


@pytest.mark.parametrize("text, problem", [
    ("client,rate\n0,1\n", "needs a header with columns client,time,rate"),
    ("client,time,rate\n0,0,1\n1,0,1\n2,1,1\n", "no rate of client 2 at time 0"),
    ("client,time,rate\n0,0,1\n0,0,2\n1,0,1\n2,0,1\n", "line 3: client 0 has two rates at time 0"),
    ("client,time,rate\n0,0,1\n1,0,-1\n2,0,1\n", "line 3: client must be in 0..2, time >= 0 and rate > 0"),
    ("client,time,rate\n0,0,1\n1,soon,1\n2,0,1\n", "line 3 is not 'client,time,rate' numbers"),
])
def test_a_bad_speed_trace_is_a_config_error(tmp_path, text, problem):
    path = tmp_path / "speeds.csv"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        timing.read_speed_trace(path, 3)
    assert str(err.value).startswith("timing.modulation.path:") and problem in str(err.value) and "fix:" in str(err.value)


def test_a_tasks_compute_phase_starts_after_its_download(tmp_path):
    """Killed the mutation survivor "varying speeds start computing at dispatch": the speed changes
    during the download, so starting the work at dispatch gives another duration."""
    from types import SimpleNamespace

    path = tmp_path / "speeds.csv"
    path.write_text("client,time,rate\n0,0,4.0\n0,1.0,1.0\n")
    speeds = timing.read_speed_trace(path, 1)
    cfg = SimpleNamespace(per="task", download=1.0, upload=0.5)
    # Dispatched at 0.5: the download ends at 1.5, when the speed is already 1, so work 2 takes 2
    # (started at dispatch, it would run at speed 4 and be done by 1.0: a duration of 2, not 3.5).
    assert timing.varying_task_duration(cfg, speeds, 0, 0.5, 1, 2.0) == 1.0 + 2.0 + 0.5
    # Per step: 3 steps of work 0.5 each, the same 1.5 of work at speed 1 after the download.
    assert timing.varying_task_duration(SimpleNamespace(per="step", download=1.0, upload=0.5), speeds, 0, 0.5, 3,
                                        0.5) == 1.0 + 1.5 + 0.5
