"""Workers: processes that import torch once and run grid cells one after another, in-process.

As its own process, a cell pays Python's start, torch's and afl's imports (about 1.7 s) and the
reading of its dataset before its first step; a small cell of the demo trains for less than that.
A worker pays them once: ``Pool(workers, threads)`` starts up to ``workers`` processes
(``python -m afl.cluster.worker``), each with ``threads`` torch threads, and hands each the next
cell as soon as it is free. The local workflow runs an experiment's cells so
(``workflow/scripts/run_cells.py``), and so does a SLURM array task (``afl.cluster.task.CellTask``).

A cell run by a worker writes the tables of ``afl train`` with the same threads, bit for bit
(tests/test_worker.py): every random stream is keyed by the cell's own seed, the model, the
simulation and the recorder are built afresh for each cell, and what a worker keeps between
cells is read-only: the datasets it has read (``afl.data.datasets.load``) and torch's modules. The
compiler's caches are cleared before each cell, so ``run.compile`` compiles each cell's model anew.

Isolation: a cell that raises fails alone (its error and traceback in its ``train.log``, the
worker goes on with the next); a cell that kills its worker (a segfault, the kernel's OOM killer)
fails alone too: the pool starts another worker for the cells left. ``Pool.save()`` (SLURM's USR2,
through ``CellTask.checkpoint``) has every worker checkpoint its running cell and exit; the cells
resume from their checkpoints when the task runs again.

The pool talks to a worker in lines: a cell as JSON on the worker's stdin, or ``SAVE``; the
worker answers ``{"name", "error"}`` after each cell on its stdout, which it keeps for that alone:
a cell's own output (file descriptors 1 and 2) goes to its folder's ``train.log``.
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from contextlib import contextmanager
from pathlib import Path

from afl.run import checkpoint

LOG = "train.log"  # a cell's own output, in its folder; a failure report shows its tail
SAVE = "checkpoint"  # the control line that asks a worker to save its cell and exit
SAVE_WAIT_S = 60  # how long a worker waits for the checkpoint it was asked for
SAVED = 75  # a worker's exit status after a save (EX_TEMPFAIL: stopped, to be resumed)
LOG_LINES = 25  # of a failed cell's log, in its report


def log_tail(path: Path) -> str:
    """The last LOG_LINES lines of a cell's log, headed by its path, for a failure report."""
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    if not lines:
        return f"--- no output in {path}"
    return f"--- last {min(len(lines), LOG_LINES)} lines of {path}\n" + "\n".join(lines[-LOG_LINES:])


