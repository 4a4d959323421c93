"""Clients that come and go (``timing.availability``; ``afl.sim.availability``, the simulator's offline
semantics, over-selection and round deadlines)."""

import math

import numpy as np
import pytest

from afl.config import load_config
from afl.errors import ConfigError
from afl.run.train import train
from afl.sim import availability as av
from afl.sim.selection import Selector

from helpers import assert_same_tables, train_killed_after, train_tables


def path_of(cfg, n):
    return av.availability(cfg.timing.availability, n, cfg.seed)


def online_share_and_switches(path, client, horizon):
    """Time online in [0, horizon] and the switches in it, read off the path."""
    path.next_switch(client, horizon)
    times, online = path.times[client], path.online[client]
    edges = [t for t in times if t < horizon] + [horizon]
    on = sum(b - a for a, b, o in zip(edges, edges[1:], online) if o)
    return on, len(edges) - 2


# ----------------------------------------------------------------------------- the paths


def test_markov_availability_has_the_model_s_online_share_and_switching_frequency():
    """Over a long horizon each client is online mean_on / (mean_on + mean_off) of the time and
    switches 2 / (mean_on + mean_off) times per unit time (one on and one off period a cycle)."""
    path = av.MarkovAvailability(np.array([4.0, 1.0]), np.array([1.0, 3.0]), seed=5)
    horizon = 100_000.0
    for client, (on, off) in enumerate(((4.0, 1.0), (1.0, 3.0))):
        online, switches = online_share_and_switches(path, client, horizon)
        # About 20,000-25,000 cycles: the share within 0.01, the rate within 3%.
        assert abs(online / horizon - on / (on + off)) < 0.01, online / horizon
        assert abs(switches / horizon / (2 / (on + off)) - 1) < 0.03, switches
    assert path.shares().tolist() == [0.8, 0.25]


def test_markov_groups_give_each_group_its_means():
    cfg = load_config({"data": {"num_clients": 10}, "timing": {"availability": {
        "kind": "markov", "groups": [{"fraction": 0.3, "mean_on": 1.0, "mean_off": 9.0},
                                     {"fraction": 0.7, "mean_on": 5.0, "mean_off": 5.0}]}}})
    path = path_of(cfg, 10)
    assert path.shares().tolist() == [0.1] * 3 + [0.5] * 7


def test_a_path_is_a_function_of_seed_and_client_only():
    a = av.MarkovAvailability(np.ones(3), np.ones(3), seed=1)
    b = av.MarkovAvailability(np.ones(3), np.ones(3), seed=1)
    a.next_switch(2, 100.0)  # drawn in another order, to another horizon
    b.next_switch(0, 10.0)
    b.next_switch(2, 50.0)
    assert b.times[2] == a.times[2][:len(b.times[2])]
    assert av.MarkovAvailability(np.ones(3), np.ones(3), seed=2).next_switch(2, 0.0) != a.next_switch(2, 0.0)


def test_diurnal_clients_are_online_by_their_phase_at_the_configured_share():
    """Each client's long-run online share is the mean of its p over a day; across clients about
    ``share`` are online at any time, and a client is online far more near its peak (t = phase *
    period) than half a day from it."""
    n, period = 200, 100.0
    path = av.DiurnalAvailability(n, period, 24, 0.4, 1.0, seed=3)
    horizon = 200 * period
    shares = np.array([online_share_and_switches(path, c, horizon)[0] / horizon for c in range(n)])
    np.testing.assert_allclose(shares, path.shares(), atol=0.05)  # 200 days of 24 slots each
    assert abs(path.shares().mean() - 0.4) < 0.02
    peak = np.mean([path.online_at(c, (d + path.phases[c]) * period) for c in range(n) for d in range(50)])
    trough = np.mean([path.online_at(c, (d + path.phases[c] + 0.5) * period) for c in range(n) for d in range(50)])
    assert peak > 0.7 and trough < 0.05, (peak, trough)  # p = 0.8 at the peak, 0 half a day away
    at_noon = np.mean([path.online_at(c, 1000.0 + 0.5 * period) for c in range(n)])
    assert abs(at_noon - 0.4) < 0.1


