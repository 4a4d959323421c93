"""Plain helpers and constants shared by several test modules (fixtures live in conftest.py).

Not a test module: pytest's default ``prepend`` import mode puts ``tests/`` (no ``__init__.py``) on
``sys.path``, so test modules import it as ``from helpers import ...``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# Two speed groups: clients 0..n/2-1 at rate 1, the others five times slower.
TWO_GROUPS = {"kind": "groups", "groups": [{"fraction": 0.5, "rate": 1.0}, {"fraction": 0.5, "rate": 0.2}]}


def train_tables(out: Path, raw: dict):
    """``afl train`` of the raw config ``raw`` into ``out``, quietly: ``(cfg, info, updates, evals, clients)``."""
    from afl.config import load_config  # here: the SLURM and workflow helpers above need no torch
    from afl.run.train import train

    cfg = load_config(raw)
    info = train(cfg, out, progress=False)
    return (cfg, info, *(pd.read_parquet(out / name) for name in ("updates.parquet", "evals.parquet", "clients.parquet")))

def assert_same_events(a: tuple, b: tuple) -> None:
    """Two ``train_tables`` results have the same updates, evals and clients tables, bit for bit
    (wall-clock times aside)."""
    for x, y in zip(a[2:], b[2:]):
        pd.testing.assert_frame_equal(x.drop(columns=["wall_time"], errors="ignore"),
                                      y.drop(columns=["wall_time"], errors="ignore"), check_exact=True)


# ---------------------------------------------------------------- SLURM (tests/*_slurm*.py)

SLURM_PARTITION = "debug"  # the partition of the local test cluster (cluster/local-slurm.sh)


def wait_until(cond, timeout_s: float, what: str, interval_s: float = 0.5):
    """Poll ``cond()`` until it is truthy and return its value; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def recorded_arrays(folder: Path, timeout_s: float = 60) -> list[dict]:
    """The arrays (or single jobs) a waiting process recorded in ``folder``'s array.json, once it has
    recorded one (before its sbatch returns, the file holds only the submission's token)."""
    def read():
        try:
            return json.loads((Path(folder) / "array.json").read_text())["arrays"]
        except (OSError, ValueError, KeyError):
            return None
    return wait_until(read, timeout_s, f"an array recorded in {folder}")


# ---------------------------------------------------------------- the workflow (test_pipeline*.py)

# A run of a few seconds: logistic regression on FedProx Synthetic, 4 clients, 2 steps per task.
TINY = {"data": {"name": "synthetic", "num_clients": 4}, "client": {"steps": 2, "batch_size": 16},
        "algorithm": {"concurrency": 2}, "run": {"rounds": 6, "eval_every": 2}}


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def snakemake(workdir: Path, *args: str, profile: str = "local", env: dict | None = None):
    """Snakemake on the repository's Snakefile, with results under ``workdir``."""
    profile_arg = str(REPO / "cluster" / "profiles" / profile) if profile == "local" else profile
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
         "--profile", profile_arg, *args],
        capture_output=True, text=True, timeout=900, env=env,
    )


def train_jobs(output: str) -> int:
    """How many cells a Snakemake run (or dry run) scheduled: the launch.json outputs of its jobs of
    the rules that run cells (run_<experiment> here, submit_<experiment> on SLURM)."""
    cells = 0
    for job in re.split(r"\n(?=(?:local)?rule )", output):
        if re.match(r"(?:local)?rule (?:run|submit)_\w+:", job):
            cells += re.search(r"^\s+output: (.*)$", job, flags=re.MULTILINE).group(1).count("launch.json")
    return cells


def error_lines(result) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("afl pipeline: error:")]


# ---------------------------------------------------------------- a run's tables (test_resume.py, preemption)

TABLES = ("updates.parquet", "evals.parquet", "clients.parquet", "sampling.parquet")
# Differs between any two runs, interrupted or not: the wall clock.
WALL = {"evals.parquet": ["wall_time"]}


class Killed(BaseException):
    """A run killed by the test (a BaseException, so nothing in afl catches it)."""


def train_killed_after(cfg, out: Path, checkpoints: int, monkeypatch) -> None:
    """``afl train`` of ``cfg`` into ``out``, killed right after its ``checkpoints``-th checkpoint."""
    from afl.run import checkpoint  # here: the SLURM and workflow helpers above need no torch
    from afl.run.train import train

    save, calls = checkpoint.save, []

    def save_then_die(state, folder):
        save(state, folder)
        calls.append(1)
        if len(calls) == checkpoints:
            raise Killed

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    try:
        with pytest.raises(Killed):
            train(cfg, out, progress=False)
    finally:
        monkeypatch.setattr(checkpoint, "save", save)


def assert_same_tables(a: Path, b: Path) -> None:
    """Two runs' output folders hold the same tables, bit for bit, but for the wall clock."""
    for name in TABLES:
        x, y = pd.read_parquet(a / name), pd.read_parquet(b / name)
        drop = WALL.get(name, [])
        pd.testing.assert_frame_equal(x.drop(columns=drop), y.drop(columns=drop), check_exact=True)


def draw_kind(tables: dict, tmp_path: Path, name: str, spec: dict, keys: list[str]):
    """One figure drawn as the workflow's figure job draws it (``afl.figures.draw.main``) from
    ``tables`` written as Parquet under ``tmp_path``, without saving: ``(figure, its log)``."""
    import contextlib
    import io
    from unittest import mock

    from afl import figures
    from afl.figures.draw import main

    folder = tmp_path / "tables"
    folder.mkdir(exist_ok=True)
    inputs = {}
    for kind, frame in tables.items():
        inputs[kind] = str(folder / f"{kind}.parquet")
        frame.to_parquet(inputs[kind])
    caught, log = [], io.StringIO()
    with mock.patch.object(figures, "save", lambda fig, png: caught.append(fig)), contextlib.redirect_stderr(log):
        main(name, dict(spec), keys, inputs, "unused.png")
    (figure,) = caught
    return figure, log.getvalue()
