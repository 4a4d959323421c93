"""The workflow (issue 3) through `snakemake --profile slurm` on a real SLURM (e.g. `bash
cluster/local-slurm.sh up`): cells run as SLURM jobs named after them, with their logs beside
their results; a bad cell stops the workflow before any submission; a failing job reports its
SLURM state and log tail while the other cells finish, and a rerun runs only the failed cell; a
preempted cell's job is requeued and the run resumes from its checkpoint.

The `slurm` profile is installed by `make profile` into a private XDG_CONFIG_HOME, as `make setup`
installs it for the user. Skipped when no cluster answers, unless AFL_REQUIRE_SLURM=1 (CI).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from helpers import REPO, SLURM_PARTITION, TINY, error_lines, snakemake, train_jobs, wait_until, write_yaml

from afl.config import load_config
from afl.cluster.launch import DEFAULT_SLURM, launch
from afl.cluster.pipeline import slurm_settings

# Small jobs on the one-node test cluster (the defaults ask for an A100 each).
SLURM = {"partition": SLURM_PARTITION, "gpus": 0, "cpus": 1, "mem_gb": 1, "time_min": 30}

pytestmark = pytest.mark.usefixtures("slurm_cluster")


@pytest.fixture(scope="module")
def profile_env(tmp_path_factory) -> dict:
    """An environment whose Snakemake finds the `slurm` profile that `make profile` installed."""
    config_home = tmp_path_factory.mktemp("xdg")
    subprocess.run(["make", "-s", "-C", str(REPO), "profile", f"PROFILE_DIR={config_home / 'snakemake'}"],
                   check=True, capture_output=True, timeout=60)
    assert (config_home / "snakemake" / "slurm" / "config.yaml").is_file()
    return {**os.environ, "XDG_CONFIG_HOME": str(config_home)}


def sacct(job_id: str) -> tuple[str, str]:
    """(job name, state) of a job's allocation, once accounting has its final state."""
    def final():
        out = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "JobName%300,State"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        return out if out and out.split("|")[1] not in ("PENDING", "RUNNING", "COMPLETING") else None
    name, state = wait_until(final, 60, f"the final sacct state of job {job_id}").split("|")
    return name, state


def job_ids(cell_dir: Path) -> list[str]:
    """The SLURM jobs submitted for a cell, from submitit's files in its slurm/ folder."""
    return sorted((p.name.split("_")[0] for p in (cell_dir / "slurm").glob("*_submission.sh")), key=int)


def test_two_cell_grid_runs_as_slurm_jobs(tmp_path: Path, profile_env: dict) -> None:
    base = write_yaml(tmp_path / "base.yaml", TINY)
    experiment = f"e{uuid.uuid4().hex[:8]}"
    wf = write_yaml(tmp_path / "wf.yaml", {
        "slurm": SLURM,
        "experiments": {experiment: {"config": str(base), "grid": {"algorithm.name": ["afl", "sfl"]}}},
        "figures": {"curves": {"kind": "curves", "experiment": experiment},
                    "staleness": {"kind": "staleness", "experiment": experiment}},
    })
    result = snakemake(tmp_path, "--configfile", str(wf), profile="slurm", env=profile_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "executor slurm" in result.stderr

    cells = sorted(p for p in (tmp_path / "results" / experiment).iterdir() if p.name != "tables")
    assert [c.name.split("__")[0] for c in cells] == ["algorithm.name=afl", "algorithm.name=sfl"]
    for cell in cells:
        record = json.loads((cell / "launch.json").read_text())
        assert record["executor"] == "slurm" and record["status"] == "completed"
        assert job_ids(cell) == [record["job_id"]]
        assert sacct(record["job_id"]) == (f"{experiment}:{cell.name}", "COMPLETED")
        assert (cell / "slurm" / f"{record['job_id']}_0_log.err").is_file()
        assert json.loads((cell / "run.json").read_text())["host"]
    for table in ("runs", "evals", "updates", "clients"):
        assert (tmp_path / "results" / experiment / "tables" / f"{table}.parquet").is_file()
    for figure in ("curves", "staleness"):
        assert (tmp_path / "results" / "figures" / f"{figure}.png").is_file()


def test_bad_cell_stops_the_workflow_before_any_submission(tmp_path: Path, profile_env: dict) -> None:
    base = write_yaml(tmp_path / "base.yaml", TINY)
    experiment = f"e{uuid.uuid4().hex[:8]}"
    wf = write_yaml(tmp_path / "wf.yaml", {
        "slurm": SLURM,
        "experiments": {experiment: {"config": str(base), "grid": {"algorithm.name": ["afl", "sfl"],
                                                                   "algorithm.staleness.a": [0.5]}}},
    })
    result = snakemake(tmp_path, "--configfile", str(wf), profile="slurm", env=profile_env)
    assert result.returncode != 0
    assert error_lines(result) == [
        f"afl pipeline: error: experiments.{experiment} (cell algorithm.name=\"sfl\", algorithm.staleness.a=0.5): "
        "algorithm.staleness.a: 'constant' takes no parameters; fix: remove algorithm.staleness.a"]
    assert not (tmp_path / "results").exists()
    names = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobName%300", "-S", "now-1hours"],
                           capture_output=True, text=True, timeout=30, check=True).stdout.split()
    assert not [n for n in names if n.startswith(f"{experiment}:")]


