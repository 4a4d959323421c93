"""Workers that run many cells in one process (issue 23, ``afl.cluster.worker``): a cell run by a
shared worker, after other cells, writes the tables ``afl train`` writes alone in a fresh process
with the same threads, bit for bit; a cell that raises, or kills its worker, fails alone; a pool
asked to save (SLURM's USR2) leaves each running cell a checkpoint it resumes from, to the tables of
the uninterrupted run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import REPO, TINY, assert_same_tables, wait_until

from afl.cluster.array import CellRun
from afl.cluster.worker import LOG, Pool
from afl.config import config_hash, load_config, to_dict


def cell(tmp_path: Path, name: str, raw, sets=()) -> dict:
    cfg = load_config(raw, list(sets))
    return CellRun(name, str(tmp_path / name), to_dict(cfg), config_hash(cfg)).as_task()


def alone(c: dict, out: Path) -> None:
    """``afl train`` of the cell in a fresh process with one torch thread (a worker's threads here)."""
    import yaml

    config = out.with_suffix(".yaml")
    config.write_text(yaml.safe_dump(c["config"]))
    result = subprocess.run([sys.executable, "-m", "afl.cli", "train", str(config), "--out", str(out), "--quiet"],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr


def mnist(tmp_path, name, root, *sets) -> dict:
    return cell(tmp_path, name, REPO / "config/runs/mnist-small.yaml",
                [f"data.root={root}", "data.train_subset=3000", "data.test_subset=500", "run.rounds=6",
                 "run.eval_every=2", *sets])


def test_cells_sharing_one_worker_write_the_tables_of_afl_train_alone(tmp_path, shared_data_root):
    # Three cells on one worker: two MNIST cells (the second reads the dataset the first cached)
    # of other seeds and rules, and a synthetic one; the second MNIST cell also samples.
    cells = [mnist(tmp_path, "a", shared_data_root, "seed=3", "algorithm.name=fedbuff"),
             mnist(tmp_path, "b", shared_data_root, "seed=4", "run.sampling_draws=50", "run.grad_norm_samples=200"),
             cell(tmp_path, "c", {**TINY, "seed": 2})]
    ended = []
    assert Pool(1, 1).run(cells, lambda c, error: ended.append((c["name"], error))) == []
    assert ended == [("a", None), ("b", None), ("c", None)]
    for c in cells:
        alone(c, tmp_path / f"alone-{c['name']}")
        assert_same_tables(tmp_path / f"alone-{c['name']}", Path(c["out"]))
    log = (tmp_path / "b" / LOG).read_text()
    assert "1 torch threads" in log and "afl worker: b: completed" in log
    # The three ran in one process: one worker pid in their logs.
    pids = {line.split()[2] for c in cells for line in (Path(c["out"]) / LOG).read_text().splitlines()
            if line.startswith("=== afl worker")}
    assert len(pids) == 1


def test_a_cell_that_raises_or_kills_its_worker_fails_alone(tmp_path, shared_data_root):
    trace = tmp_path / "none.csv"  # there when the cell is planned, gone when it runs
    trace.write_text("client,rate\n" + "".join(f"{i},1\n" for i in range(4)))
    bad = cell(tmp_path, "bad", {**TINY, "timing": {"rates": {"kind": "trace", "path": str(trace)}}})
    trace.unlink()
    long = mnist(tmp_path, "long", shared_data_root, "run.rounds=400")
    good = cell(tmp_path, "good", TINY)
    pool, ended = Pool(1, 1), []

    def kill_the_long_cells_worker():
        wait_until(lambda: "long" in (tmp_path / "long" / LOG).read_text() if (tmp_path / "long" / LOG).exists()
                   else False, 120, "the long cell to start")
        time.sleep(1.0)
        os.kill(pool._running[0].process.pid, 9)

    killer = threading.Thread(target=kill_the_long_cells_worker)
    killer.start()
    failed = pool.run([bad, long, good], lambda c, error: ended.append((c["name"], error)))
    killer.join()
    assert failed == ["bad", "long"]
    assert ended[0] == ("bad", f"timing.rates.path: cannot read {tmp_path / 'none.csv'} (No such file or directory); "
                               "fix: give a readable CSV file")
    assert ended[1] == ("long", "its worker process died (killed by signal 9)")
    assert ended[2] == ("good", None) and (tmp_path / "good" / "run.json").exists()
    assert "afl: error: timing.rates.path" in (tmp_path / "bad" / LOG).read_text()


def test_a_saved_cell_resumes_to_the_tables_of_the_uninterrupted_run(tmp_path, shared_data_root):
    c = mnist(tmp_path, "c", shared_data_root, "run.rounds=60", "run.checkpoint_every=1")
    pool = Pool(1, 1)
    runner = threading.Thread(target=pool.run, args=([c],))
    runner.start()
    wait_until(lambda: (tmp_path / "c" / "checkpoint.pt").exists(), 120, "a first checkpoint")
    assert pool.save() == 1
    runner.join(timeout=120)
    assert not runner.is_alive() and not (tmp_path / "c" / "run.json").exists()
    assert "asked to save" in (tmp_path / "c" / LOG).read_text()
    assert Pool(1, 1).run([c]) == []
    assert '"resumed": true' in (tmp_path / "c" / "run.json").read_text()
    alone(c, tmp_path / "alone")
    assert_same_tables(tmp_path / "alone", tmp_path / "c")
