"""A grid of small cells through `snakemake --profile slurm`, before and after job arrays (issue 14).

Runs the same grid (``--cells`` tiny CPU cells in two experiments) three ways, one after another,
each into a fresh folder, on the SLURM this machine's `sacct` and `sbatch` reach (``bash
cluster/local-slurm.sh up``):

- ``before``: the workflow of commit ``--before`` (one `afl launch` process per cell on the login
  node, one SLURM job per cell), checked out into a temporary git worktree and run with its own
  profile, but at most ``--before-jobs`` cells at once (see below);
- ``after k=1`` and ``after k=4``: this checkout, one SLURM array per experiment, ``cells_per_job``
  1 and 4.

Only the cells run (``--omit-from aggregate``): the tables and figures are the same either way.
For each it prints: the wall time of the grid; Snakemake's own peak resident memory; the waiting
processes under it on the login node (sampled every ``SAMPLE_S``): their peak count, peak total
resident memory (RSS) and peak total proportional memory (PSS: shared pages split between the
processes that map them);
the sbatch, sacct, squeue and scontrol calls made on the login node (through logging wrappers first
on PATH), in all and per minute; the SLURM jobs and array tasks that ran (sacct).

The `slurm` profile runs up to 500 cells at once (`jobs: 500`); for 200 cells, the "before" waiting
processes would hold ~22 GB, most of this 24 GB machine, so the before run caps them with
``--before-jobs`` (default 100) and the table says so.

    python bench/cluster_grid.py [--cells 200] [--before 902c5cb]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SAMPLE_S = 0.5
TOOLS = ("sbatch", "sacct", "squeue", "scontrol")
TINY = {"data": {"name": "synthetic", "num_clients": 4}, "client": {"steps": 2, "batch_size": 16},
        "algorithm": {"concurrency": 2}, "run": {"rounds": 6, "eval_every": 2}}
SLURM = {"partition": "debug", "gpus": 0, "cpus": 1, "mem_gb": 1, "time_min": 30}


def wrappers(bin_dir: Path, calls: Path) -> None:
    """`sbatch`, `sacct`, ... that append one line to ``calls`` and run the real command."""
    bin_dir.mkdir(parents=True)
    for tool in TOOLS:
        real = subprocess.run(["bash", "-lc", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $(date +%s.%N)" >> "{calls}"\nexec "{real}" "$@"\n')
        script.chmod(0o755)


def tree(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in kB (smaps_rollup); (0, 0) if it is gone."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def run_grid(label: str, repo: Path, workdir: Path, slurm: dict, cells: int, extra: list[str],
             env: dict) -> dict:
    """Snakemake on ``repo``'s workflow for the grid; the login node's processes, memory and SLURM calls."""
    base = workdir / "base.yaml"
    base.write_text(yaml.safe_dump(TINY))
    half = cells // 2
    config = {"slurm": slurm, "experiments": {
        "a": {"config": str(base), "grid": {"seed": list(range(half))}},
        "b": {"config": str(base), "set": {"algorithm.name": "fedbuff", "algorithm.buffer_size": 2},
              "grid": {"seed": list(range(cells - half))}}}}
    wf = workdir / "wf.yaml"
    wf.write_text(yaml.safe_dump(config))
    calls = workdir / "calls.txt"
    calls.touch()
    wrappers(workdir / "bin", calls)
    env = {**env, "PATH": f"{workdir / 'bin'}:{env['PATH']}"}
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"), "--directory",
               str(workdir), "--profile", str(repo / "cluster" / "profiles" / "slurm"), "--configfile", str(wf),
               "--omit-from", "aggregate", *extra]
    peak = {"processes": 0, "rss_kb": 0, "pss_kb": 0, "snakemake_kb": 0}
    start = time.monotonic()
    with open(workdir / "snakemake.log", "w") as log:
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            peak["snakemake_kb"] = max(peak["snakemake_kb"], memory_kb(proc.pid)[0])
            pids = tree(proc.pid)[1:]
            mem = [memory_kb(p) for p in pids]
            peak["processes"] = max(peak["processes"], len(pids))
            peak["rss_kb"] = max(peak["rss_kb"], sum(m[0] for m in mem))
            peak["pss_kb"] = max(peak["pss_kb"], sum(m[1] for m in mem))
            time.sleep(SAMPLE_S)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{label}: snakemake failed (rc {proc.returncode}); see {workdir / 'snakemake.log'}")
    counts = {tool: 0 for tool in TOOLS}
    for line in calls.read_text().splitlines():
        counts[line.split()[0]] += 1
    jobs = set()
    for record in workdir.glob("results/*/*/launch.json"):
        job = json.loads(record.read_text())["job_id"]
        jobs.add(job)
    return {"label": label, "wall_s": wall, **peak, "calls": counts, "tasks": len(jobs),
            "arrays": len({j.split("_")[0] for j in jobs}), "cells": len(list(workdir.glob("results/*/*/launch.json")))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--before", default="902c5cb", help="the commit of the per-cell launcher")
    parser.add_argument("--before-jobs", type=int, default=100, help="cells at once in the before run")
    parser.add_argument("--only", choices=("before", "after"), help="run one side only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="afl-bench-grid-") as tmp:
        tmp = Path(tmp)
        rows = []
        print(f"grid: {args.cells} cells (2 experiments), each {json.dumps(TINY)}; SLURM {json.dumps(SLURM)}",
              flush=True)
        if args.only != "after":
            before = tmp / "before-repo"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before],
                           check=True, capture_output=True)
            try:
                (tmp / "before").mkdir()
                # The before workflow imports the before afl: its checkout first on the path, for the jobs too.
                env = {**os.environ, "PYTHONPATH": str(before)}
                rows.append(run_grid(f"before ({args.before}, --jobs {args.before_jobs})", before, tmp / "before",
                                     SLURM, args.cells, ["--jobs", str(args.before_jobs)], env))
                print(rows[-1], flush=True)
            finally:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)],
                               capture_output=True)
        if args.only != "before":
            for k in (1, 4):
                (tmp / f"after{k}").mkdir()
                rows.append(run_grid(f"after, cells_per_job {k}", REPO, tmp / f"after{k}",
                                     {**SLURM, "cells_per_job": k}, args.cells, [], dict(os.environ)))
                print(rows[-1], flush=True)
    print()
    print("| run | wall time | Snakemake RSS (peak) | processes under it (peak) | their RSS, total (peak) | their PSS, "
          "total (peak) | sbatch | sacct | squeue | sacct+squeue per min | SLURM jobs / array tasks | arrays |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        c = r["calls"]
        per_min = (c["sacct"] + c["squeue"]) / (r["wall_s"] / 60)
        print(f"| {r['label']} | {r['wall_s']:.0f} s | {r['snakemake_kb'] / 1024:,.0f} MB | {r['processes']} | {r['rss_kb'] / 1024:,.0f} MB | "
              f"{r['pss_kb'] / 1024:,.0f} MB | {c['sbatch']} | {c['sacct']} | {c['squeue']} | {per_min:.1f} | "
              f"{r['tasks']} | {r['arrays']} |")
    if len(rows) == 3:
        print(f"\nwall time, cells_per_job 4 vs 1: {rows[2]['wall_s'] / rows[1]['wall_s']:.2f}x; "
              f"after (k=1) vs before: {rows[1]['wall_s'] / rows[0]['wall_s']:.2f}x; peak RSS after (k=1) vs "
              f"before: {rows[1]['rss_kb'] / rows[0]['rss_kb']:.3f}x")


if __name__ == "__main__":
    main()
