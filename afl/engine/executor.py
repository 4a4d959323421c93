"""Lazy execution of tasks: a result is computed only when its virtual completion arrives.

Every submitted task waits in ``pending``. When any result is asked for, all pending tasks
are computed together by the workload (one batch), so later issues can vectorise the
batch; each task's random stream is keyed by (seed, client, task index), so batch
composition changes no number.
"""

import math

import torch

from afl import lr as lr_rules
from afl.config import Config
from afl.engine.tasks import Task
from afl.rng import Stream, torch_stream
from afl.training import LocalPlan, TaskResult, local_gradient, local_train, num_steps


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
    """Local training (or one gradient, for asyncsgd) of each task, one after another."""

    def __init__(self, cfg: Config, model: torch.nn.Module, train_x, train_y, shards,
                 total_updates: int | None):
        self.cfg, self.model = cfg, model
        self.x, self.y, self.shards = train_x, train_y, shards
        self.total = total_updates

    def plan(self, task: Task) -> LocalPlan:
        c = self.cfg.client
        factor = lr_rules.schedule_factor(c.schedule, task.base_version, self.total,
                                          gamma=c.schedule_gamma, step_every=c.schedule_every)
        return LocalPlan(c.optimizer, c.lr * factor, c.momentum, c.weight_decay, c.batch_size,
                         c.epochs, c.steps, c.lr_rule, c.lr_alpha, task.duration, c.patience)

    def steps(self, client: int) -> int:
        """Planned local steps of a task at ``client`` (what ``timing.per: step`` charges)."""
        c = self.cfg.client
        if self.cfg.algorithm.name == "asyncsgd":
            return 1
        return num_steps(c.epochs, c.steps, c.batch_size, len(self.shards[client]))

    def __call__(self, tasks: list[Task]) -> list[TaskResult]:
        out = []
        for t in tasks:
            gen = torch_stream(self.cfg.seed, Stream.TRAIN, t.client, t.index)
            shard = self.shards[t.client]
            if self.cfg.algorithm.name == "asyncsgd":
                out.append(local_gradient(self.model, t.base, self.x, self.y, shard,
                                          self.cfg.client.batch_size, gen))
            else:
                out.append(local_train(self.model, t.base, self.x, self.y, shard, self.plan(t), gen))
        return out


class NullWorkload:
    """No training: a task returns the model it was sent (a zero gradient for asyncsgd)."""

    def __init__(self, cfg: Config):
        self.gradient = cfg.algorithm.name == "asyncsgd"
        self.steps_per_task = cfg.client.steps or cfg.client.epochs or 1

    def steps(self, client: int) -> int:
        return self.steps_per_task

    def __call__(self, tasks: list[Task]) -> list[TaskResult]:
        return [TaskResult(torch.zeros_like(t.base) if self.gradient else t.base, math.nan, 0)
                for t in tasks]
