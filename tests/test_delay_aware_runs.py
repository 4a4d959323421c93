"""The first seed's delay-aware local rate as a run uses it (docs/simulator.md).

A task sent model ``x_v`` with duration ``d`` trains its local epoch ``e`` at
``gamma_0 * schedule(v) / (sqrt(e + 1) (1 + alpha d))``. The test builds a real run
(``afl.run.build``), plays it, and reads the learning rate of every local step of every task
from the step tables the batched trainer hands its optimizer; the expected rates are computed
here by hand from the task's own fields, not through ``afl.rules.lr`` or ``afl.learning.local``.
"""

import math

import pytest

from afl.config import load_config
from afl.learning import trainer
from afl.run.build import build

GAMMA0, ALPHA, BATCH, EPOCHS, ROUNDS, M = 0.05, 0.3, 16, 2, 6, 3
SCHEDULES = {  # the schedule's factor at server version v, by hand (docs/simulator.md, afl/rules/lr.py docstring)
    "step": ({"schedule": "step", "schedule_every": 2, "schedule_gamma": 0.5}, lambda v: 0.5 ** (v // 2)),
    # afl applies every m results: ROUNDS planned server updates, the cosine's horizon
    "cosine": ({"schedule": "cosine"}, lambda v: 0.5 * (1 + math.cos(math.pi * min(v / ROUNDS, 1.0)))),
}


def played(monkeypatch, schedule: dict):
    """A short afl run on small Synthetic shards, played; ``(run, calls)`` with one entry per batch
    of tasks the trainer trained: the tasks, the trainer's row order and its ``[steps, k]`` rates."""
    cfg = load_config({
        "seed": 10,  # six Synthetic clients of 43 to 150 training samples: 3 to 10 batches an epoch
        "data": {"name": "synthetic", "num_clients": 6},
        "algorithm": {"name": "afl", "concurrency": M},
        "client": {"lr_rule": "delay_aware", "lr_alpha": ALPHA, "lr": GAMMA0, "epochs": EPOCHS,
                   "batch_size": BATCH, **schedule},
        "run": {"rounds": ROUNDS, "eval_every": 1000, "device": "cpu", "precision": "fp32"},
    })
    calls = []

    class Recording(trainer.StepTables):
        def __init__(self, shards, plans, gens, sizes, spe, total, order, b):
            super().__init__(shards, plans, gens, sizes, spe, total, order, b)
            calls[-1].update(order=list(order), lrs=self.lrs.copy(), total=list(total))

    monkeypatch.setattr(trainer, "StepTables", Recording)
    run = build(cfg)
    compute = run.workload._compute

    def recording_compute(tasks, purpose):
        calls.append({"tasks": list(tasks)})
        return compute(tasks, purpose)

    monkeypatch.setattr(run.workload, "_compute", recording_compute)
    run.simulation.run()
    return run, calls


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_every_local_step_of_a_run_uses_the_delay_aware_rate_of_its_own_task(monkeypatch, name):
    settings, factor = SCHEDULES[name]
    run, calls = played(monkeypatch, settings)
    sizes = run.federation.sizes
    checked, versions, durations = 0, set(), set()
    for call in calls:
        for i, task in enumerate(call["tasks"]):
            row = call["order"].index(i)
            per_epoch = -(-int(sizes[task.client]) // BATCH)  # batches in one pass over the shard
            steps = call["total"][i]
            assert steps == EPOCHS * per_epoch
            rate = GAMMA0 * factor(task.base_version) / (1 + ALPHA * task.duration)
            expected = [rate / math.sqrt(s // per_epoch + 1) for s in range(steps)]  # epoch e = s // per_epoch
            assert call["lrs"][:steps, row].tolist() == pytest.approx(expected, rel=1e-12, abs=0), (
                f"task {task.id}: client {task.client}, version {task.base_version}, duration {task.duration}")
            checked += 1
            versions.add(task.base_version)
            durations.add(task.duration)
    # The run exercised what the formula depends on: many tasks, several schedule factors, distinct delays.
    assert checked >= ROUNDS * M
    assert len({factor(v) for v in versions}) >= 3 and min(factor(v) for v in versions) < 0.5
    assert len(durations) == checked and min(durations) > 0 and max(durations) > 1
