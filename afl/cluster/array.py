"""Cells on SLURM as job arrays, waited for by one light process (``afl launch``, the workflow).

``run_array`` takes the cells of an experiment and:

1. reports the finished ones at once (a completed or diverged run of the same config);
2. re-attaches to the tasks of earlier arrays (``<folder>/array.json``) that SLURM still has
   queued or running (the controller's ``squeue`` and accounting's ``sacct``), so that a rerun
   after the login session died never submits a cell twice;
3. submits the other cells as one array through submitit (``executor.batch()``): ``cells_per_job``
   cells per task (``afl.cluster.task.CellTask``), at most ``array_parallelism`` tasks at once
   (SLURM's ``--array=...%N``), split in arrays of at most the cluster's ``MaxArraySize``; each
   array is recorded in array.json, and found by its SLURM comment if this process dies between
   its sbatch and that record;
4. waits, writing each cell's outcome (``record``) as soon as its task has ended: a look at the
   tasks' result files every ``CHECK_S`` seconds, one ``sacct`` for all arrays every ``POLL_S``
   seconds (for tasks that ended without a result: killed, out of memory, cancelled).

A cell that ends without a finished run yields a failure report: its task's SLURM state and exit
code, the fix, and the tail of the cell's own log (``<out>/train.log``); ``run_array`` returns
them after every other task has ended. A rerun submits only the cells that are not finished.
"""

from __future__ import annotations

import getpass
import json
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import submitit
from submitit.core.utils import FailedSubmissionError
from submitit.core.utils import pickle_load
from submitit.slurm.slurm import read_job_id

from afl.atomic import write_json
from afl.cluster.task import CellTask, summary
from afl.cluster.worker import LOG, log_tail
from afl.errors import AflError
from afl.run import checkpoint

RECORD = "array.json"  # in the submission folder: the arrays submitted, their tasks' cells
# sacct states of a job that may still produce a result (anything else is final).
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                 "REQUEUE_FED", "RESIZING", "SUSPENDED", "PREEMPTED", "SIGNALING", "STAGE_OUT"}
CHECK_S = 2  # how often the waiter looks for the tasks' result files (a stat each, no SLURM call)
POLL_S = 60  # how often it asks sacct about all its arrays at once
LATE_S = 60  # a task ended in sacct but without a result file yet: how long to wait for the file
DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize: task indices 0..1000


@dataclass(frozen=True)
class CellRun:
    """A cell as the cluster side runs it: its name, folder, resolved config and the config's hash."""

    name: str  # "experiment:cell", in messages and records
    out: str  # the cell's folder (absolute)
    config: dict  # afl.config.to_dict of the resolved config
    config_hash: str

    def as_task(self) -> dict:
        return {"name": self.name, "out": self.out, "config": self.config, "config_hash": self.config_hash}


def _slurm(*command: str) -> str:
    """The standard output of a SLURM command; empty if it cannot run (the caller's fallback holds)."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def sacct_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """``{task id: (state, exit code)}`` for every task of these jobs or arrays (one sacct call)."""
    if not job_ids:
        return {}
    return parse_sacct(_slurm("sacct", "-j", ",".join(job_ids), "-X", "-n", "-P", "-o", "JobID,State,ExitCode"))


def queued_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """``{task id: (state, "")}`` of the tasks of these arrays that the controller still has queued
    or running (one ``squeue -r`` call): its live view, which sacct's accounting lags by seconds."""
    if not job_ids:
        return {}
    return parse_sacct(_slurm("squeue", "-r", "-h", "-j", ",".join(job_ids), "-o", "%i|%T|"))


def state_of(states: dict[str, tuple[str, str]], task_id: str) -> tuple[str, str]:
    """A task's ``(state, exit code)`` in ``states``. A task without its own record takes its
    array's bare one: accounting shows a just-submitted array as ``12|PENDING`` until it learns
    the tasks."""
    return states.get(task_id) or states.get(task_id.split("_")[0], ("UNKNOWN", ""))


