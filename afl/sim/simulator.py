"""The event simulator: clients, tasks, queues and the server, in virtual time.

Clients are callbacks on the virtual clock (``afl.sim.clock``). A client with work
serves its FIFO queue: its head task's completion is a timer at start + duration (virtual,
so instantly); when it fires, the task goes to the server and the client starts its next
task. The server buffers arrived tasks until the rule's batch is full, computes each one's
staleness ``tau = t - v`` (the one place staleness is computed), hands them to ``server``
(which fetches their results from the executor, computed lazily in one batch with every
other task dispatched so far, and applies the rule), and dispatches replacements: one per
arrival to keep ``m`` tasks in flight, or, for a synchronous rule, a new round of ``m``
when none is in flight.

Timers and ``call_soon`` callbacks rather than one coroutine per client: the same order of
events (an idle client starts its first task one loop step after its dispatch, as a new
coroutine did), a fraction of the cost per event. Memory is O(n) small arrays plus the
queues of busy clients only, so ``n`` can be 100,000.

This module knows nothing of learning, and no torch and no config: the model is an opaque
value, the server step, evaluation and checkpoints are callbacks, and the setting comes as
plain parameters. ``afl.run.build`` wires it to a run.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from afl.rng import Stream, numpy_stream
from afl.sim import clock
from afl.sim import timing as durations
from afl.sim.selection import Selector
from afl.sim.tasks import Task


@dataclass
class ClientStats:
    """Per-client counters: lists while a simulation runs (cheap scalar updates), arrays in its Outcome.

    ``tasks``: results applied in an update; ``held``: results the rule kept for later updates
    without one of their own (Ringleader's table); ``discarded``: results returned but refused by
    the rule (too stale); ``cancelled``: tasks stopped in flight (too stale, or over the time limit);
    ``busy_time``: time spent computing, ``wasted_time`` the part of it whose result was never
    applied (a discarded task's whole duration, a cancelled one's time until it stopped).
    """

    tasks: list | np.ndarray
    staleness_sum: list | np.ndarray
    busy_time: list | np.ndarray
    discarded: list | np.ndarray
    cancelled: list | np.ndarray
    wasted_time: list | np.ndarray
    held: list | np.ndarray

    @classmethod
    def zeros(cls, n: int) -> ClientStats:
        return cls([0] * n, [0.0] * n, [0.0] * n, [0] * n, [0] * n, [0.0] * n, [0] * n)

    def arrays(self) -> ClientStats:
        return ClientStats(np.array(self.tasks, np.int64), np.array(self.staleness_sum, float),
                           np.array(self.busy_time, float), np.array(self.discarded, np.int64),
                           np.array(self.cancelled, np.int64), np.array(self.wasted_time, float),
                           np.array(self.held, np.int64))


@dataclass
class Outcome:
    status: str  # completed | diverged
    reason: str
    version: int
    time: float
    stats: ClientStats = field(repr=False)


@dataclass(frozen=True)
class Budget:
    """When a run stops: after ``updates`` server updates, ``results`` applied results, or at
    virtual ``time``, whichever comes first (``afl.run.build.budget`` reads it off a config)."""

    updates: float = math.inf
    results: float = math.inf
    time: float = math.inf


class Simulation:
    """One run of a server rule over ``n`` clients until its budget is spent.

    ``server(x, tasks, taus, version, now) -> (x_new, update_norm)`` applies the rule to the
    buffered tasks (``version`` is the one the update creates; ``x_new`` None: the rule holds
    them for later, no update); ``batch`` tasks form an update
    and ``barrier`` makes rounds synchronous (``afl.rules.Rule``). ``rates``, ``routing`` and
    ``steps`` are per client (local steps of a task, for ``timing.per: step``); ``timing`` is
    the config's timing section. ``on_eval(x, version, now)`` returns the test loss or None.
    ``on_checkpoint(state)`` is called every ``checkpoint_every`` updates and every
    ``checkpoint_seconds`` of wall-clock time, and whenever ``requested()`` says so.

    What a rule may refuse (``afl.rules.Rule``): a result whose staleness exceeds
    ``discard_after`` is discarded on arrival; a task in flight whose staleness would exceed
    ``cancel_after`` is stopped when the update that makes it so is applied. Either way its
    result never reaches ``server`` (nor is it computed, if it was not yet), its client is free
    at once and a replacement is dispatched on the current model, as for an arrival. Stopping
    tasks in flight needs one task per client (selection without replacement).

    A synchronous rule may instead plan its rounds (``plan``: tasks per client per round, all on
    the round's model, queued FIFO at each client; no selection): the update then applies every
    result of the round once the last task of the round is done (no update if none came back).
    ``time_limit``: a task whose draw ``S`` exceeds it is stopped when its time with ``S =
    time_limit`` is up (counted ``cancelled``, that time wasted; its result is never computed).
    """

    def __init__(self, server: Callable, executor, x0: Any, *, m: int, batch: int, barrier: bool,
                 selection: str, routing: np.ndarray, rates: np.ndarray, steps: np.ndarray, timing: Any,
                 seed: int, budget: Budget, eval_every: int, on_eval: Callable,
                 on_checkpoint: Callable | None = None, checkpoint_every: int | None = None,
                 checkpoint_seconds: float = math.inf, requested: Callable[[], bool] = lambda: False,
                 speeds: Any = None, discard_after: int | None = None, cancel_after: int | None = None,
                 plan: list[int] | None = None, time_limit: float | None = None):
        self.server, self.executor = server, executor
        self.batch, self.barrier, self.timing = batch, barrier, timing
        self.rates, self.steps = rates.tolist(), np.asarray(steps).tolist()
        self.on_eval = on_eval
        n = len(self.rates)
        self.m = m
        self.x, self.version = x0, 0
        self.selector = Selector(selection, n, routing, numpy_stream(seed, Stream.SELECT))
        self.service = durations.ServiceDraws(timing, seed)
        # How fast each client computes over time (afl.sim.timing): constant mu_i unless given.
        self.speeds = speeds if speeds is not None else durations.ConstantSpeeds(rates)
        self.queues: dict[int, deque[Task]] = {}  # busy clients only: head in service, then FIFO
        self.task_count = np.zeros(n, dtype=np.int64)
        self.stats = ClientStats.zeros(n)
        self.discard_after, self.cancel_after = discard_after, cancel_after
        self.plan, self.time_limit = plan, time_limit
        if plan is not None and not barrier:
            raise ValueError("a planned round is synchronous: barrier must be set")
        if cancel_after is not None and selection != "without_replacement":
            raise ValueError("stopping tasks in flight needs one task per client: selection without_replacement")
        self.timers: dict[int, asyncio.TimerHandle] = {}  # each busy client's completion timer
        self.flight: deque[Task] = deque()  # cancel_after: tasks in dispatch order (so by base version)
        self.buffer: list[Task] = []  # arrived, waiting for the rule's batch to fill
        self.in_flight = 0
        self.results = 0
        self.next_id = 0
        self.budget, self.eval_every = budget, eval_every
        self.outcome: Outcome | None = None
        self.start_time, self.first_seq, self.restored = 0.0, 0, False
        self.on_checkpoint = on_checkpoint
        self.checkpoint_every = (checkpoint_every or 0) if on_checkpoint else 0
        self.checkpoint_seconds = checkpoint_seconds if on_checkpoint else math.inf
        self.last_checkpoint = time.monotonic()
        self.checkpoint_due = False
        self.requested = requested  # a checkpoint asked for from outside (a preemption signal)

    # -- running ---------------------------------------------------------------------------

    def run(self) -> Outcome:
        """Simulate until the budget is spent or the model diverges (from a restored state, if any)."""
        return clock.run(self._main(), start=self.start_time, first_seq=self.first_seq,
                         on_quiescent=self._quiescent)

    async def _main(self) -> Outcome:
        self.loop = asyncio.get_running_loop()
        self.finished = self.loop.create_future()
        self.loop.set_exception_handler(self._crash)
        if self.restored:
            for client, queue in self.queues.items():
                task = queue[0]
                self.timers[client] = self.loop.call_at_seq(task.start_time + task.duration, task.timer_seq,
                                                            self._complete, client)
        else:
            self.on_eval(self.x, self.version, 0.0)
            self._round()
        return await self.finished

    def _crash(self, loop, context: dict) -> None:
        """An exception in a client's callback (a crash in training, say) ends the run with it."""
        exc = context.get("exception")
        if exc is None:
            loop.default_exception_handler(context)
        elif not self.finished.done():
            self.finished.set_exception(exc)

    def _finish(self, status: str, reason: str) -> None:
        if self.outcome is None:
            if status == "completed" and self.version % self.eval_every:
                self.on_eval(self.x, self.version, self.loop.time())
            self.outcome = Outcome(status, reason, self.version, self.loop.time(), self.stats.arrays())
            self.finished.set_result(self.outcome)

    # -- clients ---------------------------------------------------------------------------

    def _dispatch(self, k: int) -> None:
        """Send the current model to ``k`` selected clients."""
        for _ in range(k):
            self._send(self.selector.pick())

    def _round(self) -> None:
        """A synchronous round: ``m`` selected clients, or the rule's plan of tasks per client."""
        if self.plan is None:
            self._dispatch(self.m)
        else:
            for client, count in enumerate(self.plan):
                for _ in range(count):
                    self._send(client)

    def _send(self, client: int) -> None:
        """Send the current model to ``client``: a task at the end of its queue."""
        now = self.loop.time()
        index = int(self.task_count[client])
        self.task_count[client] = index + 1
        queue = self.queues.get(client)
        service = self.service(client, index)
        cut = self.time_limit is not None and service > self.time_limit
        if cut:  # stopped at the time limit: it takes the time of a draw equal to the limit
            service = self.time_limit
        if self.speeds.varying:  # the task's duration depends on when it will start
            duration = durations.varying_task_duration(self.timing, self.speeds, client,
                                                       now if queue is None else self._free_at(queue, now),
                                                       self.steps[client], service)
        else:
            duration = durations.task_duration(self.timing, self.rates[client], self.steps[client], service)
        task = Task(self.next_id, client, index, self.version, self.x, now, duration, cut=cut)
        self.next_id += 1
        self.in_flight += 1
        if not cut:
            self.executor.submit(task)
        if self.cancel_after is not None:
            self.flight.append(task)
        if queue is None:
            self.queues[client] = deque((task,))
            self.loop.call_soon(self._start, client)
        else:
            queue.append(task)

    @staticmethod
    def _free_at(queue: deque, now: float) -> float:
        """When a client will have finished its queue: its head's start plus each queued duration,
        added in the order its timers will fire. A head not started yet starts now (dispatched to
        an idle client, or next in line behind the task that just completed)."""
        t = now if not queue or math.isnan(queue[0].start_time) else queue[0].start_time
        for task in queue:
            t = t + task.duration
        return t

    def _start(self, client: int) -> None:
        """The client starts its head task: its completion is a timer ``duration`` from now."""
        if self.outcome is None:
            task = self.queues[client][0]
            task.start_time = now = self.loop.time()
            handle = self.timers[client] = self.loop.call_at(now + task.duration, self._complete, client)
            task.timer_seq = handle.seq

    def _complete(self, client: int) -> None:
        """The client's head task is done: hand it to the server, then serve the queue on."""
        queue = self.queues[client]
        task = queue.popleft()
        self.stats.busy_time[client] += task.duration
        self._arrive(task)
        if self.outcome is not None:
            return
        if queue:
            self._start(client)
        else:
            del self.queues[client]
            self.timers.pop(client, None)

    def _stop(self, task: Task) -> None:
        """Stop ``task`` in flight (the head of its client's queue, the only task there): its time
        so far is wasted, its result never computed, its client idle."""
        client = task.client
        self.timers.pop(client).cancel()
        del self.queues[client]
        spent = self.loop.time() - task.start_time
        self.stats.busy_time[client] += spent
        self.stats.wasted_time[client] += spent
        self.stats.cancelled[client] += 1
        self.in_flight -= 1
        self.executor.discard(task)
        self.selector.release(client)

    def _stop_stale(self) -> int:
        """Stop every task in flight whose staleness now exceeds ``cancel_after``; how many."""
        stopped = 0
        while self.flight:
            task = self.flight[0]
            queue = self.queues.get(task.client)
            if queue and queue[0] is task:  # still in flight
                if self.version - task.base_version <= self.cancel_after:
                    break  # the oldest in flight is fresh enough, so are all after it
                self._stop(task)
                stopped += 1
            self.flight.popleft()
        return stopped

    # -- server ----------------------------------------------------------------------------

    def _arrive(self, task: Task) -> None:
        if self.outcome is not None:
            return
        if self.loop.time() > self.budget.time:
            self._finish("completed", "time budget spent")
            return
        self.in_flight -= 1
        if not self.queues[task.client] and self.plan is None:
            self.selector.release(task.client)
        stopped = 0
        if task.cut:  # stopped at the time limit: nothing came back
            self.stats.cancelled[task.client] += 1
            self.stats.wasted_time[task.client] += task.duration
        elif self.discard_after is not None and self.version - task.base_version > self.discard_after:
            self.results += 1
            self.stats.discarded[task.client] += 1
            self.stats.wasted_time[task.client] += task.duration
            self.executor.discard(task)
        else:
            self.results += 1
            self.buffer.append(task)
        if self.buffer and (len(self.buffer) == self.batch if self.plan is None else self.in_flight == 0):
            self._apply()
            if self.cancel_after is not None and self.outcome is None:
                stopped = self._stop_stale()
        if self.outcome is None and self.results >= self.budget.results:
            self._finish("completed", "round budget spent")
        self._replace(1 + stopped)

    def _replace(self, k: int) -> None:
        """New tasks on the current model for ``k`` that came back or were stopped (asynchronous
        rules), or a new round of ``m`` once none is in flight (synchronous)."""
        if self.outcome is None:
            if not self.barrier:
                self._dispatch(k)
            elif self.in_flight == 0:
                self._round()

    def _apply(self) -> None:
        """Apply the rule to the buffered tasks (``server``): their results are fetched only now,
        so every task dispatched before this point is computed in the same batch."""
        tasks, self.buffer = self.buffer, []
        taus = [self.version - t.base_version for t in tasks]
        now = self.loop.time()
        x, update_norm = self.server(self.x, tasks, taus, self.version + 1, now)
        if x is None:  # held by the rule for a later update
            for t in tasks:
                self.stats.held[t.client] += 1
            return
        self.version += 1
        for t, tau in zip(tasks, taus):
            self.stats.tasks[t.client] += 1
            self.stats.staleness_sum[t.client] += tau
        if not math.isfinite(update_norm):  # any inf or nan in x makes the norm of x - x_prev non-finite
            self._finish("diverged", f"non-finite parameters at update {self.version}")
            return
        self.x = x
        if self.checkpoint_every and self.version % self.checkpoint_every == 0 or \
                time.monotonic() - self.last_checkpoint > self.checkpoint_seconds:
            self.checkpoint_due = True
        if self.version % self.eval_every == 0:
            loss = self.on_eval(self.x, self.version, now)
            if loss is not None and not math.isfinite(loss):
                self._finish("diverged", f"non-finite test loss at update {self.version}")
                return
        if self.version >= self.budget.updates:
            self._finish("completed", "update budget spent")

    # -- checkpoints -----------------------------------------------------------------------

    def _quiescent(self) -> None:
        """Called by the clock before it jumps: nothing is half done, so the state is whole."""
        if (self.checkpoint_due or self.requested()) and self.outcome is None:
            self.checkpoint_due = False
            self.on_checkpoint(self.state_dict())
            self.last_checkpoint = time.monotonic()

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: plain data and tensors (see ``afl.run.checkpoint``)."""
        queued = [task for queue in self.queues.values() for task in queue]
        waiting = queued + self.buffer
        return {
            "now": self.loop.time(),
            "next_seq": self.loop.next_seq,
            "version": self.version,
            "x": self.x,
            "in_flight": self.in_flight,
            "results": self.results,
            "next_id": self.next_id,
            "task_count": self.task_count.tolist(),
            "stats": {k: list(v) for k, v in vars(self.stats).items()},
            "selector": {"rng": self.selector.rng.bit_generator.state, "idle": list(self.selector.idle)},
            "queued": [vars(task) for task in queued],
            "buffer": [vars(task) for task in self.buffer],
            "computed": {t.id: vars(self.executor.done[t.id]) for t in waiting if t.id in self.executor.done},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state saved by ``state_dict``; ``run`` then continues from it."""
        self.start_time, self.first_seq, self.restored = state["now"], state["next_seq"], True
        self.version, self.x = state["version"], state["x"]
        self.in_flight, self.results, self.next_id = state["in_flight"], state["results"], state["next_id"]
        self.task_count = np.array(state["task_count"], dtype=np.int64)
        self.stats = ClientStats(**{k: list(v) for k, v in state["stats"].items()})
        self.selector.rng.bit_generator.state = state["selector"]["rng"]
        self.selector.idle = list(state["selector"]["idle"])
        self.buffer = [Task(**fields) for fields in state["buffer"]]
        queued = [Task(**fields) for fields in state["queued"]]
        for task in sorted(queued, key=lambda t: t.id):  # dispatch order: FIFO per client
            self.queues.setdefault(task.client, deque()).append(task)
            if self.cancel_after is not None:
                self.flight.append(task)
        for task in sorted(queued + self.buffer, key=lambda t: t.id):  # the executor's pending order
            if task.cut:
                continue  # never computed
            if task.id in state["computed"]:
                self.executor.restore(task, state["computed"][task.id])
            else:
                self.executor.submit(task)
