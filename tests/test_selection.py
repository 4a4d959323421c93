"""Selection without replacement (afl/sim/selection.py): uniform among the idle clients, never a busy one.

The selector is driven as the simulator drives it -- ``m`` clients busy; one of them finishes
(``release``) and a replacement is picked -- from its keyed stream ``(seed, SELECT)``, with the
idle set tracked here independently. With ``n`` clients and ``m`` busy, each replacement is drawn
from the ``k = n - m + 1`` idle clients, so under the documented law each of them has
probability ``1 / k`` whatever happened before. Hence the rank of the picked client among the
idle ones -- by client id, or by how recently it was released -- is uniform on ``0..k-1`` and
independent from pick to pick: its counts over ``N`` picks are multinomial ``(N, 1/k)`` and
Pearson's statistic is chi-square with ``k - 1`` degrees of freedom. The tests require it below
the chi-square's 1e-4 upper quantile (a correct selector fails on a given seed with probability
1e-4; the seeds are fixed, so the outcome is too). Per client, the count of picks minus its
expectation ``sum_t 1[idle at t] / k`` is a martingale with variance ``sum_t 1[idle] (1/k)(1 - 1/k)``:
each client's z-score must be within 4.46 (two-sided 1e-4 over the 12 clients, Bonferroni).
"""

import numpy as np
from scipy import stats

from afl.rng import Stream, numpy_stream
from afl.sim.selection import Selector
from helpers import TWO_GROUPS, train_tables

N_CLIENTS, BUSY, PICKS_PER_SEED, SEEDS = 12, 4, 15_000, (0, 1, 2, 3)
IDLE = N_CLIENTS - BUSY + 1  # idle clients at each replacement pick: 9
LEVEL = 1e-4


def drive(seed: int):
    """Rank counts (by id, by recency) and per-client (picks, expected, variance) of one keyed stream."""
    selector = Selector("without_replacement", N_CLIENTS, np.full(N_CLIENTS, 1 / N_CLIENTS),
                        numpy_stream(seed, Stream.SELECT))
    finisher = np.random.default_rng([seed, 99])  # which busy client finishes next: not the selector's stream
    busy: list[int] = []
    released = {c: -1 - c for c in range(N_CLIENTS)}  # never released yet: older than any release
    by_id, by_recency = np.zeros(IDLE, int), np.zeros(IDLE, int)
    picks, expected, variance = np.zeros(N_CLIENTS), np.zeros(N_CLIENTS), np.zeros(N_CLIENTS)
    for _ in range(BUSY):  # the initial dispatch: m distinct clients
        client = selector.pick()
        assert client not in busy and 0 <= client < N_CLIENTS, (client, busy)
        busy.append(client)
    for t in range(PICKS_PER_SEED):
        done = busy.pop(int(finisher.integers(len(busy))))
        selector.release(done)
        released[done] = t
        idle = [c for c in range(N_CLIENTS) if c not in busy]
        assert len(idle) == IDLE
        client = selector.pick()
        assert client in idle, f"picked client {client}, busy with a task ({busy})"
        by_id[sorted(idle).index(client)] += 1
        by_recency[sorted(idle, key=lambda c: -released[c]).index(client)] += 1
        picks[client] += 1
        expected[idle] += 1 / IDLE
        variance[idle] += (1 / IDLE) * (1 - 1 / IDLE)
        busy.append(client)
    return by_id, by_recency, picks, expected, variance


def pearson(counts: np.ndarray) -> float:
    e = counts.sum() / len(counts)
    return float(((counts - e) ** 2 / e).sum())


def test_without_replacement_picks_uniformly_among_idle_clients_only():
    runs = [drive(seed) for seed in SEEDS]
    by_id = sum(r[0] for r in runs)
    by_recency = sum(r[1] for r in runs)
    picks, expected, variance = (sum(r[i] for r in runs) for i in (2, 3, 4))
    assert by_id.sum() == by_recency.sum() == len(SEEDS) * PICKS_PER_SEED
    limit = stats.chi2.isf(LEVEL, IDLE - 1)  # 31.8
    assert pearson(by_id) < limit, by_id  # e.g. a bias toward low client ids (client 0 is rank 0)
    assert pearson(by_recency) < limit, by_recency  # e.g. never (or always) the client just released
    z = (picks - expected) / np.sqrt(variance)
    assert np.abs(z).max() < stats.norm.isf(LEVEL / 2 / N_CLIENTS), z.round(2)


def test_simulated_clients_never_hold_two_tasks_without_replacement(tmp_path):
    """End to end: a client is released when its task completes, so its next task is dispatched no
    earlier, and starts on dispatch (it never queues)."""
    raw = {"data": {"num_clients": 6}, "algorithm": {"name": "fedasync", "concurrency": 4,
                                                     "selection": "without_replacement"},
           "timing": {"rates": TWO_GROUPS}, "run": {"workload": "none", "updates": 3000}}
    _, _, u, _, clients = train_tables(tmp_path / "run", raw)
    assert (u.start_time == u.dispatch_time).all()
    for _, rows in u.sort_values("dispatch_time").groupby("client"):
        finish = (rows.start_time + rows.duration).to_numpy()
        assert (rows.dispatch_time.to_numpy()[1:] >= finish[:-1]).all()
    assert (clients.tasks > 0).all()
