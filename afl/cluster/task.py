"""One SLURM job (or array task): ``CellTask`` runs its k cells at once, each in its own process.

``CellTask`` is the ``submitit.helpers.Checkpointable`` callable that submitit pickles into the job.
It starts one child process per cell not yet finished (``python -m afl.cluster.task``), each with
``threads`` torch threads (the job's CPUs split between its cells), its output in the cell's
``train.log``, and waits for them. A cell's numbers do not depend on which cells share its job:
each trains alone in its process, exactly as ``afl train`` with the same threads would.

On preemption, or ``signal_delay_s`` before the time limit, SLURM sends USR2. The children ignore
the signal; submitit calls ``CellTask.checkpoint`` in the job's main process, which tells every
running child to save (a line on its stdin); each child has its simulation write
``<out>/checkpoint.pt`` at once and exits, and the same task is requeued. On requeue, finished
cells are skipped and the others resume from their checkpoints (``afl train`` resumes by itself).

A task whose cells did not all finish raises ``CellsFailed`` after the others have ended; the
waiting process (``afl.cluster.array``) reports each failed cell with its own log tail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import submitit

from afl.run import checkpoint

SUMMARY = ("status", "reason", "config_hash", "updates", "virtual_time", "wall_time", "final_test_acc")
LOG = "train.log"  # a cell's own output, in its folder; a failure report shows its tail
CHECKPOINT_WAIT_S = 60  # how long a child waits for the checkpoint it was asked for
SAVE = "checkpoint"  # the control line that asks a child to save and exit


class CellsFailed(Exception):
    """Some cells of a task ended without a finished run; the message names them."""


class CellTask(submitit.helpers.Checkpointable):
    """``cells``: ``[{"name", "out", "config", "config_hash"}, ...]`` (resolved configs); ``threads``: per cell."""

    def __init__(self, cells: list[dict], threads: int) -> None:
        self.cells = cells
        self.threads = threads

    def __getstate__(self) -> dict:  # the running children stay with this process
        return {"cells": self.cells, "threads": self.threads}

    def __call__(self) -> dict:
        self._children = {}
        for cell in self.cells:
            if checkpoint.finished_run(Path(cell["out"]), cell["config_hash"]) is None:
                self._children[cell["name"]] = start_child(cell, self.threads)
        while any(child.poll() is None for child in self._children.values()):
            time.sleep(0.5)  # short sleeps: submitit's USR2 handler runs in this (main) thread
        failed = [name for name, child in self._children.items() if child.returncode != 0]
        if failed:
            raise CellsFailed(f"{len(failed)} of {len(self.cells)} cells failed ({', '.join(failed)}); "
                              f"each cell's output is in its folder's {LOG}")
        return {cell["name"]: summary(checkpoint.finished_run(Path(cell["out"]), cell["config_hash"]))
                for cell in self.cells}

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """USR2 (preemption or time limit): every running cell saves now; then resubmit this task."""
        running = [c for c in self.__dict__.pop("_children", {}).values() if c.poll() is None]
        for child in running:
            try:
                child.stdin.write(SAVE + "\n")
                child.stdin.flush()
            except OSError:  # it has just ended
                pass
        deadline = time.monotonic() + CHECKPOINT_WAIT_S + 10
        for child in running:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        print(f"afl task: USR2: {len(running)} running cells saved; requeueing this task, they resume from "
              "their checkpoints", file=sys.stderr, flush=True)
        return super().checkpoint(*args, **kwargs)


def summary(info: dict) -> dict:
    """The SUMMARY keys of a run's run.json (``info``)."""
    return {k: info.get(k) for k in SUMMARY}


def _ignore_usr2() -> None:  # in the child, before it runs Python: SLURM signals every process of the job
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def start_child(cell: dict, threads: int) -> subprocess.Popen:
    """A process training ``cell`` (``main`` below), its output appended to the cell's LOG."""
    out = Path(cell["out"])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOG, "a") as log:
        log.write(f"=== afl task: {cell['name']}, {threads} torch threads, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        log.flush()
        child = subprocess.Popen([sys.executable, "-m", "afl.cluster.task"], stdin=subprocess.PIPE, stdout=log,
                                 stderr=subprocess.STDOUT, text=True, preexec_fn=_ignore_usr2)
    child.stdin.write(json.dumps({"cell": cell, "threads": threads}) + "\n")
    child.stdin.flush()
    return child


def main() -> int:
    """A child: read its cell from stdin, train it; on a ``SAVE`` line (or stdin closed), save and exit."""
    spec = json.loads(sys.stdin.readline())
    cell = spec["cell"]
    import torch

    from afl.config import load_config
    from afl.errors import AflError
    from afl.run.train import train

    torch.set_num_threads(spec["threads"])
    request = checkpoint.Request()
    outcome = {}

    def run() -> None:
        try:
            outcome["info"] = train(load_config(cell["config"]), Path(cell["out"]), progress=False, request=request)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            outcome["error"] = exc

    def listen() -> None:
        sys.stdin.readline()  # SAVE, or "" when the task's process is gone
        saved = request.ask(timeout=CHECKPOINT_WAIT_S)
        resume = f"the {checkpoint.NAME} just written" if saved else \
            f"its last {checkpoint.NAME}, if any (none written within {CHECKPOINT_WAIT_S} s)"
        print(f"afl task: {cell['name']}: asked to save; it resumes from {resume}", flush=True)
        os._exit(75)  # EX_TEMPFAIL: stopped, to be resumed

    worker = threading.Thread(target=run, name="afl-train", daemon=True)
    worker.start()
    threading.Thread(target=listen, name="afl-control", daemon=True).start()
    worker.join()
    if isinstance(outcome.get("error"), AflError):
        print(f"afl: error: {outcome['error']}", flush=True)
        return 1
    if "error" in outcome:
        raise outcome["error"]
    info = outcome["info"]
    print(f"afl task: {cell['name']}: {info['status']} ({info['updates']} updates)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
