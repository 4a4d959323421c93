"""``afl launch``: run one cell of an experiment grid, locally or as a SLURM job, and wait.

With ``--executor local`` the run happens in this process (``afl.run.train.train``). With
``--executor slurm`` the cell is submitted through ``afl.cluster.array.run_array`` as a task of
one cell (resources: ``cluster/slurm.yaml`` updated by ``--slurm KEY=VALUE``), its SLURM files
land in ``<out>/slurm/``, and this process waits for it. On preemption, or ``signal_delay_s``
before the time limit, the run checkpoints and the job is requeued (``afl.cluster.task``).

Before submitting: a finished run (completed or diverged) of the same config in ``<out>`` ends
the launch at once, and a job of an earlier launch that is still queued or running is waited
for instead of submitting a second one, so a rerun after the login session died re-attaches.
A job that ends without a result raises ``JobFailed``: one line with the SLURM state and the
fix, then the tail of the cell's log. The workflow submits whole experiments the same way
(``workflow/scripts/launch_array.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from afl.atomic import write_json
from afl.cluster.array import CellRun, run_array
from afl.cluster.pipeline import DEFAULT_SLURM, planned_config, slurm_settings
from afl.cluster.task import summary
from afl.config import Config, config_hash, to_dict
from afl.errors import AflError
from afl.run import checkpoint


class JobFailed(Exception):
    """A cell's job ended without a result: the first line says how and the fix, then its log tail."""


def launch(cfg: Config, out: Path, name: str, executor: str = "local", slurm: dict | None = None,
           threads: int | None = None) -> dict:
    """Run ``cfg`` into ``out`` (``executor`` local: here; slurm: as a job); return its summary."""
    out = Path(out).resolve()
    if (info := checkpoint.finished_run(out, config_hash(cfg))) is not None:
        return {**summary(info), "executor": executor, "job_id": info.get("slurm_job")}
    if executor == "local":
        import torch

        from afl.run.train import train

        if threads:
            torch.set_num_threads(threads)
        return {**summary(train(cfg, out, progress=False)), "executor": "local", "job_id": None}
    outcome = {}
    failures = run_array([CellRun(name, str(out), to_dict(cfg), config_hash(cfg))], out / "slurm", name,
                         {**slurm, "cells_per_job": 1}, lambda cell, result: outcome.update(result))
    if failures:
        raise JobFailed(failures[0])
    return outcome


def _settings(items: list[str]) -> dict:
    settings = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise AflError(f"--slurm {item}: must look like KEY=VALUE; fix: e.g. --slurm partition=gpu")
        settings[key.strip()] = yaml.safe_load(text)
    return settings


def cmd_launch(args) -> int:
    cfg = planned_config(args.config, args.set or [], args.expect_hash)
    name = args.name or Path(args.out).name
    slurm = slurm_settings(args.slurm_defaults, _settings(args.slurm or [])) if args.executor == "slurm" else None
    try:
        info = launch(cfg, Path(args.out), name, args.executor, slurm, args.threads)
    except JobFailed as exc:
        print(f"afl: error: {exc}", file=sys.stderr)
        return 1
    if args.record:
        write_json({"cell": name, **info}, Path(args.record))
    print(f"{info['status']}: {name} ({info['updates']} updates, executor {info['executor']}"
          f"{', SLURM job ' + info['job_id'] if info['job_id'] else ''}) -> {args.out}")
    return 0


def add_parser(sub, config_args) -> None:
    """``afl launch``: the subcommand the workflow's train rule runs for each cell (executor local)."""
    p = sub.add_parser("launch", help="run one grid cell here or as a SLURM job (submitit), and wait for it")
    config_args(p)
    p.add_argument("--out", required=True, help="the cell's folder: results, checkpoint, SLURM logs")
    p.add_argument("--name", help="job name (default: the --out folder's name)")
    p.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local: run in this process; slurm: submit with submitit and wait")
    p.add_argument("--slurm", action="append", metavar="KEY=VALUE",
                   help="override a key of --slurm-defaults, e.g. --slurm time_min=60 (repeatable)")
    p.add_argument("--slurm-defaults", default=str(DEFAULT_SLURM), help="SLURM settings file (default: %(default)s)")
    p.add_argument("--threads", type=int, help="torch threads of a local run (a SLURM job uses its cpus)")
    p.add_argument("--expect-hash", help="fail unless the resolved config has this hash")
    p.add_argument("--record", help="write the outcome here (JSON) once the run has finished")
    p.set_defaults(func=cmd_launch)
