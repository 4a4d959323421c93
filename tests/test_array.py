"""The array launcher's pieces that need no SLURM: sacct's lines read by hand, a cell's threads,
and ``CellTask`` run here: its cells train in child processes to the tables of ``afl train`` at
the same threads, a finished cell is skipped, and a failing cell fails the task after the
others finish. (On SLURM: tests/test_pipeline_slurm.py, tests/test_preemption_slurm.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import TINY, assert_same_tables

from afl.cluster.array import CellRun, parse_sacct, state_of, threads_per_cell
from afl.cluster.task import LOG, CellsFailed, CellTask
from afl.config import config_hash, load_config, to_dict
from afl.run.train import train


def test_sacct_lines_expand_pending_ranges_and_keep_the_first_word_of_a_state():
    out = ("41_0|COMPLETED|0:0\n"
           "41_1|CANCELLED by 0|0:15\n"
           "41_[2-4%2]|PENDING|0:0\n"
           "42|FAILED|1:0\n"
           "43_7|RUNNING|0:0\n")
    assert parse_sacct(out) == {"41_0": ("COMPLETED", "0:0"), "41_1": ("CANCELLED", "0:15"),
                                "41_2": ("PENDING", "0:0"), "41_3": ("PENDING", "0:0"), "41_4": ("PENDING", "0:0"),
                                "42": ("FAILED", "1:0"), "43_7": ("RUNNING", "0:0")}
    assert parse_sacct("") == {}


def test_a_task_accounting_does_not_list_yet_takes_its_arrays_bare_record():
    # Seen in CI: just after sbatch, sacct shows the array as "846|PENDING" before its tasks.
    states = parse_sacct("846|PENDING|0:0\n845_0|RUNNING|0:0\n")
    assert state_of(states, "846_1") == ("PENDING", "0:0")
    assert state_of(states, "845_0") == ("RUNNING", "0:0")
    assert state_of(states, "845_1") == ("UNKNOWN", "")


def test_an_unrecorded_submission_is_found_by_its_comment(monkeypatch):
    import subprocess
    from types import SimpleNamespace

    from afl.cluster import array

    lines = ("90_0|afl:t1\n90_1|afl:t1\n91_0|afl:other\n92|my own words afl:t2\n")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: SimpleNamespace(stdout=lines))
    assert array._recover("e", {"token": "t1", "tasks": [["a"], ["b"]]}) == [
        {"job_id": "90", "tasks": {"90_0": ["a"], "90_1": ["b"]}}]
    # A batch of one task is a plain job; the user's own comment comes before the token.
    assert array._recover("e", {"token": "t2", "tasks": [["a", "b"]]}) == [{"job_id": "92", "tasks": {"92": ["a", "b"]}}]
    assert array._recover("e", {"token": "t3", "tasks": [["a"]]}) == []


def test_the_submission_token_goes_in_the_comment_after_the_users_own():
    from afl.cluster.array import executor_parameters
    from afl.cluster.pipeline import DEFAULT_SLURM, slurm_settings

    mine = executor_parameters("e", slurm_settings(DEFAULT_SLURM, {"additional": {"comment": "mine", "gres": "x"}}), "t")
    assert mine["slurm_comment"] == "mine afl:t" and mine["slurm_additional_parameters"] == {"gres": "x"}
    plain = executor_parameters("e", slurm_settings(DEFAULT_SLURM), "t")
    assert plain["slurm_comment"] == "afl:t" and "slurm_additional_parameters" not in plain


def test_a_rerun_reattaches_to_the_tasks_the_controller_still_has_though_accounting_lags(tmp_path, monkeypatch):
    """A rerun soon after the login session died: sacct may not list a queued task yet (seen in CI,
    the cell was submitted a second time); squeue's live view keeps it attached."""
    from afl.cluster import array

    cells = [cell(tmp_path, f"c{i}", {**TINY, "seed": i}) for i in range(3)]
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / array.RECORD).write_text(
        '{"arrays": [{"job_id": "846", "tasks": {"846_0": ["c0"], "846_1": ["c1"], "846_2": ["c2"]}}]}')
    monkeypatch.setattr(array, "sacct_states", lambda ids: {"846_0": ("RUNNING", "0:0"), "846_2": ("FAILED", "1:0")})
    monkeypatch.setattr(array, "queued_states", lambda ids: {"846_1": ("PENDING", "")})
    submitted, waited = [], []
    monkeypatch.setattr(array, "_submit", lambda todo, *a: submitted.extend(todo) or [])
    monkeypatch.setattr(array, "_wait", lambda tasks, *a: waited.extend(tasks) or [])
    assert array.run_array(cells, tmp_path / "slurm", "e", {"cells_per_job": 1, "array_parallelism": 9},
                           lambda c, o: None) == []
    assert sorted(t.job.job_id for t in waited) == ["846_0", "846_1"]
    assert [c.name for c in submitted] == ["c2"]  # its task failed: the cell runs again