def test_diurnal_switches_fall_on_slot_boundaries_and_a_fixed_client_never_switches():
    path = av.DiurnalAvailability(2, 24.0, 24, 0.5, 1.0, seed=0)
    path.next_switch(0, 500.0)
    assert all(t == int(t) for t in path.times[0]) and len(path.times[0]) > 10
    always = av.DiurnalAvailability(2, 24.0, 24, 1.0, 0.0, seed=0)
    assert always.online_at(1, 77.0) and always.next_switch(1, 0.0) == math.inf


def test_trace_windows_by_hand(tmp_path):
    path = tmp_path / "online.csv"
    path.write_text("client,start,end\n0,5,8\n1,0,2\n0,1,3\n0,2.5,4\n1,2,3\n")
    trace = av.read_trace(path, 3)
    # Client 0: [1, 4) (two overlapping windows merged) and [5, 8); client 1: [0, 3) (touching);
    # client 2: never online.
    assert [trace.online_at(0, t) for t in (0.0, 1.0, 3.9, 4.0, 5.0, 8.0)] == [False, True, True, False, True, False]
    assert [trace.next_switch(0, t) for t in (0.0, 1.0, 4.0, 8.0)] == [1.0, 4.0, 5.0, math.inf]
    assert trace.online_at(1, 0.0) and trace.next_switch(1, 0.0) == 3.0
    assert not trace.online_at(2, 3.0) and trace.next_switch(2, 0.0) == math.inf
    np.testing.assert_allclose(trace.shares(), [6 / 8, 3 / 8, 0.0], rtol=1e-15)


@pytest.mark.parametrize("text, problem", [
    ("client,begin,end\n0,0,1\n", "needs a header with columns client,start,end"),
    ("client,start,end\n0,0,1\n3,0,1\n", "line 3: client must be in 0..2 and 0 <= start < end"),
    ("client,start,end\n0,2,1\n", "line 2: client must be in 0..2 and 0 <= start < end"),
    ("client,start,end\n0,0,soon\n", "line 2 is not 'client,start,end' numbers"),
])
def test_a_bad_availability_trace_is_a_config_error(tmp_path, text, problem):
    path = tmp_path / "online.csv"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        av.read_trace(path, 3)
    assert str(err.value).startswith("timing.availability.path:") and problem in str(err.value) and "fix:" in str(err.value)


def test_routing_is_renormalised_over_the_online_clients():
    """Offline clients are never picked; the others in proportion to p among the online."""
    p = np.array([0.1, 0.2, 0.3, 0.4])
    selector = Selector("routing", 4, p, np.random.default_rng(0))
    selector.set_online(2, False)
    picks = np.bincount([selector.pick() for _ in range(70_000)], minlength=4) / 70_000
    np.testing.assert_allclose(picks, [1 / 7, 2 / 7, 0, 4 / 7], atol=0.006)
    for mode in ("with_replacement", "without_replacement"):
        selector = Selector(mode, 4, np.full(4, 0.25), np.random.default_rng(0))
        selector.set_online(1, False)
        selector.set_online(3, False)
        picks = set()
        for _ in range(200):
            client = selector.pick()
            picks.add(client)
            selector.release(client)
        assert picks == {0, 2}
        selector.set_online(0, False)
        selector.set_online(2, False)
        assert not selector.available()


# ----------------------------------------------------------------------------- the simulation


def raw(availability, name="fedasync", n=12, m=4, updates=2000, **algorithm):
    return {"data": {"num_clients": n}, "algorithm": {"name": name, "concurrency": m, **algorithm},
            "timing": {"distribution": "exponential", "availability": availability},
            "run": {"workload": "none", "updates": updates, "eval_every": 10**9}}


MARKOV = {"kind": "markov", "mean_on": 6.0, "mean_off": 4.0}


