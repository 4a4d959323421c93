"""One SLURM job (or array task): ``CellTask`` runs its k cells on a pool of worker processes.

``CellTask`` is the ``submitit.helpers.Checkpointable`` callable that submitit pickles into the job.
It runs the cells not yet finished on ``workers`` worker processes (``afl.cluster.worker.Pool``),
each with ``threads`` torch threads (the job's CPUs split between its workers): a worker imports
torch once and runs its cells one after another, each cell's output in its folder's ``train.log``.
A cell's numbers do not depend on which cells share its job or its worker: each writes the tables
``afl train`` writes alone with the same threads.

On preemption, or ``signal_delay_s`` before the time limit, SLURM sends USR2. The workers ignore
the signal; submitit calls ``CellTask.checkpoint`` in the job's main process, which has every
worker save its running cell (``<out>/checkpoint.pt``) and exit, and the same task is requeued.
On requeue, finished cells are skipped and the others resume from their checkpoints.

A task whose cells did not all finish raises ``CellsFailed`` after the others have ended; the
waiting process (``afl.cluster.array``) reports each failed cell with its own log tail.
"""

from __future__ import annotations

import sys
from pathlib import Path

import submitit

from afl.cluster.worker import LOG, Pool
from afl.run import checkpoint

SUMMARY = ("status", "reason", "config_hash", "updates", "virtual_time", "wall_time", "final_test_acc")


class CellsFailed(Exception):
    """Some cells of a task ended without a finished run; the message names them."""


class CellTask(submitit.helpers.Checkpointable):
    """``cells``: ``[{"name", "out", "config", "config_hash"}, ...]`` (resolved configs), run on
    ``workers`` worker processes (default: one per cell) of ``threads`` torch threads each."""

    def __init__(self, cells: list[dict], threads: int, workers: int | None = None) -> None:
        self.cells = cells
        self.threads = threads
        self.workers = workers or len(cells)

    def __getstate__(self) -> dict:  # the running workers stay with this process
        return {"cells": self.cells, "threads": self.threads, "workers": self.workers}

    def __call__(self) -> dict:
        self._pool = Pool(self.workers, self.threads)
        failed = self._pool.run(self.cells)  # finished cells (a requeued task's) are skipped
        if failed:
            raise CellsFailed(f"{len(failed)} of {len(self.cells)} cells failed ({', '.join(failed)}); "
                              f"each cell's output is in its folder's {LOG}")
        return {cell["name"]: summary(checkpoint.finished_run(Path(cell["out"]), cell["config_hash"]))
                for cell in self.cells}

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """USR2 (preemption or time limit): every running cell saves now; then resubmit this task."""
        pool = self.__dict__.pop("_pool", None)
        saved = pool.save() if pool is not None else 0
        print(f"afl task: USR2: {saved} running cells saved; requeueing this task, they resume from "
              "their checkpoints", file=sys.stderr, flush=True)
        return super().checkpoint(*args, **kwargs)


def summary(info: dict) -> dict:
    """The SUMMARY keys of a run's run.json (``info``)."""
    return {k: info.get(k) for k in SUMMARY}