def test_failed_job_reports_state_and_log_and_rerun_retries_only_it(tmp_path: Path, profile_env: dict) -> None:
    base = write_yaml(tmp_path / "base.yaml", {**TINY, "run": {"rounds": 20, "workload": "none"}})
    rates = tmp_path / "rates.csv"  # missing: the trace cell's job fails when it reads it
    wf = write_yaml(tmp_path / "wf.yaml", {
        "slurm": SLURM,
        "experiments": {"e": {"config": str(base), "set": {"timing.rates.path": str(rates)},
                              "grid": {"timing.rates.kind": ["constant", "trace"]}}},
    })
    first = snakemake(tmp_path, "--configfile", str(wf), "--keep-going", profile="slurm", env=profile_env)
    output = first.stdout + first.stderr
    assert first.returncode != 0
    assert train_jobs(output) == 2
    good, bad = (next((tmp_path / "results" / "e").glob(f"timing.rates.kind={k}__*")) for k in ("constant", "trace"))
    (failed_job,) = job_ids(bad)
    head = re.search(rf"afl: error: cell e:{re.escape(bad.name)}: SLURM job {failed_job} ended (\w+) "
                     r"\(exit code 1:0\); fix: .*", output)
    assert head and head.group(1) == "FAILED", output
    assert f"--- last 25 lines of {bad / 'slurm' / f'{failed_job}_0_log.err'}" in output
    assert f"timing.rates.path: cannot read {rates} (No such file or directory)" in output
    assert sacct(failed_job)[1] == "FAILED"
    assert json.loads((good / "launch.json").read_text())["status"] == "completed"
    assert not (bad / "launch.json").exists()

    rates.write_text("client,rate\n0,1\n1,1\n2,0.5\n3,0.2\n")
    second = snakemake(tmp_path, "--configfile", str(wf), "--keep-going", profile="slurm", env=profile_env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert train_jobs(second.stdout + second.stderr) == 1
    assert len(job_ids(good)) == 1
    retried = job_ids(bad)
    assert retried[0] == failed_job and len(retried) == 2
    assert sacct(retried[1])[1] == "COMPLETED"
    assert json.loads((bad / "launch.json").read_text())["job_id"] == retried[1]


def test_preempted_cell_requeues_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    cfg = load_config({**TINY, "client": {"steps": 20, "batch_size": 16},
                       "run": {"rounds": 300, "eval_every": 100, "checkpoint_every": 50}})
    out = tmp_path / "cell"
    slurm = slurm_settings(DEFAULT_SLURM, SLURM)
    outcome = {}
    waiter = threading.Thread(target=lambda: outcome.update(launch(cfg, out, "preempted-cell", "slurm", slurm)))
    waiter.start()
    job_id = wait_until(lambda: (out / "slurm" / "job_id").exists() and (out / "slurm" / "job_id").read_text().strip(),
                        60, "the job to be submitted")
    wait_until(lambda: (out / "checkpoint.pt").exists(), 120, "a first checkpoint", 0.2)
    # What a preemption (or the time limit) does: USR2; TrainCell.checkpoint has the run save at
    # once, then resubmits the same call.
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
    waiter.join(timeout=300)
    assert not waiter.is_alive()
    assert outcome["status"] == "completed" and outcome["job_id"] == job_id
    info = json.loads((out / "run.json").read_text())
    assert info["resumed"] is True and info["updates"] == 300
    log = (out / "slurm" / f"{job_id}_0_log.err").read_text()
    assert f"afl launch: USR2: requeueing {out}; the run resumes from the checkpoint.pt just written" in log
    assert not (out / "checkpoint.pt").exists()
