"""The workflow (issues 3 and 14) through `snakemake --profile slurm` on a real SLURM (e.g. `bash
cluster/local-slurm.sh up`): an experiment's cells run as one SLURM job array waited for by one
process; a bad cell stops the workflow before any submission; a failing cell reports its array
task's state and its own log tail while the other cells finish, and a rerun runs only it; the
waiting process killed mid-run and the workflow rerun re-attaches to the array without
submitting again; `cells_per_job: 2` gives the tables of `cells_per_job: 1`; `afl launch` of one
cell on SLURM requeues and resumes after USR2.

The `slurm` profile is installed by `make profile` into a private XDG_CONFIG_HOME, as `make setup`
installs it for the user. Skipped when no cluster answers, unless AFL_REQUIRE_SLURM=1 (CI).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pandas as pd
import pytest
from helpers import (REPO, SLURM_PARTITION, TINY, assert_same_tables, error_lines, recorded_arrays, snakemake,
                     wait_until, write_yaml)

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


def sacct(job_id: str) -> dict[str, tuple[str, str]]:
    """{JobID: (job name, state)} of a job or array's allocations, once accounting has their final states."""
    def final():
        out = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "JobID,JobName%300,State"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.split()
        rows = {r.split("|")[0]: tuple(r.split("|")[1:]) for r in out}
        return rows if rows and all(st not in ("PENDING", "RUNNING", "COMPLETING") for _, st in rows.values()) else None
    return wait_until(final, 60, f"the final sacct states of job {job_id}")


def cell_dirs(experiment_dir: Path) -> list[Path]:
    return sorted(p for p in experiment_dir.iterdir() if p.is_dir() and p.name not in ("tables", "slurm"))


def workflow(tmp_path: Path, experiments: dict, figures: dict | None = None, slurm: dict | None = None) -> Path:
    return write_yaml(tmp_path / "wf.yaml", {"slurm": {**SLURM, **(slurm or {})}, "experiments": experiments,
                                              "figures": figures or {}})