def offline_time(path, client, start, end):
    """Time client ``client`` is offline in [start, end]."""
    t, off = start, 0.0
    while t < end:
        switch = min(path.next_switch(client, t), end)
        if not path.online_at(client, t):
            off += switch - t
        t = switch
    return off


def test_under_drop_no_result_comes_from_a_client_that_was_offline_during_its_task(tmp_path):
    cfg, info, updates, _, clients = train_tables(tmp_path / "run", raw(MARKOV))
    path = path_of(cfg, 12)
    for client, start, duration in zip(updates["client"], updates["start_time"], updates["duration"]):
        assert path.online_at(client, start) and path.next_switch(client, start) >= start + duration
    assert info["dropped_tasks"] == clients["dropped_tasks"].sum() > 100  # many tasks were lost
    # The lost tasks' time so far is wasted, and only theirs (fedasync refuses no result).
    assert 0 < info["wasted_time"] < clients["busy_time"].sum()
    # Each client's online time is its path's in [0, end of run].
    end = info["virtual_time"]
    expected = [online_share_and_switches(path, c, end)[0] for c in range(12)]
    np.testing.assert_allclose(clients["online_time"], expected, rtol=1e-12)
    assert clients["online_time"].sum() == pytest.approx(info["online_time"], rel=1e-12)


@pytest.mark.parametrize("selection", ["without_replacement", "with_replacement", "routing"])
def test_no_task_is_dispatched_to_an_offline_client(tmp_path, selection):
    """Killed a with_replacement selector that added the clients online at time 0 to its pool a
    second time (402 of 2,000 tasks went to offline clients)."""
    config = raw(MARKOV)
    config["algorithm"]["selection"] = selection
    cfg, info, updates, _, clients = train_tables(tmp_path / "run", config)
    path = path_of(cfg, 12)
    assert all(path.online_at(c, t) for c, t in zip(updates["client"], updates["dispatch_time"]))
    assert info["dropped_tasks"] > 100 and updates["client"].nunique() == 12


def test_a_paused_task_takes_its_service_plus_the_time_its_client_was_offline(tmp_path):
    """With one task per client (m < n, without replacement) a task starts at its dispatch; under
    pause it comes back after its service time plus its client's offline time in between."""
    config = raw(dict(MARKOV, on_offline="pause"))
    cfg, info, updates, _, clients = train_tables(tmp_path / "run", config)
    path = path_of(cfg, 12)
    paused = 0
    for client, sent, duration, back in zip(updates["client"], updates["dispatch_time"], updates["duration"],
                                            updates["time"]):
        off = offline_time(path, client, sent, back)
        assert back == pytest.approx(sent + duration + off, rel=1e-12, abs=1e-9)
        paused += off > 0
    assert paused > 200 and info["dropped_tasks"] == 0 and info["wasted_time"] == 0


def test_a_lost_task_is_replaced_only_after_the_timeout(tmp_path):
    """With task_timeout T the replacement of a task lost at time t is sent at t + T: fewer results
    in the same time, and each dispatch that follows a loss happens T after some switch off."""
    quick = train_tables(tmp_path / "quick", raw(MARKOV, updates=1500))
    slow = train_tables(tmp_path / "slow", raw(MARKOV, updates=1500, task_timeout=3.0))
    assert slow[1]["virtual_time"] > quick[1]["virtual_time"]
    path = path_of(slow[0], 12)
    # Every dispatch time is 0, an arrival (the time of an update: fedasync applies each result at
    # once), a client's coming online (an owed dispatch) or a switch off plus 3.
    updates = slow[2]
    arrivals = set(updates["time"])
    offs, ons = set(), set()
    for c in range(12):
        path.next_switch(c, slow[1]["virtual_time"])
        for t, online in zip(path.times[c], path.online[c]):
            (ons if online else offs).add(t)
    late = [t for t in updates["dispatch_time"] if t not in arrivals and t != 0 and t not in ons]
    assert late and all(any(abs(t - (o + 3.0)) < 1e-9 for o in offs) for t in late)