def parse_sacct(out: str) -> dict[str, tuple[str, str]]:
    """``sacct -X -n -P -o JobID,State,ExitCode`` lines as ``{task id: (state, exit code)}``; a pending
    range such as ``12_[3-5%2]`` gives ``12_3``, ``12_4``, ``12_5``; ``CANCELLED by 0`` gives ``CANCELLED``."""
    states = {}
    for line in out.splitlines():
        fields = line.split("|")
        if len(fields) < 3:
            continue
        state = fields[1].split()[0] if fields[1].strip() else "UNKNOWN"
        for parts in read_job_id(fields[0]):
            if len(parts) == 1:
                states[parts[0]] = (state, fields[2])
            else:
                for index in range(int(parts[1]), int(parts[-1]) + 1):
                    states[f"{parts[0]}_{index}"] = (state, fields[2])
    return states


def max_array_size() -> int:
    """The cluster's MaxArraySize (``scontrol show config``); SLURM's default if it cannot be read."""
    found = re.search(r"^MaxArraySize\s*=\s*(\d+)", _slurm("scontrol", "show", "config"), re.MULTILINE)
    return int(found.group(1)) if found else DEFAULT_MAX_ARRAY_SIZE


def executor_parameters(name: str, slurm: dict, token: str) -> dict:
    """submitit AutoExecutor parameters from the SLURM settings (cluster/slurm.yaml keys); the
    submission's ``token`` goes in the job's comment, after a comment of the user's own."""
    additional = dict(slurm.get("additional") or {})
    own = additional.pop("comment", None)
    params = {"name": name, "timeout_min": slurm["time_min"], "cpus_per_task": slurm["cpus"],
              "mem_gb": slurm["mem_gb"], "slurm_signal_delay_s": slurm["signal_delay_s"],
              "slurm_array_parallelism": slurm["array_parallelism"],
              "slurm_comment": f"{own} {_comment(token)}" if own else _comment(token)}
    if slurm.get("gpus"):
        params["gpus_per_node"] = slurm["gpus"]
    for key in ("partition", "account", "qos", "constraint"):
        if slurm.get(key):
            params[f"slurm_{key}"] = slurm[key]
    if additional:
        params["slurm_additional_parameters"] = additional
    return params


