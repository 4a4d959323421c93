"""The one place a resolved config becomes a wired run.

``build(cfg, ...)`` makes the federation (data, shards, client rates, routing), the model,
the workload (local training, or none), the server rule and the event simulation, and ties
them together; ``afl train`` (``afl.run.train``), the pilot of the queueing bound, the
benchmarks and the tests all start a run here. It also owns the budget: a round is ``m``
returned results for every rule (``budget``, ``planned_updates``), so rules are compared at
equal client work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from afl import params, rules
from afl.config import Config
from afl.errors import config_fail
from afl.learning import models
from afl.learning.grouped import check_trainable
from afl.learning.local import TaskResult, task_steps
from afl.learning.trainer import Options
from afl.learning.workloads import NullWorkload, TrainingWorkload
from afl.rng import Stream, torch_stream
from afl.rules import Arrival
from afl.run import federation
from afl.run.federation import Federation
from afl.sim.executor import LazyExecutor
from afl.sim import availability, timing
from afl.sim.simulator import Budget, Simulation


def budget(cfg: Config) -> Budget:
    """``run.updates`` server updates, ``run.rounds`` rounds of ``m`` results, ``run.time`` virtual time."""
    run, m = cfg.run, cfg.algorithm.concurrency
    return Budget(updates=run.updates if run.updates is not None else math.inf,
                  results=run.rounds * m if run.rounds is not None else math.inf,
                  time=run.time if run.time is not None else math.inf)


def planned_updates(cfg: Config) -> int | None:
    """Server updates the budget allows, where it is given in updates or rounds (None: by time only)."""
    run, a = cfg.run, cfg.algorithm
    budgets = [] if run.updates is None else [run.updates]
    if run.rounds is not None:
        budgets.append(run.rounds * a.concurrency // rules.get(a.name).batch(a))
    return min(budgets) if budgets else None


def round_of(result: int, m: int) -> int:
    """The round (1-based) of the ``result``-th applied result (0-based): a round is ``m`` results."""
    return result // m + 1


@dataclass
class Run:
    """A wired run: ``simulation.run()`` plays it."""

    cfg: Config
    device: torch.device
    federation: Federation
    model: torch.nn.Module | None  # None under the null workload
    workload: TrainingWorkload | NullWorkload
    rule: rules.Rule
    aggregator: object  # the rule's, built from the config (its ``state``, if any, goes into checkpoints)
    steps: np.ndarray  # local steps of a task, per client
    planned_updates: int | None
    simulation: Simulation


OnUpdate = Callable[[int, float, list, list, list, np.ndarray, float], None]


def build(cfg: Config, *, on_update: OnUpdate | None = None, on_eval: Callable = lambda x, version, now: None,
          on_checkpoint: Callable | None = None, requested: Callable[[], bool] = lambda: False,
          fed: Federation | None = None) -> Run:
    """Wire ``cfg``. ``on_update(version, now, tasks, arrivals, taus, weights, update_norm)`` sees every
    server update; ``on_eval(x, version, now)`` every evaluation point (it returns the test loss
    or None); ``on_checkpoint(state)`` gets the simulation's state to save. ``fed``: a prebuilt
    federation (the memory benchmark's synthetic shards), else built from ``cfg``."""
    device = federation.device_of(cfg)
    fed = fed if fed is not None else federation.build(cfg, device)
    rule = rules.get(cfg.algorithm.name)
    n = len(fed.rates)
    total = planned_updates(cfg)
    training = cfg.run.workload != "none"
    steps = task_steps(cfg.client, rule.gradient, fed.sizes if training else None, n)
    if training:
        model = models.build(cfg.model.name, fed.num_classes, fed.input_shape,
                             generator=torch_stream(cfg.seed, Stream.INIT))
        if cfg.model.name not in models.MODELS:  # a model from outside afl: can the batched trainer run it?
            try:
                check_trainable(model, fed.input_shape, fed.num_classes)
            except TypeError as exc:
                config_fail("model.name", f"{cfg.model.name}: {exc}", "build it from the layers listed in "
                            "docs/extending.md, ending in LogSoftmax(dim=1)")
        model = model.to(device)
        x0 = params.flatten(model)
        run = cfg.run
        workload = TrainingWorkload(model, fed.train_x, fed.train_y, fed.shards, steps, cfg.client,
                                    seed=cfg.seed, gradient=rule.gradient, augment=cfg.data.augment,
                                    options=Options(run.precision, run.channels_last, run.compile),
                                    task_batch=run.task_batch, total=total)
    else:
        model, x0, workload = None, torch.zeros(0), NullWorkload(rule.gradient)
    # Under a rule that stops tasks in flight, most pending tasks never arrive: compute only those asked for.
    executor = LazyExecutor(workload, TaskResult, together=rule.cancel_after(cfg.algorithm) is None)
    clients = rules.Clients(fed.routing, fed.rates, cfg.timing)
    aggregator = rules.make(cfg.algorithm, clients)
    sizes = fed.sizes.tolist()

    def server(x, tasks, taus, version, now):
        arrivals = [Arrival(t.client, t.base_version, t.base, result.vector, sizes[t.client], result.train_loss)
                    for t, result in zip(tasks, executor.results(tasks))]
        x_new, weights = aggregator.aggregate(x, arrivals, taus)
        if x_new is None:  # the rule holds them for a later update
            return None, 0.0
        update_norm = float((x_new - x).norm()) if x_new.numel() else 0.0  # no model under the null workload
        if on_update is not None:
            on_update(version, now, tasks, arrivals, taus, weights, update_norm)
        return x_new, update_norm

    a, run = cfg.algorithm, cfg.run
    simulation = Simulation(
        server, executor, x0, m=a.concurrency, batch=rule.batch(a), barrier=rule.barrier, selection=a.selection,
        routing=fed.routing, rates=fed.rates, steps=steps, timing=cfg.timing, seed=cfg.seed, budget=budget(cfg),
        eval_every=run.eval_every, on_eval=on_eval, on_checkpoint=on_checkpoint,
        checkpoint_every=run.checkpoint_every, checkpoint_seconds=run.checkpoint_minutes * 60, requested=requested,
        speeds=timing.speeds(cfg.timing, fed.rates, cfg.seed), discard_after=rule.discard_after(a),
        cancel_after=rule.cancel_after(a), plan=rule.plan(a, clients), time_limit=rule.time_limit(a),
        availability=availability.availability(cfg.timing.availability, n, cfg.seed),
        on_offline=cfg.timing.availability.on_offline, task_timeout=a.task_timeout, over_select=a.over_select,
        round_deadline=a.round_deadline)
    return Run(cfg, device, fed, model, workload, rule, aggregator, steps, total, simulation)
