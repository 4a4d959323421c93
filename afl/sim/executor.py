"""Lazy execution of tasks: a result is computed only when the server needs it.

Every submitted task waits in ``pending``. When any result is asked for, all pending tasks
are computed together by the workload (``afl.learning.workloads``), so a buffered rule's
results, and every task dispatched before them, are trained in one batch. Each task's random
stream is keyed by (seed, client, task index), so which tasks are batched together changes
no draw (docs/reproducibility.md says what it does to float rounding).
"""

from typing import Any, Callable

from afl.sim.tasks import Task


class LazyExecutor:
    """``workload(tasks) -> results``; ``result_type(**fields)`` rebuilds a result saved in a checkpoint."""

    def __init__(self, workload: Callable[[list[Task]], list], result_type: Callable[..., Any]):
        self.workload, self.result_type = workload, result_type
        self.pending: dict[int, Task] = {}
        self.done: dict[int, Any] = {}

    def submit(self, task: Task) -> None:
        self.pending[task.id] = task

    def restore(self, task: Task, result: dict) -> None:
        """Put back a result computed before a checkpoint (its ``vars``)."""
        self.done[task.id] = self.result_type(**result)

    def discard(self, task: Task) -> None:
        """Forget a task whose result will never be asked for (computed or not)."""
        self.pending.pop(task.id, None)
        self.done.pop(task.id, None)

    def result(self, task: Task):
        if task.id in self.pending:
            tasks = list(self.pending.values())
            self.done.update(zip(self.pending, self.workload(tasks)))
            self.pending.clear()
        return self.done.pop(task.id)
