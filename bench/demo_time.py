"""`make demo`'s workflow before and after cells run on shared workers (issue 23), in one run.

Runs ``snakemake all --profile cluster/profiles/local --configfile config/demo.yaml`` (the demo's
grid, cells, tables and figures; setup excluded) twice, one after the other, each into a fresh
folder:

- ``before``: the workflow of commit ``--before`` (one ``afl launch`` process per cell), checked
  out into a temporary git worktree, its afl first on ``PYTHONPATH`` for its jobs too;
- ``after``: this checkout (one rule per experiment, its cells on a pool of worker processes that
  import torch once: ``afl/cluster/worker.py``).

Both run the demo of ``--demo-of`` (default: the ``--before`` commit's ``config/demo.yaml`` and
``config/runs/``), so that before and after run the same cells: the demo has grown since (``--demo-of
HEAD`` times today's demo after the change alone, with ``--only after``).

For each it prints the wall time, the cells run and the figures drawn, and the after/before ratio;
a cell's CPU time in its own ``run.json`` (``wall_time``, the simulation alone) summed over the
cells shows how much of the demo is simulation; per experiment, beside the slowest jobs' wall times
from the workflow's ``benchmark:`` files (absent in commits before them), it shows where the time
went. MNIST comes from ``$AFL_DATA_ROOT`` (else
``../shared/data``). Run it alone: two cores are easily oversubscribed.

    python bench/demo_time.py [--before 29f6495] [--only before|after] [--demo-of REV]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_demo(label: str, checkout: Path, env: dict) -> dict:
    """The demo's workflow of ``checkout`` run in it, timed; the cells' own simulation time summed."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "snakemake", "all", "--profile", "cluster/profiles/local",
                             "--configfile", "config/demo.yaml"], cwd=checkout, env=env, capture_output=True,
                            text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{label}: snakemake failed:\n{result.stderr[-4000:]}")
    runs = {p: json.loads(p.read_text()) for p in (checkout / "results").glob("*/*/run.json")}
    figures = list((checkout / "results" / "figures").glob("*.png"))
    simulation: dict[str, float] = collections.defaultdict(float)  # experiment -> its cells' summed time
    for path, r in runs.items():
        simulation[path.parent.parent.name] += r["wall_time"]
    return {"label": label, "wall_s": wall, "cells": len(runs), "figures": len(figures),
            "simulation_s": sum(simulation.values()), "simulation": simulation,
            "jobs": job_seconds(checkout / "results" / "benchmarks")}


def job_seconds(folder: Path) -> dict[str, float]:
    """Each job's wall time from the workflow's ``benchmark:`` files (``<step>/<name>.tsv``, column
    ``s``), keyed ``<step>/<name>``."""
    seconds = {}
    for path in sorted(folder.glob("*/*.tsv")):
        header, values = path.read_text().splitlines()[:2]
        seconds[f"{path.parent.name}/{path.stem}"] = float(values.split("\t")[header.split("\t").index("s")])
    return seconds


def breakdown(row: dict, top: int = 12) -> None:
    """Where ``row``'s time went: each experiment's cells' simulation time, and the slowest jobs."""
    print(f"\n{row['label']}: the cells' simulation time by experiment, and the slowest jobs (wall)")
    steps: dict[str, float] = collections.defaultdict(float)  # run, aggregate, figures -> summed wall
    for job, seconds in row["jobs"].items():
        steps[job.split("/")[0]] += seconds
    if steps:
        print("jobs' wall time by step, summed: " + ", ".join(f"{k} {v:.0f} s" for k, v in sorted(steps.items())))
    print("| experiment | simulation, summed | | job | wall |")
    print("|---|---|---|---|---|")
    sims = sorted(row["simulation"].items(), key=lambda kv: -kv[1])[:top]
    jobs = sorted(row["jobs"].items(), key=lambda kv: -kv[1])[:top]
    for i in range(max(len(sims), len(jobs))):
        sim = f"| {sims[i][0]} | {sims[i][1]:.0f} s |" if i < len(sims) else "| | |"
        job = f" | {jobs[i][0]} | {jobs[i][1]:.0f} s |" if i < len(jobs) else " | | |"
        print(sim + job)


def use_demo_of(checkout: Path, rev: str) -> None:
    """Put ``rev``'s ``config/demo.yaml`` and ``config/runs/`` into ``checkout`` (the cells to run)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "config/demo.yaml", "config/runs"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(checkout)], input=archive, check=True)
    print(f"{checkout.name}: the demo of {rev}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default="29f6495", help="the commit before (default: %(default)s)")
    p.add_argument("--only", choices=("before", "after"), help="run one of the two")
    p.add_argument("--demo-of", help="the commit whose config/demo.yaml and config/runs/ both run (default: --before)")
    args = p.parse_args()
    demo_of = args.demo_of or args.before
    env = {**os.environ, "AFL_DATA_ROOT": os.environ.get("AFL_DATA_ROOT") or str(REPO.parent / "shared" / "data")}
    rows = []
    with tempfile.TemporaryDirectory(prefix="afl-demo-") as tmp:
        tmp = Path(tmp)
        if args.only != "after":
            before = tmp / "before"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before],
                           check=True, capture_output=True)
            try:
                use_demo_of(before, demo_of)
                rows.append(run_demo(f"before ({args.before})", before, {**env, "PYTHONPATH": str(before)}))
                print({k: v for k, v in rows[-1].items() if k not in ("simulation", "jobs")}, flush=True)
            finally:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)],
                               capture_output=True)
        if args.only != "before":
            after = tmp / "after"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(after), "HEAD"],
                           check=True, capture_output=True)
            try:
                use_demo_of(after, demo_of)
                rows.append(run_demo("after (HEAD, shared workers)", after, {**env, "PYTHONPATH": str(after)}))
                print({k: v for k, v in rows[-1].items() if k not in ("simulation", "jobs")}, flush=True)
            finally:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(after)],
                               capture_output=True)
    print("\n| run | wall time | cells | figures | cells' simulation time, summed |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['wall_s']:.0f} s ({r['wall_s'] / 60:.1f} min) | {r['cells']} | {r['figures']} | "
              f"{r['simulation_s']:.0f} s |")
    for r in rows:
        breakdown(r)
    if len(rows) == 2:
        print(f"\nafter / before: {rows[1]['wall_s'] / rows[0]['wall_s']:.2f}x the wall time")
    print(f"cells: the demo of {demo_of}")


if __name__ == "__main__":
    main()
