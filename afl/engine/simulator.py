"""The event simulator: clients, tasks, queues and the server, in virtual time.

Clients are coroutines on the virtual clock (``afl.engine.clock``). A client with work
serves its FIFO queue: it sleeps each task's duration (virtual, so instantly), then hands
the task to the server. The server fetches the task's result from the executor (computed
lazily, in a batch with every other pending task), buffers it until the rule's batch is
full, computes each buffered result's staleness ``tau = t - v`` (the one place staleness is
computed), applies the rule, and dispatches replacements: one per arrival to keep ``m``
tasks in flight, or, for a synchronous rule, a new round of ``m`` when none is in flight.

This module knows nothing of learning: results, evaluation and recording are callbacks.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from afl import timing
from afl.algorithms import Arrival
from afl.config import Config
from afl.engine import clock
from afl.engine.tasks import Task
from afl.rng import Stream, numpy_stream


@dataclass
class ClientStats:
    tasks: np.ndarray
    staleness_sum: np.ndarray
    busy_time: np.ndarray


@dataclass
class Outcome:
    status: str  # completed | diverged
    reason: str
    version: int
    time: float
    stats: ClientStats = field(repr=False)


class Selector:
    """Client selection (SPEC section 3) from the server's own random stream."""

    def __init__(self, mode: str, n: int, routing: np.ndarray, rng: np.random.Generator):
        self.mode, self.n, self.rng = mode, n, rng
        self.cdf = np.cumsum(routing)
        self.idle = list(range(n))  # without replacement: clients with no task

    def pick(self) -> int:
        if self.mode == "without_replacement":
            j = int(self.rng.integers(len(self.idle)))
            self.idle[j], self.idle[-1] = self.idle[-1], self.idle[j]
            return self.idle.pop()
        if self.mode == "with_replacement":
            return int(self.rng.integers(self.n))
        return min(int(np.searchsorted(self.cdf, self.rng.random() * self.cdf[-1], side="right")),
                   self.n - 1)

    def release(self, client: int) -> None:
        if self.mode == "without_replacement":
            self.idle.append(client)