@pytest.mark.parametrize(("cpus", "k", "threads"), [(8, 1, 8), (8, 4, 2), (8, 3, 2), (1, 2, 1)])
def test_a_cell_trains_on_the_job_cpus_split_between_its_cells(cpus, k, threads):
    assert threads_per_cell({"cpus": cpus, "cells_per_job": k}) == threads


def cell(tmp_path: Path, name: str, raw: dict) -> CellRun:
    cfg = load_config(raw)
    return CellRun(name, str(tmp_path / name), to_dict(cfg), config_hash(cfg))


def test_a_task_runs_its_cells_in_child_processes_to_the_tables_of_afl_train(tmp_path):
    cells = [cell(tmp_path, f"c{seed}", {**TINY, "seed": seed}) for seed in (0, 1)]
    summary = CellTask([c.as_task() for c in cells], threads=1)()
    assert [summary[c.name]["status"] for c in cells] == ["completed", "completed"]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for c in cells:
            train(load_config(c.config), tmp_path / f"alone-{c.name}", progress=False)
            assert_same_tables(tmp_path / f"alone-{c.name}", Path(c.out))
            assert "1 torch threads" in (Path(c.out) / LOG).read_text()
    finally:
        torch.set_num_threads(previous)
    # Run again (a requeued task): finished cells are skipped, no process started.
    stamp = (Path(cells[0].out) / "run.json").stat().st_mtime_ns
    CellTask([c.as_task() for c in cells], threads=1)()
    assert (Path(cells[0].out) / "run.json").stat().st_mtime_ns == stamp


def test_a_failing_cell_fails_its_task_after_the_other_finishes(tmp_path):
    good = cell(tmp_path, "good", TINY)
    trace = tmp_path / "none.csv"  # there when the cell is planned, gone when it runs
    trace.write_text("client,rate\n" + "".join(f"{i},1\n" for i in range(4)))
    bad = cell(tmp_path, "bad", {**TINY, "timing": {"rates": {"kind": "trace", "path": str(trace)}}})
    trace.unlink()
    with pytest.raises(CellsFailed, match=r"1 of 2 cells failed \(bad\); each cell's output is in its folder's "):
        CellTask([bad.as_task(), good.as_task()], threads=1)()
    assert (Path(good.out) / "run.json").exists()
    assert f"afl: error: timing.rates.path: cannot read {tmp_path / 'none.csv'}" in (Path(bad.out) / LOG).read_text()


def test_an_error_result_left_by_a_requeue_is_stale_until_the_next_attempt_replaces_it(tmp_path, monkeypatch):
    """SLURM requeues a preempted task itself and kills submitit's own `scontrol requeue`: submitit
    records that as the task's error (seen in CI). The waiter must wait for the requeued attempt."""
    import os
    from types import SimpleNamespace

    from submitit.core.utils import cloudpickle_dump

    from afl.cluster import array

    states = {"7_1": ("PENDING", "0:0")}
    monkeypatch.setattr(array, "sacct_states", lambda ids: states)
    result = tmp_path / "7_1_0_result.pkl"
    task = array._Task(SimpleNamespace(job_id="7_1", paths=SimpleNamespace(result_pickle=result)), [])
    assert not array._ended(task)  # no result yet
    cloudpickle_dump(("error", "CalledProcessError: scontrol requeue 7_1 died with SIGTERM"), result)
    assert not array._ended(task) and task.stale == result.stat().st_mtime_ns  # SLURM has it queued again
    states["7_1"] = ("RUNNING", "0:0")
    assert not array._ended(task)  # the same stale file is not read again
    cloudpickle_dump(("success", {}), result)
    os.utime(result, ns=(task.stale + 1, task.stale + 1))  # the next attempt's file, whatever the clock's grain
    assert array._ended(task)
    # A genuine error: SLURM shows the task over (after RUNNING while accounting catches up).
    failed = array._Task(SimpleNamespace(job_id="7_2", paths=SimpleNamespace(result_pickle=tmp_path / "e.pkl")), [])
    cloudpickle_dump(("error", "ValueError"), failed.job.paths.result_pickle)
    states["7_2"] = ("FAILED", "1:0")
    assert array._ended(failed) and failed.stale is None
