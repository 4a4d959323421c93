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
    ``dropped``: tasks lost when their client went offline (``timing.availability``);
    ``busy_time``: time spent computing, ``wasted_time`` the part of it whose result was never
    applied (a discarded task's whole duration, a cancelled or dropped one's time until it
    stopped); ``online_time``: time online.
    """

    tasks: list | np.ndarray
    staleness_sum: list | np.ndarray
    busy_time: list | np.ndarray
    discarded: list | np.ndarray
    cancelled: list | np.ndarray
    wasted_time: list | np.ndarray
    held: list | np.ndarray
    dropped: list | np.ndarray
    online_time: list | np.ndarray

    @classmethod
    def zeros(cls, n: int) -> ClientStats:
        return cls([0] * n, [0.0] * n, [0.0] * n, [0] * n, [0] * n, [0.0] * n, [0] * n, [0] * n, [0.0] * n)

    def arrays(self) -> ClientStats:
        return ClientStats(np.array(self.tasks, np.int64), np.array(self.staleness_sum, float),
                           np.array(self.busy_time, float), np.array(self.discarded, np.int64),
                           np.array(self.cancelled, np.int64), np.array(self.wasted_time, float),
                           np.array(self.held, np.int64), np.array(self.dropped, np.int64),
                           np.array(self.online_time, float))


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

    Clients that come and go (``availability``, ``afl.sim.availability``; None: always online):
    an offline client is never selected (routing renormalised over the online ones); a dispatch
    with no client to take it waits for one to come online. A client going offline loses its
    tasks (``on_offline: drop``: counted ``dropped``, the head's time so far wasted; the server
    notices each loss ``task_timeout`` later and then replaces it, or, in a synchronous round,
    counts it out of the round) or pauses its head task until it is back (``pause``). A
    synchronous round of selected clients may send ``ceil(m over_select)`` tasks and close at the
    rule's batch or ``round_deadline`` after it began, whichever first (Bonawitz et al. 2019); a
    round also closes once nothing of it is left in flight. At the close, its tasks still out are
    stopped (``cancelled``, their time so far wasted).
    """

    def __init__(self, server: Callable, executor, x0: Any, *, m: int, batch: int, barrier: bool,
                 selection: str, routing: np.ndarray, rates: np.ndarray, steps: np.ndarray, timing: Any,
                 seed: int, budget: Budget, eval_every: int, on_eval: Callable,
                 on_checkpoint: Callable | None = None, checkpoint_every: int | None = None,
                 checkpoint_seconds: float = math.inf, requested: Callable[[], bool] = lambda: False,
                 speeds: Any = None, discard_after: int | None = None, cancel_after: int | None = None,
                 plan: list[int] | None = None, time_limit: float | None = None, availability: Any = None,
                 on_offline: str = "drop", task_timeout: float = 0.0, over_select: float = 1.0,
                 round_deadline: float | None = None):
        self.server, self.executor = server, executor
        self.batch, self.barrier, self.timing = batch, barrier, timing
        self.rates, self.steps = rates.tolist(), np.asarray(steps).tolist()
        self.on_eval = on_eval
        n = self.n = len(self.rates)
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
        self.availability, self.on_offline, self.task_timeout = availability, on_offline, task_timeout
        self.round_size = math.ceil(m * over_select - 1e-9)
        self.round_deadline = round_deadline
        # Rounds that may close with tasks still out: their stragglers are stopped at the close.
        self.closes_rounds = barrier and plan is None and (
            self.round_size > m or round_deadline is not None or availability is not None)
        if plan is not None and availability is not None:
            raise ValueError("a planned round sends tasks to given clients: it cannot follow their availability")
        if (cancel_after is not None or self.closes_rounds) and selection != "without_replacement":
            raise ValueError("stopping tasks in flight needs one task per client: selection without_replacement")
        self.timers: dict[int, asyncio.TimerHandle] = {}  # each busy client's completion timer
        self.flight: deque[Task] = deque()  # tasks in dispatch order (so by base version), if ever stopped
        self.track_flight = cancel_after is not None or self.closes_rounds
        self.buffer: list[Task] = []  # arrived, waiting for the rule's batch to fill
        self.in_flight = 0  # dispatched, neither back, stopped nor noticed lost
        self.owed = 0  # dispatches waiting for a client to come online
        self.paused: dict[int, float] = {}  # on_offline pause: client -> its head task's remaining time
        self.switches: dict[int, asyncio.TimerHandle] = {}  # each client's next switch on or off
        self.notices: dict[int, tuple[asyncio.TimerHandle, int]] = {}  # seq -> (timer, tasks lost)
        self.deadline: asyncio.TimerHandle | None = None  # the open round's deadline
        self.since = [0.0] * n  # when each online client came online
        self.gone = 0  # clients offline for good (an availability trace's end)
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
            self._rearm()
        else:
            if self.availability is not None:
                for client in range(self.n):
                    online = self.availability.online_at(client, 0.0)
                    self.selector.set_online(client, online)
                    self._schedule_switch(client)
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
            now = self.loop.time()
            if status == "completed" and self.version % self.eval_every:
                self.on_eval(self.x, self.version, now)
            for client in range(self.n):  # the online periods still open
                if self.selector.online[client]:
                    self.stats.online_time[client] += now - self.since[client]
            self.outcome = Outcome(status, reason, self.version, now, self.stats.arrays())
            self.finished.set_result(self.outcome)

    # -- clients ---------------------------------------------------------------------------

    def _dispatch(self, k: int) -> None:
        """Send the current model to ``k`` selected clients, and to those owed one; a dispatch with no
        online client to take it waits for one (``owed``)."""
        k += self.owed
        while k and self.selector.available():
            self._send(self.selector.pick())
            k -= 1
        self.owed = k

    def _round(self) -> None:
        """A synchronous round: ``ceil(m over_select)`` selected clients, or the rule's plan of tasks per client."""
        if self.plan is None:
            if self.round_deadline is not None and self.barrier:
                self.deadline = self.loop.call_at(self.loop.time() + self.round_deadline, self._deadline)
            self._dispatch(self.round_size)
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
        if self.track_flight:
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
        """The client starts its head task: its completion is a timer ``duration`` from now (if the
        client went offline since the task was sent: lost, or paused whole until it is back)."""
        queue = self.queues.get(client)
        if self.outcome is not None or queue is None or not math.isnan(queue[0].start_time) or client in self.paused:
            return
        task = queue[0]
        if not self.selector.online[client]:
            self.paused[client] = task.duration
            return
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
        self._halt(client)
        del self.queues[client]
        self.stats.cancelled[client] += 1
        self.in_flight -= 1
        self.executor.discard(task)
        self.selector.release(client)

    def _halt(self, client: int) -> None:
        """Halt the client's head task where it is: its completion timer cancelled, its time so far
        (a paused task's until its pause, one not started none) counted busy and wasted."""
        timer = self.timers.pop(client, None)
        if timer is not None:
            timer.cancel()
        task = self.queues[client][0]
        if client in self.paused:
            spent = task.duration - self.paused.pop(client)
        else:
            spent = 0.0 if math.isnan(task.start_time) else self.loop.time() - task.start_time
        self.stats.busy_time[client] += spent
        self.stats.wasted_time[client] += spent

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

    # -- availability ----------------------------------------------------------------------

    def _schedule_switch(self, client: int) -> None:
        t = self.availability.next_switch(client, self.loop.time())
        if math.isfinite(t):
            self.switches[client] = self.loop.call_at(t, self._switch, client)
        elif not self.selector.online[client]:
            self.gone += 1

    def _switch(self, client: int) -> None:
        """``client`` goes offline or comes back online."""
        del self.switches[client]
        if self.outcome is not None:
            return
        now = self.loop.time()
        if now > self.budget.time:
            self._finish("completed", "time budget spent")
            return
        online = not self.selector.online[client]
        self.selector.set_online(client, online)
        self._schedule_switch(client)
        if online:
            self.since[client] = now
            self._back(client)
        else:
            self.stats.online_time[client] += now - self.since[client]
            self._away(client)
        if self.gone == self.n and self.outcome is None:
            self._finish("completed", "every client is offline for good (the availability trace ended)")

    def _away(self, client: int) -> None:
        """``client`` went offline: its head task pauses, or its tasks are lost."""
        queue = self.queues.get(client)
        if queue is None:
            return
        if self.on_offline == "pause":
            timer = self.timers.pop(client, None)
            if timer is not None:  # started: paused with what is left of it
                timer.cancel()
                head = queue[0]
                self.paused[client] = head.start_time + head.duration - self.loop.time()
            return
        self._halt(client)
        del self.queues[client]
        for task in queue:
            self.stats.dropped[client] += 1
            self.executor.discard(task)
        self.selector.release(client)
        if self.task_timeout > 0:
            seq = self.loop.next_seq  # the seq call_at gives the timer, passed on so that it can forget itself
            handle = self.loop.call_at(self.loop.time() + self.task_timeout, self._notice, len(queue), seq)
            self.notices[seq] = (handle, len(queue))
        else:
            self._notice(len(queue))

    def _notice(self, lost: int, seq: int | None = None) -> None:
        """The server notices ``lost`` tasks lost: out of flight, replaced (an asynchronous rule)."""
        self.notices.pop(seq, None)  # None: noticed at once, no timer
        if self.outcome is None:
            self.in_flight -= lost
            self._settle(lost)

    def _back(self, client: int) -> None:
        """``client`` came back online: its paused task resumes, and it may take an owed dispatch."""
        remaining = self.paused.pop(client, None)
        if remaining is not None:
            task = self.queues[client][0]
            now = self.loop.time()
            task.start_time = now - (task.duration - remaining)  # so that start + duration is its end
            handle = self.timers[client] = self.loop.call_at(now + remaining, self._complete, client)
            task.timer_seq = handle.seq
        if self.owed:
            self._dispatch(0)

    def _deadline(self) -> None:
        """The open round's deadline: it closes with what came back."""
        self.deadline = None
        if self.outcome is None:
            self._settle(0, closing=True)

    def _close_round(self) -> None:
        """Close a synchronous round: stop its tasks still out, forget its lost ones and its owed dispatches."""
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        while self.flight:
            task = self.flight.popleft()
            queue = self.queues.get(task.client)
            if queue and queue[0] is task:
                self._stop(task)
        for handle, lost in self.notices.values():
            handle.cancel()
            self.in_flight -= lost
        self.notices.clear()
        self.owed = 0

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
        self._settle(1)

    def _due(self) -> bool:
        """Whether the buffered results make an update now: the rule's batch is full, or a
        synchronous round is over (nothing of it left in flight)."""
        if self.plan is not None:
            return self.in_flight == 0
        if self.barrier:
            return len(self.buffer) >= self.batch or (self.in_flight == 0 and not self.owed)
        return len(self.buffer) == self.batch

    def _settle(self, freed: int, closing: bool = False) -> None:
        """After ``freed`` tasks came back or were noticed lost (or a round's deadline, ``closing``):
        apply an update if one is due, close the round, check the budget, dispatch replacements."""
        stopped = 0
        due = self._due()
        if self.buffer and (due or closing):
            self._apply()
            if self.cancel_after is not None and self.outcome is None:
                stopped = self._stop_stale()
        if self.closes_rounds and (due or closing) and self.outcome is None:
            self._close_round()
        if self.outcome is None and self.results >= self.budget.results:
            self._finish("completed", "round budget spent")
        self._replace(freed + stopped)

    def _replace(self, k: int) -> None:
        """New tasks on the current model for ``k`` that came back or were stopped (asynchronous
        rules), or a new round once none is in flight and none waits to be sent (synchronous)."""
        if self.outcome is None:
            if not self.barrier:
                self._dispatch(k)
            elif self.in_flight == 0 and not self.owed:
                self._round()

    def _apply(self) -> None:
        """Apply the rule to the buffered tasks (``server``): their results are fetched only now,
        so every task dispatched before this point is computed in the same batch (only these,
        under a rule that stops tasks in flight: ``LazyExecutor.together``)."""
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

        def timer(handle):
            return None if handle is None else [handle.when(), handle.seq]

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
            "selector": self.selector.state_dict(),
            "queued": [vars(task) for task in queued],
            "buffer": [vars(task) for task in self.buffer],
            "computed": {t.id: vars(self.executor.done[t.id]) for t in waiting if t.id in self.executor.done},
            "availability": {
                "owed": self.owed, "paused": [[c, r] for c, r in self.paused.items()], "since": list(self.since),
                "gone": self.gone, "switches": [[c, *timer(h)] for c, h in self.switches.items()],
                "notices": [[*timer(h), lost] for h, lost in self.notices.values()],
                "deadline": timer(self.deadline),
            },
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state saved by ``state_dict``; ``run`` then continues from it."""
        self.start_time, self.first_seq, self.restored = state["now"], state["next_seq"], True
        self.version, self.x = state["version"], state["x"]
        self.in_flight, self.results, self.next_id = state["in_flight"], state["results"], state["next_id"]
        self.task_count = np.array(state["task_count"], dtype=np.int64)
        n = self.n
        stats = {k: list(v) for k, v in state["stats"].items()}
        stats.setdefault("dropped", [0] * n)  # a checkpoint from before availability
        stats.setdefault("online_time", [0.0] * n)
        self.stats = ClientStats(**stats)
        self.selector.load_state_dict(state["selector"])
        self.buffer = [Task(**fields) for fields in state["buffer"]]
        queued = [Task(**fields) for fields in state["queued"]]
        for task in sorted(queued, key=lambda t: t.id):  # dispatch order: FIFO per client
            self.queues.setdefault(task.client, deque()).append(task)
            if self.track_flight:
                self.flight.append(task)
        for task in sorted(queued + self.buffer, key=lambda t: t.id):  # the executor's pending order
            if task.cut:
                continue  # never computed
            if task.id in state["computed"]:
                self.executor.restore(task, state["computed"][task.id])
            else:
                self.executor.submit(task)
        avail = state.get("availability", {})
        self.owed, self.gone = avail.get("owed", 0), avail.get("gone", 0)
        self.paused = {int(c): r for c, r in avail.get("paused", [])}
        self.since = list(avail.get("since", [0.0] * n))
        self.saved_timers = avail

    def _rearm(self) -> None:
        """Re-create a restored state's timers with their saved tie-breaking numbers."""
        loop = self.loop
        for client, queue in self.queues.items():
            task = queue[0]
            if client not in self.paused and not math.isnan(task.start_time):
                self.timers[client] = loop.call_at_seq(task.start_time + task.duration, task.timer_seq,
                                                       self._complete, client)
        saved = self.saved_timers
        for client, when, seq in saved.get("switches", []):
            self.switches[client] = loop.call_at_seq(when, seq, self._switch, client)
        for when, seq, lost in saved.get("notices", []):
            self.notices[seq] = (loop.call_at_seq(when, seq, self._notice, lost, seq), lost)
        if saved.get("deadline") is not None:
            when, seq = saved["deadline"]
            self.deadline = loop.call_at_seq(when, seq, self._deadline)
