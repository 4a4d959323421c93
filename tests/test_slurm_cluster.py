"""Integration tests against a real SLURM (e.g. `bash cluster/local-slurm.sh up`).

Skipped when no cluster answers, unless AFL_REQUIRE_SLURM=1 (CI), where that is a failure.
Jobs run on this machine (single-node cluster), so their folders live under tmp_path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cloudpickle  # a dependency of submitit
import submitit
from helpers import SLURM_PARTITION, wait_until
from submitit.core.utils import FailedJobError

# The jobs unpickle these functions and classes in a fresh interpreter whose sys.path does not
# contain tests/: ship them by value rather than as references to this module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.usefixtures("slurm_cluster")


def make_executor(folder: Path) -> "submitit.AutoExecutor":
    executor = submitit.AutoExecutor(folder=folder)
    assert executor.cluster == "slurm"
    # timeout_min well above 10: submitit then reads USR2 as a preemption, not a timeout.
    executor.update_parameters(slurm_partition=SLURM_PARTITION, timeout_min=30, mem_gb=1, cpus_per_task=1)
    return executor


def sacct_states(job_id: str) -> list[str]:
    out = subprocess.run(
        ["sacct", "-j", job_id, "-n", "-P", "-o", "State"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


# ---------------------------------------------------------------- job payloads

def add(a: int, b: int) -> dict:
    return {"sum": a + b, "host_job": os.environ.get("SLURM_JOB_ID")}


def fail_loudly(token: str) -> None:
    raise ValueError(f"deliberate failure {token}")


class Counter(submitit.helpers.Checkpointable):
    """Sums 0..n-1, one step per `step_s`; the progress lives in a JSON file (the checkpoint)."""

    def __init__(self, workdir: str, n: int, step_s: float) -> None:
        self.workdir = Path(workdir)
        self.n = n
        self.step_s = step_s

    def _log(self, name: str, line: str) -> None:
        with open(self.workdir / name, "a") as f:
            f.write(line + "\n")

    def __call__(self) -> int:
        state_file = self.workdir / "state.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else {"i": 0, "acc": 0}
        self._log("starts.txt", f"{state['i']} {os.environ.get('SLURM_RESTART_COUNT', '0')}")
        for i in range(state["i"], self.n):
            time.sleep(self.step_s)
            state = {"i": i + 1, "acc": state["acc"] + i}
            tmp = state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            tmp.replace(state_file)  # atomic: a signal between steps never leaves a torn file
        return state["acc"]

    def checkpoint(self, *args, **kwargs):
        state_file = self.workdir / "state.json"
        at = json.loads(state_file.read_text())["i"] if state_file.exists() else 0
        self._log("checkpoints.txt", str(at))
        return super().checkpoint(*args, **kwargs)


# ---------------------------------------------------------------- tests

def test_submit_returns_result_and_sacct_completed(tmp_path: Path) -> None:
    job = make_executor(tmp_path / "jobs").submit(add, 2, 40)
    result = job.result()
    assert result["sum"] == 42
    assert result["host_job"] == job.job_id
    # Accounting reaches slurmdbd asynchronously, the job's line and its steps' (batch, extern) each
    # in their own time: poll until every line is final (the steps' once lagged the job's line).
    states = wait_until(
        lambda: (s := sacct_states(job.job_id)) and not {"PENDING", "RUNNING", "COMPLETING"} & set(s) and s, 30,
        "sacct COMPLETED"
    )
    assert states[0] == "COMPLETED", states
    assert all(s == "COMPLETED" for s in states), states


def test_exception_comes_back_as_failed_job_error(tmp_path: Path) -> None:
    job = make_executor(tmp_path / "jobs").submit(fail_loudly, "xyz-123")
    with pytest.raises(FailedJobError) as excinfo:
        job.result()
    message = str(excinfo.value)
    assert "ValueError" in message
    assert "deliberate failure xyz-123" in message


def test_checkpointable_job_resumes_after_usr2(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    n, step_s = 16, 0.5
    executor = make_executor(tmp_path / "jobs")
    job = executor.submit(Counter(str(workdir), n, step_s))
    state_file = workdir / "state.json"

    def progress() -> int:
        try:
            return json.loads(state_file.read_text())["i"]
        except (FileNotFoundError, json.JSONDecodeError):
            return 0

    wait_until(lambda: progress() >= 4, 60, "the job to make some progress", 0.1)
    # What a preemption does: USR2 to the job step; submitit checkpoints and requeues the job.
    # (`scontrol requeue` alone would not checkpoint.)
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)

    assert job.result() == sum(range(n))

    checkpoints = [int(x) for x in (workdir / "checkpoints.txt").read_text().split()]
    starts = [line.split() for line in (workdir / "starts.txt").read_text().splitlines()]
    assert len(checkpoints) == 1, checkpoints
    assert 4 <= checkpoints[0] < n, checkpoints
    # Two runs: the first from scratch, the second (a requeue) from the checkpointed step.
    assert [int(s[0]) for s in starts] == [0, checkpoints[0]], starts
    assert int(starts[1][1]) >= 1, starts  # SLURM_RESTART_COUNT: really requeued, not a new job
    assert json.loads(state_file.read_text()) == {"i": n, "acc": sum(range(n))}
