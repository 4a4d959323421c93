"""What the executor (``afl.sim.executor``) calls to compute pending tasks: local training, or nothing.

``TrainingWorkload`` trains every pending task (or takes one gradient each, for a gradient
rule) with the batched trainer, in batches of at most ``task_batch`` tasks (on a CPU fewer:
``BatchedTrainer.tasks_per_pass``) sorted by planned
local steps, so a batch holds tasks of similar length. ``NullWorkload`` trains nothing, for
timing and staleness studies. ``afl.run.build`` makes them.
"""

import math
from collections.abc import Callable

import numpy as np
import torch

from afl.learning.local import LocalPlan, TaskResult
from afl.learning.trainer import BatchedTrainer, Options, configure_host_allocator, configure_precision
from afl.rng import Stream, torch_stream
from afl.rules import lr as lr_rules
from afl.sim.tasks import Task


class TrainingWorkload:
    """Local training (or one gradient each, ``gradient``) of pending tasks, batched.

    ``client``: the config's client section (optimizer, rates, epochs or steps, batch size,
    schedule); ``steps``: each client's planned local steps; ``shards``: the clients' index
    arrays (``afl.run.federation.Shards``); ``total``: the planned server updates (the cosine
    schedule's horizon). Process-wide: the TF32 switch (``options.precision``), the host
    allocator's setting for CPU training, and, for convolutional models, channels-last
    parameters of ``model`` (which evaluation uses).
    """

    def __init__(self, model: torch.nn.Module, train_x, train_y, shards, steps: np.ndarray, client, *,
                 seed: int, gradient: bool, augment: bool, options: Options, task_batch: int,
                 total: int | None):
        self.shards, self.steps, self.client = shards, steps, client
        self.seed, self.gradient, self.augment = seed, gradient, augment
        self.task_batch, self.total = task_batch, total
        # Called after every local step with (task-steps done, task-steps planned) of the pending tasks.
        self.progress: Callable[[int, int], None] | None = None
        configure_precision(options.precision)
        if train_x.device.type == "cpu":
            configure_host_allocator()
        self.trainer = BatchedTrainer(model, train_x, train_y, options)
        if self.trainer.grouped.channels_last:
            model.to(memory_format=torch.channels_last)

    def plan(self, task: Task) -> LocalPlan:
        c = self.client
        factor = lr_rules.schedule_factor(c.schedule, task.base_version, self.total,
                                          gamma=c.schedule_gamma, step_every=c.schedule_every)
        return LocalPlan(optimizer=c.optimizer, lr=c.lr * factor, momentum=c.momentum,
                         weight_decay=c.weight_decay, batch_size=c.batch_size, epochs=c.epochs,
                         steps=c.steps, lr_rule=c.lr_rule, lr_alpha=c.lr_alpha, delay=task.duration,
                         patience=c.patience, augment=self.augment)

    def __call__(self, tasks: list[Task], purpose: Stream = Stream.TRAIN) -> list[TaskResult]:
        """The tasks' results, their random draws from ``(seed, purpose, client, task index)``."""
        order = sorted(range(len(tasks)), key=lambda i: -int(self.steps[tasks[i].client]))
        out: list[TaskResult] = [None] * len(tasks)  # type: ignore[list-item]
        size = self.trainer.tasks_per_pass(self.client.batch_size, self.task_batch)
        planned, offset = int(sum(self.steps[t.client] for t in tasks)), 0
        for start in range(0, len(order), size):
            chunk = [tasks[i] for i in order[start:start + size]]
            if self.progress is not None:  # the local steps of this whole call, not of one pass
                self.trainer.progress = lambda done, _, offset=offset: self.progress(offset + done, planned)
            for i, result in zip(order[start:start + size], self._compute(chunk, purpose)):
                out[i] = result
            offset += int(sum(self.steps[t.client] for t in chunk))
        return out

    def _compute(self, tasks: list[Task], purpose: Stream) -> list[TaskResult]:
        bases = [t.base for t in tasks]
        shards = [self.shards.host(t.client) for t in tasks]
        gens = [torch_stream(self.seed, purpose, t.client, t.index) for t in tasks]
        if self.gradient:
            return self.trainer.gradients(bases, shards, self.client.batch_size, gens, self.augment)
        return self.trainer.train(bases, shards, [self.plan(t) for t in tasks], gens)


class NullWorkload:
    """No training: a task returns the model it was sent (a zero gradient, ``gradient``)."""

    def __init__(self, gradient: bool):
        self.gradient = gradient

    def __call__(self, tasks: list[Task]) -> list[TaskResult]:
        return [TaskResult(torch.zeros_like(t.base) if self.gradient else t.base, math.nan, 0)
                for t in tasks]