def test_over_selection_closes_a_round_at_the_target_count_or_the_deadline(tmp_path):
    config = raw({"kind": "always"}, name="sfl", n=20, m=5, updates=300, over_select=1.6, round_deadline=1.2)
    cfg, info, updates, _, clients = train_tables(tmp_path / "run", config)
    full = by_deadline = 0
    for version, group in updates.groupby("version"):
        start = group["dispatch_time"].iloc[0]
        assert (group["dispatch_time"] == start).all()  # one round, one model
        closed = group["time"].iloc[0]
        assert (group["start_time"] + group["duration"] <= closed).all()
        if len(group) == 5:  # the target: closed by its fifth result, before the deadline
            full += 1
            assert closed == (group["start_time"] + group["duration"]).max() and closed - start <= 1.2
        else:  # fewer: closed at the deadline
            by_deadline += 1
            assert len(group) < 5 and closed == start + 1.2
    assert full > 50 and by_deadline > 20
    # Each round sent ceil(5 * 1.6) = 8 tasks; the 3 or more left out were stopped and wasted.
    assert info["cancelled"] >= 3 * info["updates"] and info["wasted_time"] > 0


def test_a_round_with_no_result_by_its_deadline_makes_no_update_and_the_next_round_starts(tmp_path):
    config = raw({"kind": "always"}, name="sfl", n=10, m=5, updates=100, round_deadline=0.05)
    cfg, info, updates, _, clients = train_tables(tmp_path / "run", config)
    starts = sorted(set(updates["dispatch_time"]))
    gaps = np.diff(starts) / 0.05
    assert np.allclose(gaps, np.round(gaps)) and (np.round(gaps) > 1).any()  # empty rounds in between


def test_synchronous_rounds_wait_for_lost_tasks_and_close_with_fewer_results(tmp_path):
    config = raw(MARKOV, name="sfl", n=12, m=4, updates=400)
    cfg, info, updates, _, clients = train_tables(tmp_path / "run", config)
    sizes = updates.groupby("version").size()
    assert sizes.max() == 4 and (sizes < 4).sum() > 20 and info["dropped_tasks"] > 20


@pytest.mark.parametrize("availability, algorithm", [
    (dict(MARKOV, on_offline="pause"), {"name": "fedbuff"}),
    (MARKOV, {"name": "asyncsgd", "task_timeout": 2.0}),
    ({"kind": "diurnal", "period": 30.0}, {"name": "sfl", "over_select": 1.5, "round_deadline": 2.0}),
])
def test_resume_gives_the_uninterrupted_tables(tmp_path, monkeypatch, availability, algorithm):
    config = raw(availability, updates=600, **algorithm)
    config["run"]["checkpoint_every"] = 50
    train_tables(tmp_path / "whole", config)
    train_killed_after(load_config(config), tmp_path / "cut", 4, monkeypatch)
    train(load_config(config), tmp_path / "cut", progress=False)
    assert_same_tables(tmp_path / "whole", tmp_path / "cut")


def test_the_run_ends_when_every_client_has_left_for_good(tmp_path):
    path = tmp_path / "online.csv"
    path.write_text("client,start,end\n0,0,30\n1,10,40\n2,0,5\n2,20,25\n")
    cfg, info, updates, _, clients = train_tables(
        tmp_path / "run", raw({"kind": "trace", "path": str(path)}, n=3, m=2, updates=10**6))
    assert info["status"] == "completed" and "offline for good" in info["reason"]
    assert info["virtual_time"] == 40.0
    np.testing.assert_allclose(clients["online_time"], [30.0, 30.0, 10.0], rtol=1e-15)