class Simulation:
    """One run of a server rule over ``n`` clients until the budget in ``cfg.run`` is spent."""

    def __init__(self, cfg: Config, rule, executor, x0: torch.Tensor, sizes: np.ndarray,
                 rates: np.ndarray, routing: np.ndarray, steps: Callable[[int], int],
                 on_update: Callable, on_eval: Callable, on_checkpoint: Callable | None = None,
                 requested: Callable[[], bool] = lambda: False):
        self.cfg, self.rule, self.executor = cfg, rule, executor
        self.sizes, self.rates, self.steps = sizes, rates, steps
        self.on_update, self.on_eval = on_update, on_eval
        n = cfg.data.num_clients
        self.m = cfg.algorithm.concurrency
        self.x, self.version = x0, 0
        self.selector = Selector(cfg.algorithm.selection, n, routing,
                                 numpy_stream(cfg.seed, Stream.SELECT))
        self.service = timing.ServiceDraws(cfg.timing, cfg.seed)
        self.queues = [deque() for _ in range(n)]
        self.task_count = np.zeros(n, dtype=np.int64)
        self.stats = ClientStats(np.zeros(n, np.int64), np.zeros(n), np.zeros(n))
        self.buffer: list[tuple[Task, Arrival]] = []
        self.in_flight = 0
        self.results = 0
        self.next_id = 0
        run = cfg.run
        self.max_updates = run.updates if run.updates is not None else math.inf
        self.max_results = run.rounds * self.m if run.rounds is not None else math.inf
        self.max_time = run.time if run.time is not None else math.inf
        self.outcome: Outcome | None = None
        self.start_time, self.first_seq, self.restored = 0.0, 0, False
        self.on_checkpoint = on_checkpoint
        self.checkpoint_every = (run.checkpoint_every or 0) if on_checkpoint else 0
        self.checkpoint_seconds = run.checkpoint_minutes * 60 if on_checkpoint else math.inf
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
        self.servers: dict[int, asyncio.Task] = {}
        if self.restored:
            busy = [c for c, q in enumerate(self.queues) if q]
            for client in sorted(busy, key=lambda c: self.queues[c][0].timer_seq):
                self.servers[client] = self._start(self._serve(client, resumed=True))
        else:
            self.on_eval(self.x, self.version, 0.0)
            self._dispatch(self.m)
        outcome = await self.finished
        for server in self.servers.values():
            server.cancel()
        await asyncio.gather(*self.servers.values(), return_exceptions=True)
        return outcome

    def _start(self, coro) -> asyncio.Task:
        """A client coroutine whose exception (a crash in training, say) ends the run with it."""
        server = self.loop.create_task(coro)
        server.add_done_callback(self._crash)
        return server

    def _crash(self, server: asyncio.Task) -> None:
        if not server.cancelled() and server.exception() is not None and not self.finished.done():
            self.finished.set_exception(server.exception())

    def _finish(self, status: str, reason: str) -> None:
        if self.outcome is None:
            if status == "completed" and self.version % self.cfg.run.eval_every:
                self.on_eval(self.x, self.version, self.loop.time())
            self.outcome = Outcome(status, reason, self.version, self.loop.time(), self.stats)
            self.finished.set_result(self.outcome)

    # -- clients ---------------------------------------------------------------------------

    def _dispatch(self, k: int) -> None:
        """Send the current model to ``k`` selected clients."""
        for _ in range(k):
            client = self.selector.pick()
            index = int(self.task_count[client])
            self.task_count[client] += 1
            duration = timing.task_duration(self.cfg.timing, self.rates[client], self.steps(client),
                                            self.service(client, index))
            task = Task(self.next_id, client, index, self.version, self.x, self.loop.time(), duration)
            self.next_id += 1
            self.in_flight += 1
            self.executor.submit(task)
            self.queues[client].append(task)
            if client not in self.servers:
                self.servers[client] = self._start(self._serve(client))

    async def _serve(self, client: int, resumed: bool = False) -> None:
        """A client: serve its FIFO queue, one task at a time, in virtual time.

        ``resumed``: the head task was already in service when the state was saved; its
        completion timer is re-created with its original time and tie-breaking number.
        """
        queue = self.queues[client]
        while queue and self.outcome is None:
            task = queue[0]
            done = self.loop.create_future()
            if resumed:
                self.loop.call_at_seq(task.start_time + task.duration, task.timer_seq, _resolve, done)
                resumed = False
            else:
                task.start_time = self.loop.time()
                task.timer_seq = self.loop.call_at(task.start_time + task.duration, _resolve, done).seq
            await done
            queue.popleft()
            self.stats.busy_time[client] += task.duration
            self._arrive(task)
        del self.servers[client]

    # -- server ----------------------------------------------------------------------------

    def _arrive(self, task: Task) -> None:
        if self.outcome is not None:
            return
        if self.loop.time() > self.max_time:
            self._finish("completed", "time budget spent")
            return
        result = self.executor.result(task)
        self.in_flight -= 1
        self.results += 1
        if not self.queues[task.client]:
            self.selector.release(task.client)
        self.buffer.append((task, Arrival(task.client, task.base_version, task.base, result.vector,
                                          int(self.sizes[task.client]), result.train_loss)))
        if len(self.buffer) == self.rule.batch:
            self._apply()
        if self.outcome is None and self.results >= self.max_results:
            self._finish("completed", "round budget spent")
        if self.outcome is None:
            if not self.rule.barrier:
                self._dispatch(1)
            elif self.in_flight == 0:
                self._dispatch(self.m)

    def _apply(self) -> None:
        tasks = [t for t, _ in self.buffer]
        arrivals = [a for _, a in self.buffer]
        taus = [self.version - t.base_version for t in tasks]
        self.buffer.clear()
        x, weights = self.rule.aggregate(self.x, arrivals, taus)
        self.version += 1
        now = self.loop.time()
        for t, tau in zip(tasks, taus):
            self.stats.tasks[t.client] += 1
            self.stats.staleness_sum[t.client] += tau
        update_norm = float((x - self.x).norm())
        self.on_update(self.version, now, tasks, arrivals, taus, weights, update_norm)
        if not math.isfinite(update_norm):  # any inf or nan in x makes the norm of x - x_prev non-finite
            self._finish("diverged", f"non-finite parameters at update {self.version}")
            return
        self.x = x
        if self.checkpoint_every and self.version % self.checkpoint_every == 0 or \
                time.monotonic() - self.last_checkpoint > self.checkpoint_seconds:
            self.checkpoint_due = True
        if self.version % self.cfg.run.eval_every == 0:
            loss = self.on_eval(self.x, self.version, now)
            if loss is not None and not math.isfinite(loss):
                self._finish("diverged", f"non-finite test loss at update {self.version}")
                return
        if self.version >= self.max_updates:
            self._finish("completed", "update budget spent")

    # -- checkpoints -----------------------------------------------------------------------

    def _quiescent(self) -> None:
        """Called by the clock before it jumps: nothing is half done, so the state is whole."""
        if (self.checkpoint_due or self.requested()) and self.outcome is None:
            self.checkpoint_due = False
            self.on_checkpoint(self.state_dict())
            self.last_checkpoint = time.monotonic()

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: plain data and tensors (see ``afl.checkpoint``)."""
        queued = [task for queue in self.queues for task in queue]
        return {
            "now": self.loop.time(),
            "next_seq": self.loop.next_seq,
            "version": self.version,
            "x": self.x,
            "in_flight": self.in_flight,
            "results": self.results,
            "next_id": self.next_id,
            "task_count": self.task_count.tolist(),
            "stats": {k: v.tolist() for k, v in vars(self.stats).items()},
            "selector": {"rng": self.selector.rng.bit_generator.state, "idle": list(self.selector.idle)},
            "queued": [vars(task) for task in queued],
            "buffer": [(vars(task), vars(arrival)) for task, arrival in self.buffer],
            "computed": {t.id: vars(self.executor.done[t.id]) for t in queued if t.id in self.executor.done},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state saved by ``state_dict``; ``run`` then continues from it."""
        self.start_time, self.first_seq, self.restored = state["now"], state["next_seq"], True
        self.version, self.x = state["version"], state["x"]
        self.in_flight, self.results, self.next_id = state["in_flight"], state["results"], state["next_id"]
        self.task_count = np.array(state["task_count"], dtype=np.int64)
        self.stats = ClientStats(**{k: np.array(v, dtype=getattr(self.stats, k).dtype)
                                    for k, v in state["stats"].items()})
        self.selector.rng.bit_generator.state = state["selector"]["rng"]
        self.selector.idle = list(state["selector"]["idle"])
        for fields in sorted(state["queued"], key=lambda f: f["id"]):  # dispatch order: FIFO per client
            task = Task(**fields)
            self.queues[task.client].append(task)
            if task.id in state["computed"]:
                self.executor.restore(task, state["computed"][task.id])
            else:
                self.executor.submit(task)
        self.buffer = [(Task(**t), Arrival(**a)) for t, a in state["buffer"]]


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
