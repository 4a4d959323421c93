"""Lazy execution of tasks: a result is computed only when the server needs it.

Every submitted task waits in ``pending``. When any result is asked for, all pending tasks
are computed together by the workload, in batches of at most ``run.task_batch`` tasks
trained at once (``afl.batched``); each task's random stream is keyed by (seed, client,
task index), so batch composition changes no number beyond float rounding.
"""

import math

import torch

from afl import lr as lr_rules
from afl.batched import BatchedTrainer, Options, configure_host_allocator, configure_precision
from afl.config import Config
from afl.engine.tasks import Task
from afl.rng import Stream, torch_stream
from afl.training import LocalPlan, TaskResult, num_steps


class LazyExecutor:
    def __init__(self, workload):
        self.workload = workload
        self.pending: dict[int, Task] = {}
        self.done: dict[int, TaskResult] = {}

    def submit(self, task: Task) -> None:
        self.pending[task.id] = task

    def restore(self, task: Task, result: dict) -> None:
        """Put back a result computed before a checkpoint (from ``vars(TaskResult)``)."""
        self.done[task.id] = TaskResult(**result)

    def result(self, task: Task) -> TaskResult:
        if task.id in self.pending:
            tasks = list(self.pending.values())
            self.done.update(zip(self.pending, self.workload(tasks)))
            self.pending.clear()
        return self.done.pop(task.id)


class TrainingWorkload:
    """Local training (or one gradient, for asyncsgd) of pending tasks, batched.

    ``shards``: the clients' index tensors (``afl.federation.Shards``). Tasks are sorted by
    planned local steps and cut into batches of ``run.task_batch``, so a batch holds tasks of
    similar length. Process-wide: the TF32 switch (``run.precision``), the host allocator's
    setting for CPU training, and, for convolutional models, channels-last parameters of
    ``model`` (which evaluation uses).
    """

    def __init__(self, cfg: Config, model: torch.nn.Module, train_x, train_y, shards,
                 total_updates: int | None):
        self.cfg, self.shards, self.total = cfg, shards, total_updates
        run = cfg.run
        configure_precision(run.precision)
        if train_x.device.type == "cpu":
            configure_host_allocator()
        self.trainer = BatchedTrainer(model, train_x, train_y, Options(run.precision, run.channels_last, run.compile))
        if self.trainer.grouped.channels_last:
            model.to(memory_format=torch.channels_last)
        self.sizes = shards.sizes

    def plan(self, task: Task) -> LocalPlan:
        c = self.cfg.client
        factor = lr_rules.schedule_factor(c.schedule, task.base_version, self.total,
                                          gamma=c.schedule_gamma, step_every=c.schedule_every)
        return LocalPlan(c.optimizer, c.lr * factor, c.momentum, c.weight_decay, c.batch_size,
                         c.epochs, c.steps, c.lr_rule, c.lr_alpha, task.duration, c.patience,
                         self.cfg.data.augment)

    def steps(self, client: int) -> int:
        """Planned local steps of a task at ``client`` (what ``timing.per: step`` charges)."""
        c = self.cfg.client
        if self.cfg.algorithm.name == "asyncsgd":
            return 1
        return num_steps(c.epochs, c.steps, c.batch_size, int(self.sizes[client]))

    def __call__(self, tasks: list[Task]) -> list[TaskResult]:
        order = sorted(range(len(tasks)), key=lambda i: -self.steps(tasks[i].client))
        out: list[TaskResult] = [None] * len(tasks)  # type: ignore[list-item]
        size = self.cfg.run.task_batch
        for start in range(0, len(order), size):
            chunk = [tasks[i] for i in order[start:start + size]]
            for i, result in zip(order[start:start + size], self._compute(chunk)):
                out[i] = result
        return out

    def _compute(self, tasks: list[Task]) -> list[TaskResult]:
        bases = [t.base for t in tasks]
        shards = [self.shards.host(t.client) for t in tasks]
        gens = [torch_stream(self.cfg.seed, Stream.TRAIN, t.client, t.index) for t in tasks]
        if self.cfg.algorithm.name == "asyncsgd":
            return self.trainer.gradients(bases, shards, self.cfg.client.batch_size, gens, self.cfg.data.augment)
        return self.trainer.train(bases, shards, [self.plan(t) for t in tasks], gens)


class NullWorkload:
    """No training: a task returns the model it was sent (a zero gradient for asyncsgd)."""

    def __init__(self, cfg: Config):
        self.gradient = cfg.algorithm.name == "asyncsgd"
        self.steps_per_task = cfg.client.steps or 1  # per-step timing of epochs is refused (afl.config)

    def steps(self, client: int) -> int:
        return self.steps_per_task

    def __call__(self, tasks: list[Task]) -> list[TaskResult]:
        return [TaskResult(torch.zeros_like(t.base) if self.gradient else t.base, math.nan, 0)
                for t in tasks]