def test_always_online_clients_are_online_the_whole_run(tmp_path):
    cfg, info, updates, _, clients = train_tables(tmp_path / "run", raw({"kind": "always"}, updates=200))
    assert (clients["online_time"] == info["virtual_time"]).all() and info["dropped_tasks"] == 0


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("changes, key, words", [
    ({"timing": {"availability": {"kind": "markov", "mean_on": 0}}}, "timing.availability.mean_on", "must be > 0"),
    ({"timing": {"availability": {"kind": "markov", "groups": [{"fraction": 0.5, "mean_on": 1, "mean_off": 1}]}}},
     "timing.availability.groups", "sum to 0.5"),
    ({"timing": {"availability": {"kind": "diurnal", "groups": [{"fraction": 1}]}}},
     "timing.availability.groups", "only kind: markov"),
    ({"timing": {"availability": {"kind": "diurnal", "share": 1.5}}}, "timing.availability.share", "(0, 1]"),
    ({"timing": {"availability": {"kind": "diurnal", "slots": 0}}}, "timing.availability.slots", ">= 1"),
    ({"timing": {"availability": {"kind": "diurnal", "period": -1}}}, "timing.availability.period", "> 0"),
    ({"timing": {"availability": {"kind": "trace"}}}, "timing.availability.path", "needs a CSV"),
    ({"timing": {"availability": {"kind": "markov", "path": "x.csv"}}}, "timing.availability.path", "only kind: trace"),
    ({"timing": {"availability": {"kind": "sometimes"}}}, "timing.availability.kind", "sometimes"),
    ({"timing": {"availability": {"on_offline": "pause"}}}, "timing.availability.on_offline", "kind: always"),
    ({"timing": {"availability": {"kind": "markov", "on_offline": "wait"}}}, "timing.availability.on_offline", "wait"),
    ({"algorithm": {"task_timeout": 2.0}}, "algorithm.task_timeout", "no task is ever lost"),
    ({"algorithm": {"task_timeout": -1.0}, "timing": {"availability": {"kind": "markov"}}},
     "algorithm.task_timeout", ">= 0"),
    ({"algorithm": {"name": "fedbuff", "over_select": 1.3}}, "algorithm.over_select", "fedbuff has none"),
    ({"algorithm": {"name": "sfl", "over_select": 0.5}}, "algorithm.over_select", ">= 1.0"),
    ({"algorithm": {"name": "sfl", "concurrency": 8, "over_select": 1.5}}, "algorithm.over_select", "only 10 clients"),
    ({"algorithm": {"name": "sfl", "round_deadline": 0}}, "algorithm.round_deadline", "must be > 0"),
    ({"algorithm": {"name": "afl", "round_deadline": 5}}, "algorithm.round_deadline", "afl has none"),
    ({"algorithm": {"name": "sfl", "round_deadline": 5, "selection": "with_replacement"}}, "algorithm.selection",
     "needs one task per client"),
    ({"algorithm": {"name": "mindflayer", "concurrency": 10, "server_lr": 0.1, "time_limit": 2.0},
      "timing": {"availability": {"kind": "markov"}}}, "timing.availability.kind", "mindflayer plans"),
])
def test_bad_availability_keys_are_one_line_config_errors(changes, key, words):
    config = {"data": {"num_clients": 10}}
    for section, values in changes.items():
        config[section] = values
    with pytest.raises(ConfigError) as err:
        load_config(config)
    message = str(err.value)
    assert message.startswith(f"{key}:") and words in message and "fix:" in message and "\n" not in message, message


# ----------------------------------------------------------------------------- theory


