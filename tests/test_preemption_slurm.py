"""Preemption on a real SLURM: a cell preempted mid-run by a job of the `urgent` partition
checkpoints (USR2), is requeued, resumes, and writes exactly the tables of an uninterrupted run;
a cell that reaches its time limit more often than allowed fails with a clear message and keeps
its checkpoint. Skipped without a cluster, unless AFL_REQUIRE_SLURM=1 (CI).
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
import torch
from helpers import SLURM_PARTITION, assert_same_tables, wait_until

from afl.run import checkpoint
from afl.config import load_config
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
    job_file = out / "slurm" / "job_id"
    job_id = wait_until(lambda: job_file.exists() and job_file.read_text().strip(), 60, "the job's submission")
    return waiter, outcome, job_id


def test_cell_preempted_by_an_urgent_job_resumes_to_the_uninterrupted_tables(tmp_path):
    cfg = load_config(RAW)
    cpus = node_cpus()
    # Bitwise equality is promised at equal float paths: the job trains on `cpus` torch threads, so does this run.
    threads = torch.get_num_threads()
    torch.set_num_threads(cpus)
    try:
        train(cfg, tmp_path / "whole", progress=False)
    finally:
        torch.set_num_threads(threads)
    slurm = slurm_settings(DEFAULT_SLURM, {"partition": SLURM_PARTITION, "gpus": 0, "cpus": cpus, "mem_gb": 1,
                                           "time_min": 30})
    out = tmp_path / "cell"
    waiter, outcome, job_id = start(cfg, out, "preempted", slurm)
    wait_until(lambda: (out / checkpoint.NAME).exists(), 180, "the cell's first checkpoint", 0.1)
    # A job of the higher-priority partition needs the whole node: SLURM preempts the cell (USR2, requeue).
    urgent = subprocess.run(["sbatch", "--parsable", "-p", "urgent", "-c", str(cpus), "--mem=100M",
                             "-o", str(tmp_path / "urgent.out"), "--wrap", "sleep 3"],
                            capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    waiter.join(timeout=400)
    assert not waiter.is_alive() and "error" not in outcome, outcome
    assert outcome["info"]["status"] == "completed" and outcome["info"]["job_id"] == job_id
    info = json.loads((out / "run.json").read_text())
    log = (out / "slurm" / f"{job_id}_0_log.err").read_text()

    def accounting():
        return subprocess.run(["sacct", "-j", f"{job_id},{urgent}", "-X", "-n", "-P", "-o", "JobID,State,Start,End"],
                              capture_output=True, text=True, timeout=30).stdout

    assert info["resumed"] is True, f"the cell was not preempted mid-run: sacct {accounting()!r}, log:\n{log[-2000:]}"
    assert "this job is preempted" in log and "resumes from the checkpoint.pt just written" in log, log[-2000:]
    # Accounting reaches slurmdbd asynchronously: poll until the urgent job's line is final.
    wait_until(lambda: f"{urgent}|COMPLETED|" in accounting(), 30, "sacct COMPLETED for the urgent job")
    assert_same_tables(tmp_path / "whole", out)


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
