"""Preemption on a real SLURM: the tasks of an array, two cells each, preempted mid-run by a job
of the `urgent` partition checkpoint their cells (USR2), are requeued, resume, and write exactly
the tables of uninterrupted runs; a cell that reaches its time limit more often than allowed fails with a
clear message and keeps its checkpoint. Skipped without a cluster, unless AFL_REQUIRE_SLURM=1 (CI).
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
import torch
from helpers import SLURM_PARTITION, assert_same_tables, recorded_arrays, wait_until

from afl.run import checkpoint
from afl.config import config_hash, load_config, to_dict
from afl.cluster.array import CellRun, run_array
from afl.cluster.launch import DEFAULT_SLURM, JobFailed, launch
from afl.cluster.pipeline import slurm_settings
from afl.run.train import train

RAW = {"data": {"name": "synthetic", "num_clients": 6}, "model": {"name": "logreg"},
       "client": {"steps": 20, "batch_size": 16}, "algorithm": {"name": "fedbuff", "concurrency": 3,
                                                               "buffer_size": 2},
       "run": {"updates": 2400, "eval_every": 400, "checkpoint_every": 100}}
# About 15 s of training on a 2-core machine: room for SLURM's scheduler (sched_interval=5) to
# preempt the cell between its first checkpoint and its end. (240 updates ran out in 1.5 s once
# training was batched, before the preemption arrived.)

pytestmark = pytest.mark.usefixtures("slurm_cluster")


def node_cpus() -> int:
    out = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, check=True, timeout=30)
    return int(out.stdout.split()[0])


def start(cfg, out: Path, name: str, slurm: dict) -> tuple[threading.Thread, dict, str]:
    """``afl launch`` of one cell on SLURM in a thread (it waits for its job); the job's id."""
    outcome: dict = {}

    def run():
        try:
            outcome["info"] = launch(cfg, out, name, "slurm", slurm)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    waiter = threading.Thread(target=run)
    waiter.start()
    return waiter, outcome, submitted_task(out / "slurm")


def submitted_task(folder: Path) -> str:
    """The id of the (first) task that the waiting process recorded in ``folder``'s array.json."""
    return next(iter(recorded_arrays(folder)[0]["tasks"]))


def test_array_task_preempted_by_an_urgent_job_resumes_to_the_uninterrupted_tables(tmp_path):
    cpus = node_cpus()
    cfgs = [load_config({**RAW, "seed": seed}) for seed in range(4)]
    # Bitwise equality is promised at equal float paths: each cell of a task trains on
    # max(1, cpus // cells_per_job) = 1 torch thread, so do these runs.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for seed, cfg in enumerate(cfgs):
            train(cfg, tmp_path / f"whole{seed}", progress=False)
    finally:
        torch.set_num_threads(threads)
    slurm = slurm_settings(DEFAULT_SLURM, {"partition": SLURM_PARTITION, "gpus": 0, "cpus": 1, "mem_gb": 1,
                                           "time_min": 30, "cells_per_job": 2})
    cells = [CellRun(f"p:{seed}", str(tmp_path / f"cell{seed}"), to_dict(cfg), config_hash(cfg))
             for seed, cfg in enumerate(cfgs)]
    outcome: dict = {}

    def wait():
        try:
            outcome["failures"] = run_array(cells, tmp_path / "slurm", "preempted", slurm,
                                            lambda cell, result: outcome.setdefault("records", {}).update(
                                                {cell.name: result}))
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    waiter = threading.Thread(target=wait)
    waiter.start()
    (array,) = recorded_arrays(tmp_path / "slurm")
    assert sorted(array["tasks"]) == [f"{array['job_id']}_0", f"{array['job_id']}_1"]
    for cell in cells:
        wait_until(lambda: (Path(cell.out) / checkpoint.NAME).exists(), 180, "the cells' first checkpoints", 0.1)
    # A job of the higher-priority partition needs the whole node: SLURM preempts both tasks (USR2, requeue).
    urgent = subprocess.run(["sbatch", "--parsable", "-p", "urgent", "-c", str(cpus), "--mem=100M",
                             "-o", str(tmp_path / "urgent.out"), "--wrap", "sleep 3"],
                            capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    waiter.join(timeout=400)
    assert not waiter.is_alive() and "error" not in outcome and outcome["failures"] == [], outcome
    assert {cell: r["job_id"] for cell, r in outcome["records"].items()} == \
        {name: task for task, names in array["tasks"].items() for name in names}
    logs = {task: (tmp_path / "slurm" / f"{task}_0_log.err").read_text() for task in array["tasks"]}
    log = "\n".join(logs.values())

    def accounting():
        return subprocess.run(["sacct", "-j", f"{array['job_id']},{urgent}", "-X", "-n", "-P", "-o", "JobID,State,Start,End"],
                              capture_output=True, text=True, timeout=30).stdout

    for seed, cell in enumerate(cells):
        info = json.loads((Path(cell.out) / "run.json").read_text())
        assert info["resumed"] is True, f"not preempted mid-run: sacct {accounting()!r}, log:\n{log[-2000:]}"
        assert outcome["records"][cell.name]["status"] == "completed"
        assert "asked to save; it resumes from the checkpoint.pt just written" in \
            (Path(cell.out) / "train.log").read_text()
        assert_same_tables(tmp_path / f"whole{seed}", Path(cell.out))
    for task_log in logs.values():
        assert "this job is preempted" in task_log and "afl task: USR2: 2 running cells saved" in task_log, task_log[-2000:]
    # Accounting reaches slurmdbd asynchronously: poll until the urgent job's line is final.
    wait_until(lambda: f"{urgent}|COMPLETED|" in accounting(), 30, "sacct COMPLETED for the urgent job")


def test_cell_over_its_time_limit_too_often_fails_clearly_and_keeps_its_checkpoint(tmp_path):
    cfg = load_config(RAW)
    # A 3-minute limit: SLURM may send its own warning (USR2 at signal_delay_s before the limit) up
    # to 60 s early, so with a 1-minute limit it could come while the job still imports, before
    # anything can be checkpointed (seen in CI). Here it cannot come before 90 s; the test sends the
    # warning itself once the first checkpoint is written.
    slurm = slurm_settings(DEFAULT_SLURM, {"partition": SLURM_PARTITION, "gpus": 0, "cpus": 1, "mem_gb": 1,
                                           "time_min": 3, "max_requeue": 0, "signal_delay_s": 30})
    out = tmp_path / "cell"
    waiter, outcome, job_id = start(cfg, out, "timed-out", slurm)
    wait_until(lambda: (out / checkpoint.NAME).exists(), 60, "the cell's first checkpoint", 0.1)
    # The time-limit warning (USR2 within the last 10 minutes of a job counts as a timeout).
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
    waiter.join(timeout=200)
    assert not waiter.is_alive()
    error = outcome.get("error")
    assert isinstance(error, JobFailed), outcome
    first = str(error).splitlines()[0]
    assert f"SLURM job {job_id}" in first and "max_requeue=0" in first and "is kept" in first
    assert "fix: raise slurm time_min or max_requeue" in first
    saved = checkpoint.load(out)
    assert saved is not None and saved["simulation"]["version"] > 0
    assert not (out / "run.json").exists() or json.loads((out / "run.json").read_text())["status"] != "completed"