@pytest.mark.parametrize("on_offline", ["drop", "pause"])
def test_a_client_holding_a_task_whenever_online_completes_mu_times_its_online_share(tmp_path, on_offline):
    """m = n without replacement: every online client holds a task, so with exponential service
    client i completes tasks at mu_i a_i per unit time (``online_throughput``), lost or paused
    work notwithstanding; under drop each switch off loses exactly the one task it held."""
    from afl.queueing.model import online_shares, online_throughput

    availability = {"kind": "markov", "on_offline": on_offline,
                    "groups": [{"fraction": 0.5, "mean_on": 9.0, "mean_off": 1.0},
                               {"fraction": 0.5, "mean_on": 2.0, "mean_off": 3.0}]}
    config = raw(availability, n=4, m=4, updates=40_000)
    config["timing"]["rates"] = {"kind": "groups", "groups": [{"fraction": 0.5, "rate": 1.0},
                                                            {"fraction": 0.5, "rate": 2.0}]}
    cfg, info, updates, _, clients = train_tables(tmp_path / "run", config)
    shares = online_shares(cfg)
    assert shares.tolist() == [0.9, 0.9, 0.4, 0.4]
    predicted = online_throughput(clients["rate"].to_numpy(), shares)
    measured = updates.groupby("client").size().to_numpy() / info["virtual_time"]
    # About 10,000 tasks a client (a 1% error) and 1,000-3,000 on/off cycles (2-3%).
    np.testing.assert_allclose(measured, predicted, rtol=0.06)
    assert abs(measured.sum() / predicted.sum() - 1) < 0.03
    if on_offline == "drop":
        path = path_of(cfg, 4)
        for c in range(4):
            path.next_switch(c, info["virtual_time"])
        offs = [sum(1 for t, o in zip(path.times[c], path.online[c]) if 0 < t <= info["virtual_time"] and not o)
                for c in range(4)]
        assert clients["dropped_tasks"].tolist() == offs


# ----------------------------------------------------------------------------- FedScale's trace


def test_fedscale_trace_converts_to_windows_that_drive_a_run(tmp_path):
    """FedScale's record: online in [active[j], inactive[j]) of each finish_time cycle; converted
    by hand for two clients, 3 s per time unit, up to time 40, then read as a trace and run."""
    import pickle
    import subprocess
    import sys

    trace = {7: {"duration": 90, "active": [0, 60], "inactive": [30, 75], "finish_time": 90, "model": "x"},
             3: {"duration": 50, "active": [10], "inactive": [40], "finish_time": 50, "model": "y"},
             9: {"duration": 1, "active": [0], "inactive": [1], "finish_time": 1, "model": "z"}}
    source = tmp_path / "client_behave_trace"
    source.write_bytes(pickle.dumps(trace))
    out = tmp_path / "online.csv"
    done = subprocess.run([sys.executable, "-m", "afl.cli", "data", "fedscale-trace", str(source), "--out", str(out),
                           "--clients", "2", "--horizon", "40", "--scale", "3"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # Client 0 is FedScale's 3 (sorted ids): [10, 40) s every 50 s -> [10/3, 40/3), [20, 30), [110/3, 40).
    # Client 1 is 7: [0, 30) and [60, 75) s every 90 s -> [0, 10), [20, 25), [30, 40).
    rows = [line.split(",") for line in out.read_text().splitlines()[1:]]
    got = [(int(c), float(a), float(b)) for c, a, b in rows]
    assert got == [(0, 10 / 3, 40 / 3), (0, 20.0, 30.0), (0, 110 / 3, 40.0),
                   (1, 0.0, 10.0), (1, 20.0, 25.0), (1, 30.0, 40.0)]
    cfg, info, updates, _, clients = train_tables(
        tmp_path / "run", raw({"kind": "trace", "path": str(out)}, n=2, m=1, updates=10**6))
    assert "offline for good" in info["reason"] and info["virtual_time"] == 40.0
    np.testing.assert_allclose(clients["online_time"], [10 + 10 + 10 / 3, 10 + 5 + 10], rtol=1e-12)


def test_a_fedscale_trace_holding_objects_is_refused_without_loading_them(tmp_path):
    import pickle

    from afl.data.fedscale import read_behaviour_trace
    from afl.errors import AflError

    source = tmp_path / "evil"
    source.write_bytes(pickle.dumps({1: {"active": np.array([0])}}))  # a numpy object: code to construct
    with pytest.raises(AflError, match="not plain data; fix:"):
        read_behaviour_trace(source)
    (tmp_path / "text").write_text("client,start,end\n")
    with pytest.raises(AflError, match="not a pickle; fix:"):
        read_behaviour_trace(tmp_path / "text")