def test_grid_runs_as_one_slurm_array(tmp_path: Path, profile_env: dict) -> None:
    base = write_yaml(tmp_path / "base.yaml", TINY)
    experiment = f"e{uuid.uuid4().hex[:8]}"
    wf = workflow(tmp_path, {experiment: {"config": str(base), "grid": {"algorithm.name": ["afl", "sfl"],
                                                                        "seed": [0, 1]}}},
                  {"curves": {"kind": "curves", "experiment": experiment},
                   "staleness": {"kind": "staleness", "experiment": experiment}}, slurm={"array_parallelism": 2})
    dry = snakemake(tmp_path, "--configfile", str(wf), "-n", profile="slurm", env=profile_env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"rule submit_{experiment}:" in dry.stdout and "at most 4 array tasks" in dry.stderr
    planned = re.search(r"rule submit_\w+:\n\s+output: (.*)\n", dry.stdout).group(1).split(", ")
    assert len(planned) == 4 and all(p.endswith("/launch.json") for p in planned)  # -n lists every cell
    # The aggregation and the figures each take one of the profile's login_node=2 slots; the light
    # waiting process takes none.
    blocks = dict(re.findall(r"rule (\w+):\n((?: {4}.*\n)+)", dry.stdout))
    assert sorted(blocks) == ["aggregate", "all", "figure_curves", "figure_staleness", f"submit_{experiment}"]
    slots = {rule: re.search(r"resources: .*login_node=(\d)", block) for rule, block in blocks.items()}
    assert {rule for rule, found in slots.items() if found and found.group(1) == "1"} == {
        "aggregate", "figure_curves", "figure_staleness"}, dry.stdout

    result = snakemake(tmp_path, "--configfile", str(wf), profile="slurm", env=profile_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "executor slurm" in result.stderr
    assert 'Provided resources: login_node=Resource("login_node", 2)' in result.stderr  # the profile's limit
    folder = tmp_path / "results" / experiment
    (array,) = recorded_arrays(folder / "slurm")
    cells = cell_dirs(folder)
    assert [f"results/{experiment}/{c.name}/launch.json" for c in cells] == sorted(planned)
    assert sacct(array["job_id"]) == {f"{array['job_id']}_{i}": (experiment, "COMPLETED") for i in range(4)}
    script = (folder / "slurm" / f"{array['job_id']}_submission.sh").read_text()
    assert "#SBATCH --array=0-3%2\n" in script  # array_parallelism: at most 2 tasks at once
    token = json.loads((folder / "slurm" / "array.json").read_text())  # the token is gone once recorded
    assert "submitting" not in token and re.search(r"#SBATCH --comment=afl:[0-9a-f]{32}\n", script), script
    for cell in cells:
        record = json.loads((cell / "launch.json").read_text())
        assert record["executor"] == "slurm" and record["status"] == "completed"
        assert record["job_id"].startswith(f"{array['job_id']}_")
        assert array["tasks"][record["job_id"]] == [f"{experiment}:{cell.name}"]
        assert json.loads((cell / "run.json").read_text())["slurm_job"] == record["job_id"]
        assert (folder / "slurm" / f"{record['job_id']}_0_log.err").is_file()
        assert "completed" in (cell / "train.log").read_text()
    for table in ("runs", "evals", "updates", "clients"):
        assert (folder / "tables" / f"{table}.parquet").is_file()
    for figure in ("curves", "staleness"):
        assert (tmp_path / "results" / "figures" / f"{figure}.png").is_file()


def test_two_stages_submit_the_tuning_cells_then_the_chosen_evaluation_cells(tmp_path: Path, profile_env: dict) -> None:
    """docs/comparing.md on SLURM: one array of the tuning seeds' cells (folder slurm-tuning), the
    choice on the login node, then one array of the evaluation cells at the chosen steps (slurm)."""
    base = write_yaml(tmp_path / "base.yaml", {**TINY, "run": {**TINY["run"], "grad_norm_samples": 50}})
    experiment = f"e{uuid.uuid4().hex[:8]}"
    wf = workflow(tmp_path, {experiment: {"config": str(base), "grid": {"client.lr": [0.01, 0.5], "seed": [0, 100]}}},
                  {"target": {"kind": "target", "experiment": experiment, "metric": "grad_norm_sq", "target": 0.5,
                              "x_key": "algorithm.concurrency", "hue": ["algorithm.name"], "tune": "client.lr",
                              "tuning_seeds": [100]}})
    dry = snakemake(tmp_path, "--configfile", str(wf), "-n", profile="slurm", env=profile_env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "at most 4 array tasks" in dry.stderr and "2 of their cells only if chosen" in dry.stderr
    assert {f"submit_{experiment}_tuning", "choose", f"submit_{experiment}"} <= set(re.findall(r"rule (\w+):", dry.stdout))
    result = snakemake(tmp_path, "--configfile", str(wf), profile="slurm", env=profile_env)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = tmp_path / "results" / experiment
    (tuning,) = recorded_arrays(folder / "slurm-tuning")
    (evaluation,) = recorded_arrays(folder / "slurm")
    chosen = json.loads((folder / "chosen.json").read_text())["cells"]
    assert len(tuning["tasks"]) == 2 and len(chosen) == 1 and "seed=0" in chosen[0]
    assert list(evaluation["tasks"].values()) == [[f"{experiment}:{chosen[0]}"]]
    assert json.loads((folder / "evaluation.json").read_text()) == {"cells": chosen}
    runs = pd.read_parquet(folder / "tables" / "runs.parquet")
    assert len(runs) == 3 and (runs["status"] == "completed").all()
    assert (tmp_path / "results" / "figures" / "target.png").is_file()


def test_bad_cell_stops_the_workflow_before_any_submission(tmp_path: Path, profile_env: dict) -> None:
    base = write_yaml(tmp_path / "base.yaml", TINY)
    experiment = f"e{uuid.uuid4().hex[:8]}"
    wf = workflow(tmp_path, {experiment: {"config": str(base), "grid": {"algorithm.name": ["afl", "sfl"],
                                                                        "algorithm.staleness.a": [0.5]}}})
    result = snakemake(tmp_path, "--configfile", str(wf), profile="slurm", env=profile_env)
    assert result.returncode != 0
    assert error_lines(result) == [
        f"afl pipeline: error: experiments.{experiment} (cell algorithm.name=\"sfl\", algorithm.staleness.a=0.5): "
        "algorithm.staleness.a: 'constant' takes no parameters; fix: remove algorithm.staleness.a"]
    assert not (tmp_path / "results").exists()
    names = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobName%300", "-S", "now-1hours"],
                           capture_output=True, text=True, timeout=30, check=True).stdout.split()
    assert experiment not in names


def test_bad_slurm_setting_stops_the_workflow_before_any_submission(tmp_path: Path, profile_env: dict) -> None:
    base = write_yaml(tmp_path / "base.yaml", TINY)
    wf = workflow(tmp_path, {"e": {"config": str(base), "slurm": {"cells_per_job": 0}}})
    result = snakemake(tmp_path, "--configfile", str(wf), profile="slurm", env=profile_env)
    assert result.returncode != 0
    assert error_lines(result) == ["afl pipeline: error: experiments.e.slurm.cells_per_job: 0 is less than the "
                                   "minimum of 1; fix: see workflow/schemas/config.schema.yaml"]
    assert not (tmp_path / "results").exists()


def test_failed_cell_reports_state_and_log_and_rerun_retries_only_it(tmp_path: Path, profile_env: dict,
                                                                   shared_data_root: Path) -> None:
    base = write_yaml(tmp_path / "base.yaml", {**TINY, "model": {"name": "logreg"}, "run": {"rounds": 20}})
    root = tmp_path / "data"  # empty: the MNIST cell's run fails when it loads its data (no check can tell before)
    root.mkdir()
    wf = workflow(tmp_path, {"e": {"config": str(base), "variants": [
        {"data.name": "synthetic"},
        {"data.name": "mnist", "data.root": str(root), "data.train_subset": 400, "data.test_subset": 100}]}})
    first = snakemake(tmp_path, "--configfile", str(wf), profile="slurm", env=profile_env)
    output = first.stdout + first.stderr
    assert first.returncode != 0
    folder = tmp_path / "results" / "e"
    good, bad = (next(folder.glob(f"data.name={k}__*")) for k in ("synthetic", "mnist"))
    (array,) = recorded_arrays(folder / "slurm")
    task = next(t for t, names in array["tasks"].items() if names == [f"e:{bad.name}"])
    head = re.search(rf"afl: error: cell e:{re.escape(bad.name)}: SLURM array task {task} ended (\w+) "
                     r"\(exit code 1:0\); fix: .*", output)
    assert head and head.group(1) == "FAILED", output
    assert "--- last " in output and f"lines of {bad / 'train.log'}" in output
    assert f"MNIST not found under {root / 'MNIST' / 'raw'}" in output
    assert "1 of 2 cells of e failed" in output
    assert sacct(task)[task][1] == "FAILED"
    good_job = json.loads((good / "run.json").read_text())["slurm_job"]
    assert sacct(good_job)[good_job][1] == "COMPLETED"
    assert not (bad / "run.json").exists() or json.loads((bad / "run.json").read_text())["status"] != "completed"

    (root / "MNIST").symlink_to(shared_data_root / "MNIST")
    second = snakemake(tmp_path, "--configfile", str(wf), profile="slurm", env=profile_env)
    assert second.returncode == 0, second.stdout + second.stderr
    log = (tmp_path / "results" / "logs" / "submit" / "e.log").read_text()
    assert "submitted 1 cells as 1 SLURM tasks" in log, log
    assert json.loads((good / "launch.json").read_text())["job_id"] == good_job  # not run again
    retried = json.loads((bad / "launch.json").read_text())["job_id"]
    assert retried.split("_")[0] != array["job_id"] and sacct(retried)[retried][1] == "COMPLETED"
    assert json.loads((bad / "run.json").read_text())["slurm_job"] == retried


def test_killed_waiter_reattaches_to_its_array_without_submitting_again(tmp_path: Path, profile_env: dict) -> None:
    # Two cells of ~40 s each: the waiting process is killed while they run, and the rerun finds them running.
    base = write_yaml(tmp_path / "base.yaml", {"data": {"name": "synthetic", "num_clients": 6},
                                               "model": {"name": "logreg"}, "client": {"steps": 20, "batch_size": 16},
                                               "algorithm": {"name": "fedbuff", "concurrency": 3, "buffer_size": 2},
                                               "run": {"updates": 7200, "eval_every": 1200}})
    wf = workflow(tmp_path, {"e": {"config": str(base), "grid": {"seed": [0, 1]}}})
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
               str(tmp_path), "--profile", "slurm", "--configfile", str(wf)]
    # The login session dies: Snakemake and its waiting process are killed at once (SIGKILL, no cleanup).
    first = subprocess.Popen(command, env=profile_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    folder = tmp_path / "results" / "e"
    try:
        (array,) = recorded_arrays(folder / "slurm", 120)
        wait_until(lambda: any("RUNNING" in st for _, st in _states(array["job_id"])), 60, "a running task")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert not all((c / "launch.json").exists() for c in cell_dirs(folder))
    unlock = subprocess.run([*command, "--unlock"], env=profile_env, capture_output=True, text=True, timeout=120)
    assert unlock.returncode == 0, unlock.stderr
    second = subprocess.run(command, env=profile_env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    log = (tmp_path / "results" / "logs" / "submit" / "e.log").read_text()
    # Both tasks still run when the rerun starts (~40 s cells); a task that has just ended counts as finished.
    attached = re.search(rf"re-attached to (\d) queued or running tasks of {array['job_id']} \((\d) cells\)", log)
    assert attached and attached.group(1) == attached.group(2) and int(attached.group(1)) >= 1, log
    assert "submitted" not in log
    assert recorded_arrays(folder / "slurm") == [array]
    for cell in cell_dirs(folder):
        record = json.loads((cell / "launch.json").read_text())
        assert record["status"] == "completed" and record["job_id"].split("_")[0] == array["job_id"]
        assert json.loads((cell / "run.json").read_text())["resumed"] is False  # ran once, never twice


def _states(job_id: str) -> list[tuple[str, str]]:
    out = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "JobID,State"],
                         capture_output=True, text=True, timeout=30).stdout.split()
    return [tuple(r.split("|")) for r in out]


def test_two_cells_per_job_give_the_tables_of_one(tmp_path: Path, profile_env: dict) -> None:
    base = write_yaml(tmp_path / "base.yaml", TINY)
    experiments = {"e": {"config": str(base), "grid": {"algorithm.name": ["afl", "fedbuff"], "seed": [0, 1]}}}
    folders = {}
    for k in (1, 2):
        where = tmp_path / f"k{k}"
        where.mkdir()
        # cpus = k: every cell trains on one torch thread either way (cpus // cells_per_job).
        wf = workflow(where, experiments, slurm={"cells_per_job": k, "cpus": k})
        result = snakemake(where, "--configfile", str(wf), profile="slurm", env=profile_env)
        assert result.returncode == 0, result.stdout + result.stderr
        folders[k] = where / "results" / "e"
    (array,) = recorded_arrays(folders[2] / "slurm")
    assert sorted(len(names) for names in array["tasks"].values()) == [2, 2]
    one, two = cell_dirs(folders[1]), cell_dirs(folders[2])
    assert [c.name for c in one] == [c.name for c in two] and len(one) == 4
    for a, b in zip(one, two):
        assert_same_tables(a, b)
        assert "1 torch threads" in (b / "train.log").read_text()


def test_preempted_cell_requeues_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    cfg = load_config({**TINY, "client": {"steps": 20, "batch_size": 16},
                       "run": {"rounds": 300, "eval_every": 100, "checkpoint_every": 50}})
    out = tmp_path / "cell"
    slurm = slurm_settings(DEFAULT_SLURM, SLURM)
    outcome = {}
    waiter = threading.Thread(target=lambda: outcome.update(launch(cfg, out, "preempted-cell", "slurm", slurm)))
    waiter.start()
    ((job_id, names),) = recorded_arrays(out / "slurm")[0]["tasks"].items()
    assert names == ["preempted-cell"] and "_" not in job_id  # one cell: a plain job, not an array
    wait_until(lambda: (out / "checkpoint.pt").exists(), 120, "a first checkpoint", 0.2)
    # What a preemption (or the time limit) does: USR2; CellTask.checkpoint has the running cell
    # save at once, then resubmits the same task.
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
    waiter.join(timeout=300)
    assert not waiter.is_alive()
    assert outcome["status"] == "completed" and outcome["job_id"] == job_id
    info = json.loads((out / "run.json").read_text())
    assert info["resumed"] is True and info["updates"] == 300
    log = (out / "slurm" / f"{job_id}_0_log.err").read_text()
    assert "afl task: USR2: 1 running cells saved; requeueing this task" in log, log
    assert "preempted-cell: asked to save; it resumes from the checkpoint.pt just written" in (out / "train.log").read_text()
    assert not (out / "checkpoint.pt").exists()


def two_cells(tmp_path: Path) -> list:
    """Two cells of a few seconds each (seeds 0 and 1), as the array launcher takes them."""
    from afl.cluster.array import CellRun
    from afl.config import config_hash, to_dict

    raw = {"data": {"name": "synthetic", "num_clients": 6}, "model": {"name": "logreg"},
           "client": {"steps": 20, "batch_size": 16}, "algorithm": {"name": "fedbuff", "concurrency": 3,
                                                                   "buffer_size": 2},
           "run": {"updates": 2400, "eval_every": 400}}
    cfgs = [load_config({**raw, "seed": seed}) for seed in (0, 1)]
    return [CellRun(f"c:{seed}", str(tmp_path / f"cell{seed}"), to_dict(cfg), config_hash(cfg))
            for seed, cfg in enumerate(cfgs)]


def test_a_task_cancelled_without_a_result_is_reported_from_sacct(tmp_path: Path, monkeypatch) -> None:
    from afl.cluster import array

    # Asked sooner than on a cluster: sacct every 2 s, a missing result file is final after 5 s.
    monkeypatch.setattr(array, "POLL_S", 2)
    monkeypatch.setattr(array, "LATE_S", 5)
    cells = two_cells(tmp_path)
    records, outcome = {}, {}
    waiter = threading.Thread(target=lambda: outcome.update(failures=array.run_array(
        cells, tmp_path / "slurm", "cancelled", slurm_settings(DEFAULT_SLURM, SLURM),
        lambda c, r: records.update({c.name: r}))))
    waiter.start()
    (entry,) = recorded_arrays(tmp_path / "slurm")
    doomed = f"{entry['job_id']}_1"
    wait_until(lambda: (tmp_path / "cell1" / "train.log").exists(), 120, "the second cell to start")
    subprocess.run(["scancel", doomed], check=True, timeout=30)
    waiter.join(timeout=300)
    assert not waiter.is_alive()
    assert list(records) == ["c:0"] and records["c:0"]["status"] == "completed"
    (report,) = outcome["failures"]
    assert report.startswith(f"cell c:1: SLURM array task {doomed} ended CANCELLED (exit code "), report
    assert f"lines of {tmp_path / 'cell1' / 'train.log'}" in report


def test_a_waiter_killed_between_sbatch_and_its_record_finds_its_array_by_comment(tmp_path: Path, monkeypatch,
                                                                                  capfd) -> None:
    """Killed after sbatch returned but before array.json named the array: the rerun must find the
    array (its SLURM comment carries the token recorded before sbatch) and not submit it again."""
    from afl.cluster import array

    class Killed(BaseException):
        pass

    cells = two_cells(tmp_path)
    slurm, name = slurm_settings(DEFAULT_SLURM, SLURM), f"k{uuid.uuid4().hex[:8]}"
    real_write = array.write_json

    def dies_after_sbatch(obj, path):
        if "submitting" not in obj:
            raise Killed
        real_write(obj, path)

    monkeypatch.setattr(array, "write_json", dies_after_sbatch)
    with pytest.raises(Killed):
        array.run_array(cells, tmp_path / "slurm", name, slurm, lambda c, r: None)
    monkeypatch.setattr(array, "write_json", real_write)
    record = json.loads((tmp_path / "slurm" / "array.json").read_text())
    assert record["arrays"] == [] and len(record["submitting"]["tasks"]) == 2
    capfd.readouterr()
    records = {}
    assert array.run_array(cells, tmp_path / "slurm", name, slurm, lambda c, r: records.update({c.name: r})) == []
    err = capfd.readouterr().err
    (recovered,) = recorded_arrays(tmp_path / "slurm")
    assert re.search(rf"re-attached to [12] queued or running tasks of {recovered['job_id']} \([12] cells\)", err), err
    assert "submitted" not in err, err
    assert sorted(recovered["tasks"]) == [f"{recovered['job_id']}_0", f"{recovered['job_id']}_1"]
    assert {r["job_id"] for r in records.values()} == set(recovered["tasks"])
    assert all(r["status"] == "completed" for r in records.values()) and len(records) == 2


def test_a_rule_from_outside_afl_runs_as_a_slurm_array(tmp_path: Path, profile_env: dict) -> None:
    """examples/custom_rule's trimmed mean, named by import path in one cell and by installed entry
    point in the other (with its model and dataset by entry point too), the package on PYTHONPATH
    only: the workflow validates the cells on the login node and runs them as one array (issue 24)."""
    example = REPO / "examples" / "custom_rule"
    site = tmp_path / "site"  # what `pip install ./examples/custom_rule` leaves for importlib.metadata
    (site / "my_afl_rules-0.1.0.dist-info").mkdir(parents=True)
    (site / "my_afl_rules-0.1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: my-afl-rules\nVersion: 0.1.0\n")
    (site / "my_afl_rules-0.1.0.dist-info" / "entry_points.txt").write_text(
        "[afl.rules]\ntrimmed_mean = my_afl_rules.rules:TRIMMED_MEAN\n[afl.models]\nwide_mlp = my_afl_rules.models:wide_mlp\n"
        "[afl.datasets]\nblobs = my_afl_rules.data:blobs\n")
    experiment = f"e{uuid.uuid4().hex[:8]}"
    wf = workflow(tmp_path, {experiment: {"config": str(example / "config.yaml"), "set": {"run.rounds": 5},
                                          "variants": [{"algorithm.name": "my_afl_rules.rules:TRIMMED_MEAN"},
                                                       {"algorithm.name": "trimmed_mean", "model.name": "wide_mlp",
                                                        "data.name": "blobs"}]}})
    env = {**profile_env, "PYTHONPATH": os.pathsep.join([str(example), str(site)])}
    result = snakemake(tmp_path, "--configfile", str(wf), profile="slurm", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = tmp_path / "results" / experiment
    (array,) = recorded_arrays(folder / "slurm")
    assert sacct(array["job_id"]) == {f"{array['job_id']}_{i}": (experiment, "COMPLETED") for i in range(2)}
    runs = [json.loads((cell / "run.json").read_text()) for cell in cell_dirs(folder)]
    assert all(run["status"] == "completed" for run in runs)
    names = sorted((run["config"]["algorithm"]["name"], run["config"]["model"]["name"], run["config"]["data"]["name"])
                   for run in runs)
    assert names == [("my_afl_rules.rules:TRIMMED_MEAN", "logreg", "synthetic"), ("trimmed_mean", "wide_mlp", "blobs")]
    without = snakemake(tmp_path / "bare", "--configfile", str(wf), profile="slurm", env=profile_env)
    assert without.returncode != 0 and "algorithm.name: " in without.stderr, without.stderr
    assert not (tmp_path / "bare" / "results" / experiment / "slurm").exists()  # nothing submitted