def array_tasks(cells: int, slurm: dict) -> int:
    """The array tasks (SLURM jobs) that run ``cells`` cells, ``cells_per_job`` to a task."""
    return -(-cells // slurm["cells_per_job"])


def threads_per_cell(slurm: dict) -> int:
    """Each cell of a task trains on the task's CPUs split between its workers (at least one)."""
    return max(1, slurm["cpus"] // workers_per_job(slurm))


def workers_per_job(slurm: dict) -> int:
    """The worker processes of a task (``afl.cluster.worker``): ``workers_per_job``, at most one per cell
    (default: one per cell, all of a task's cells at once)."""
    return min(slurm.get("workers_per_job") or slurm["cells_per_job"], slurm["cells_per_job"])


def finished(cell: CellRun) -> dict | None:
    """The outcome of a cell whose folder holds a finished run of its config (SUMMARY, executor, and
    the SLURM job or array task that ran it, from its run.json); None if it must run."""
    info = checkpoint.finished_run(Path(cell.out), cell.config_hash)
    return None if info is None else {**summary(info), "executor": "slurm", "job_id": info.get("slurm_job")}


def _read_record(folder: Path) -> dict:
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return {"arrays": []}
    return record if isinstance(record.get("arrays"), list) else {"arrays": []}


def _write_record(folder: Path, arrays: list[dict], submitting: dict | None = None) -> None:
    write_json({"arrays": arrays, **({"submitting": submitting} if submitting else {})}, folder / RECORD)


def _recover(name: str, submitting: dict) -> list[dict]:
    """The array of a submission whose waiter died between sbatch and recording it (array.json's
    ``submitting``): found by its comment among the user's queued or running jobs named ``name``.
    None found: it was never submitted, or it has ended (its cells' folders tell how)."""
    out = _slurm("squeue", "-h", "-r", "-u", getpass.getuser(), "-n", name, "-o", "%i|%k")
    ids = sorted({line.split("|")[0].split("_")[0] for line in out.splitlines()
                  if line.split("|")[-1].split()[-1:] == [_comment(submitting["token"])]})
    groups = submitting["tasks"]  # a batch of one task is a plain job, not an array
    return [{"job_id": a, "tasks": {a if len(groups) == 1 else f"{a}_{i}": g for i, g in enumerate(groups)}}
            for a in ids]


def _comment(token: str) -> str:
    return f"afl:{token}"


def failure(cell: CellRun, job_id: str, state: str, exit_code: str, error: str, slurm: dict) -> str:
    """A failed cell's report: its task's state, what happened and the fix on the first line, then its log tail."""
    out = Path(cell.out)
    kept = f"its checkpoint {out / checkpoint.NAME} is kept" if (out / checkpoint.NAME).exists() else \
        "no checkpoint was written yet (run.checkpoint_minutes)"
    task = "SLURM array task" if "_" in job_id else "SLURM job"
    if "timed-out too many times" in error or state == "TIMEOUT":
        head = (f"cell {cell.name}: {task} {job_id} ended {state}: it reached its time limit more than "
                f"max_requeue={slurm['max_requeue']} times and {kept}; fix: raise slurm time_min or max_requeue "
                "in the workflow config and rerun (it resumes from the checkpoint)")
    else:
        head = (f"cell {cell.name}: {task} {job_id} ended {state} (exit code {exit_code or '?'}); "
                "fix: read the log below, fix the cause and rerun (only failed cells run again)")
    return f"{head}\n{log_tail(out / LOG)}"


@dataclass
class _Task:
    job: submitit.Job
    cells: list[CellRun]
    ended_at: float | None = None  # when sacct first showed it ended without a result file
    stale: int | None = None  # mtime (ns) of an attempt's error result left behind by a requeue


def _submit(cells: list[CellRun], folder: Path, name: str, slurm: dict, arrays: list[dict]) -> list[_Task]:
    """Submit ``cells`` as arrays and record each in array.json after the earlier ``arrays``. Before
    its sbatch, the record holds the array's cells and a token also sent as its SLURM comment, so
    that a rerun finds the array even if this process dies before recording its id (``_recover``)."""
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=slurm["max_requeue"])
    except RuntimeError as exc:
        raise AflError(f"executor: slurm, but no SLURM here ({exc}); "
                       "fix: run on a login node of the cluster, or use executor: local") from None
    k, threads = slurm["cells_per_job"], threads_per_cell(slurm)
    groups = [cells[i:i + k] for i in range(0, len(cells), k)]
    limit = max_array_size() - 1
    tasks = []
    for start in range(0, len(groups), limit):
        chunk = groups[start:start + limit]
        token = uuid.uuid4().hex
        _write_record(folder, arrays, {"token": token, "tasks": [[c.name for c in g] for g in chunk]})
        executor.update_parameters(**executor_parameters(name, slurm, token))
        try:
            with executor.batch():
                jobs = [executor.submit(CellTask([c.as_task() for c in group], threads, workers_per_job(slurm)))
                        for group in chunk]
        except (FailedSubmissionError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "output", None) or str(exc)
            detail = detail.decode(errors="replace") if isinstance(detail, bytes) else detail
            raise AflError(f"slurm: sbatch refused the array of {name} ({' '.join(detail.split())}); "
                           "fix: correct the slurm settings (cluster/slurm.yaml, the workflow config's slurm)") from None
        arrays = arrays + [{"job_id": jobs[0].job_id.split("_")[0],
                            "tasks": {j.job_id: [c.name for c in g] for j, g in zip(jobs, chunk)}}]
        _write_record(folder, arrays)
        tasks += [_Task(job, group) for job, group in zip(jobs, chunk)]
    return tasks


def _reattach(cells: dict[str, CellRun], folder: Path, arrays: list[dict],
              states: dict[str, tuple[str, str]]) -> tuple[list[_Task], list[dict]]:
    """Tasks of the earlier ``arrays`` (array.json) still queued or running (``states``) that run some
    of ``cells``, and the arrays that still have such tasks."""
    tasks, alive = [], []
    for array in arrays:
        live = False
        for job_id, names in array["tasks"].items():
            # A live task runs all its unfinished cells (it skips finished ones): wait for those of ours.
            ours = [cells[n] for n in names if n in cells]
            if ours and state_of(states, job_id)[0] in ACTIVE_STATES:
                tasks.append(_Task(submitit.SlurmJob(folder=folder, job_id=job_id), ours))
                live = True
        if live:
            alive.append(array)
    return tasks, alive


def _log(message: str) -> None:
    print(f"afl launch: {message}", file=sys.stderr, flush=True)


def run_array(cells: list[CellRun], folder: Path, name: str, slurm: dict,
              record: Callable[[CellRun, dict], None]) -> list[str]:
    """Run ``cells`` on SLURM as arrays submitted from ``folder``; ``record(cell, outcome)`` for each
    finished cell as it ends; return the failure reports of the others (empty: all finished)."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    # SLURM's view first, then the cells' own: a task ending in between has its cells seen finished.
    # The controller's (squeue) overrides accounting's (sacct), which may not list a task yet.
    saved = _read_record(folder)
    arrays = saved["arrays"]
    if "submitting" in saved:  # the last waiter died during a submission: was it submitted?
        arrays += _recover(name, saved["submitting"])
        _write_record(folder, arrays)
    ids = [a["job_id"] for a in arrays]
    states = sacct_states(ids) | queued_states(ids)
    pending = []
    for cell in cells:
        if (outcome := finished(cell)) is not None:
            record(cell, outcome)
        else:
            pending.append(cell)
    if not pending:
        return []
    tasks, arrays = _reattach({c.name: c for c in pending}, folder, arrays, states)
    attached = {c.name for t in tasks for c in t.cells}
    if tasks:
        _log(f"{name}: re-attached to {len(tasks)} queued or running tasks of "
             f"{', '.join(sorted({t.job.job_id.split('_')[0] for t in tasks}))} ({len(attached)} cells)")
    todo = [c for c in pending if c.name not in attached]
    if todo:
        new = _submit(todo, folder, name, slurm, arrays)
        submitted = dict.fromkeys(t.job.job_id.split("_")[0] for t in new)
        _log(f"{name}: submitted {len(todo)} cells as {len(new)} SLURM tasks ({slurm['cells_per_job']} cells per "
             f"task, at most {slurm['array_parallelism']} at once): {', '.join(submitted)}")
        tasks += new
    return _wait(tasks, slurm, record)


def _wait(tasks: list[_Task], slurm: dict, record: Callable[[CellRun, dict], None]) -> list[str]:
    failures = []
    last_poll = time.monotonic()
    while tasks:
        time.sleep(CHECK_S)
        states = {}
        if time.monotonic() - last_poll >= POLL_S:
            states = sacct_states(sorted({t.job.job_id.split("_")[0] for t in tasks}))
            last_poll = time.monotonic()
        still = []
        for task in tasks:
            if _ended(task):
                failures += _finish(task, slurm, record)
                continue
            state = state_of(states, task.job.job_id)[0]
            if states and state != "UNKNOWN" and state not in ACTIVE_STATES:
                task.ended_at = task.ended_at or time.monotonic()
                if time.monotonic() - task.ended_at >= LATE_S:
                    failures += _finish(task, slurm, record)
                    continue
            still.append(task)
        tasks = still
    return failures


def _ended(task: _Task) -> bool:
    """Whether the task's result file says it has ended. An error can be an attempt's only: when
    SLURM requeues a preempted task itself, it kills the step while submitit's own requeue runs,
    and submitit records that as the task's error. Such a result is final only if SLURM does not
    have the task queued again; else it is stale, and the next attempt's result replaces it."""
    path = task.job.paths.result_pickle
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return False
    if mtime == task.stale:
        return False
    if pickle_load(path)[0] == "success":
        return True
    if _state_after(task.job.job_id, {"RUNNING", "COMPLETING", "UNKNOWN"})[0] in ACTIVE_STATES:
        task.stale = mtime
        return False
    return True


def _state_after(job_id: str, passing: set[str]) -> tuple[str, str]:
    """The task's sacct state once it is none of ``passing``, waiting up to LATE_S for accounting."""
    deadline = time.monotonic() + LATE_S
    while True:
        state = state_of(sacct_states([job_id]), job_id)
        if state[0] not in passing or time.monotonic() > deadline:
            return state
        time.sleep(2)


def _finish(task: _Task, slurm: dict, record: Callable[[CellRun, dict], None]) -> list[str]:
    """A task has ended: record its finished cells, return the failure reports of the others."""
    job_id = task.job.job_id
    error = ""
    if task.job.paths.result_pickle.exists():
        outcome, value = pickle_load(task.job.paths.result_pickle)
        error = "" if outcome == "success" else str(value)
    failures, state = [], None
    for cell in task.cells:
        if (outcome := finished(cell)) is not None:
            record(cell, outcome)
            continue
        state = state or _state_after(job_id, ACTIVE_STATES | {"UNKNOWN"})
        failures.append(failure(cell, job_id, state[0], state[1], error, slurm))
    return failures