def _ignore_usr2() -> None:  # in the worker, before it runs Python: SLURM signals every process of the job
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class _Worker:
    """One worker process and the cell it runs (None: idle)."""

    def __init__(self, threads: int) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "afl.cluster.worker", str(threads)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        preexec_fn=_ignore_usr2)
        self.cell: dict | None = None
        self.threads = threads

    def start(self, cell: dict) -> None:
        self.cell = cell
        out = Path(cell["out"])
        out.mkdir(parents=True, exist_ok=True)
        with open(out / LOG, "a") as log:
            log.write(f"=== afl worker {self.process.pid}: {cell['name']}, {self.threads} torch threads, "
                      f"started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        self.process.stdin.write(json.dumps(cell) + "\n")
        self.process.stdin.flush()


class Pool:
    """Up to ``workers`` worker processes of ``threads`` torch threads each."""

    def __init__(self, workers: int, threads: int) -> None:
        self.workers, self.threads = workers, threads
        self._running: list[_Worker] = []
        self._saving = False

    def run(self, cells: list[dict], done=lambda cell, error: None) -> list[str]:
        """Run ``cells`` (``{"name", "out", "config", "config_hash"}``, resolved configs); call
        ``done(cell, error)`` as each ends (``error`` None when it finished). A cell whose folder holds
        a finished run of its config is not run again: it is done at once. Workers start only for
        cells left to run. Returns the failed names."""
        todo, failed = deque(), []
        for cell in cells:
            if checkpoint.finished_run(Path(cell["out"]), cell["config_hash"]) is None:
                todo.append(cell)
            else:
                done(cell, None)
        try:
            while (todo or any(w.cell for w in self._running)) and not self._saving:
                self._running = [w for w in self._running if w.cell is not None or w.process.poll() is None]
                for worker in self._running:
                    if worker.cell is None and todo:
                        worker.start(todo.popleft())
                while todo and len(self._running) < self.workers:
                    self._running.append(_Worker(self.threads))
                    self._running[-1].start(todo.popleft())
                for worker, line in self._answers():
                    cell, worker.cell = worker.cell, None
                    error = _outcome(worker, line)
                    if error is not None and self._saving:
                        continue  # stopped to be resumed, not failed
                    if error is not None:
                        failed.append(cell["name"])
                    done(cell, error)
        finally:
            if not self._saving:
                self.close()
        return failed

    def _answers(self):
        """The workers that answered, each with its line ("" when it died), waiting at most 0.5 s:
        short waits, so that a signal handler of the caller's main thread runs in time."""
        busy = {w.process.stdout.fileno(): w for w in self._running if w.cell is not None}
        try:
            ready, _, _ = select.select(list(busy), [], [], 0.5)
        except InterruptedError:
            return []
        answers = []
        for fd in ready:
            worker = busy[fd]
            line = worker.process.stdout.readline()
            if not line:  # dead: wait for it, and start another in its place for the cells left
                worker.process.wait()
                self._running.remove(worker)
            answers.append((worker, line))
        return answers

    def save(self) -> int:
        """Every running cell checkpoints now and its worker exits; returns how many were running."""
        self._saving = True
        running = [w for w in self._running if w.process.poll() is None and w.cell is not None]
        for worker in self._running:
            try:
                worker.process.stdin.write(SAVE + "\n")
                worker.process.stdin.flush()
            except OSError:  # it has just ended
                pass
        deadline = time.monotonic() + SAVE_WAIT_S + 10
        for worker in self._running:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
        return len(running)

    def close(self) -> None:
        """End the workers: stdin closed, which an idle worker takes as the end."""
        for worker in self._running:
            try:
                worker.process.stdin.close()
            except OSError:
                pass
        for worker in self._running:
            try:
                worker.process.wait(timeout=SAVE_WAIT_S + 10)
            except subprocess.TimeoutExpired:
                worker.process.kill()
        self._running = []


def _outcome(worker: _Worker, line: str) -> str | None:
    """A cell's error from its worker's answer (None: it finished); a dead worker's exit status."""
    if line:
        return json.loads(line)["error"]
    code = worker.process.returncode
    how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
    return f"its worker process died ({how})"


@contextmanager
def _output_to(path: Path):
    """File descriptors 1 and 2 (Python's and C's output) appended to ``path`` for the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def run_cell(cell: dict, request: checkpoint.Request | None = None) -> str | None:
    """Train ``cell`` in this process (output to its ``train.log``); its error, or None if it finished."""
    import torch

    from afl.config import load_config
    from afl.errors import AflError
    from afl.run.train import train

    if "torch._dynamo" in sys.modules:  # a compiled model of the last cell: compile this one anew
        torch._dynamo.reset()
    out = Path(cell["out"])
    out.mkdir(parents=True, exist_ok=True)
    with _output_to(out / LOG):
        try:
            info = train(load_config(cell["config"]), out, progress=False, request=request)
        except AflError as exc:
            print(f"afl: error: {exc}", flush=True)
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - the cell fails, the worker goes on
            traceback.print_exc()
            return f"{type(exc).__name__}: {exc}"
        print(f"afl worker: {cell['name']}: {info['status']} ({info['updates']} updates)", flush=True)
    return None


def main() -> int:
    """A worker: cells from stdin, one after another; ``SAVE`` (or stdin closed while a cell runs):
    checkpoint it and exit ``SAVED``; stdin closed while idle: exit 0."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # nothing but answers on the pool's pipe
    import torch

    torch.set_num_threads(int(sys.argv[1]))
    cells: queue.Queue = queue.Queue()
    lock = threading.Lock()
    current: dict = {"request": None, "name": None, "stopping": False}

    def listen() -> None:
        for line in sys.stdin:
            if line.strip() == SAVE:
                break
            cells.put(json.loads(line))
        with lock:
            current["stopping"] = True
            request, name = current["request"], current["name"]
        if request is None:  # idle: nothing to save
            cells.put(None)
            return
        saved = request.ask(timeout=SAVE_WAIT_S)
        resume = f"the {checkpoint.NAME} just written" if saved else \
            f"its last {checkpoint.NAME}, if any (none written within {SAVE_WAIT_S} s)"
        print(f"afl worker: {name}: asked to save; it resumes from {resume}", flush=True)
        os._exit(SAVED)

    threading.Thread(target=listen, name="afl-control", daemon=True).start()
    while (cell := cells.get()) is not None:
        with lock:
            if current["stopping"]:
                break
            current["request"], current["name"] = checkpoint.Request(), cell["name"]
        error = run_cell(cell, current["request"])
        with lock:
            current["request"] = None
        answers.write(json.dumps({"name": cell["name"], "error": error}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
