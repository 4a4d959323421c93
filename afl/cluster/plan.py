"""``afl plan``: what a workflow config will ask of a cluster, before anything is submitted.

Per experiment: its cells, how many of them still need to run (no finished run in their
folder), the SLURM jobs (array tasks of ``cells_per_job`` cells) and arrays that makes, each
job's resources (``cluster/slurm.yaml`` with the workflow config's and the experiment's ``slurm``
layers), and the estimated work of a cell:
the samples it trains on and evaluates, times the model's FLOPs per sample
(``afl.learning.models.flops_per_sample``; a training sample costs three forward passes, forward
and backward). A user picks ``time_min`` from it (work / the device's sustained FLOP rate).

Samples of a cell: results x samples per result + evaluations x test samples, where

- results: ``run.updates`` x the rule's results per update, ``run.rounds`` x m, or, for a time
  budget, ``run.time`` x the closed Jackson network's throughput (an estimate outside its setting);
- samples per result: the batch of a gradient rule's single step, else ``client.steps`` x the batch,
  or ``client.epochs`` x the mean shard (the training set over the clients);
- evaluations: the planned server updates over ``run.eval_every``, plus the one at the start.

The null workload (``run.workload: none``) trains nothing: its work is 0. The estimate loads
torch once, for the models' FLOPs; it is a command, not a process that waits on the login node.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import numpy as np

from afl import rules
from afl.cluster.array import DEFAULT_MAX_ARRAY_SIZE, array_tasks
from afl.cluster.pipeline import DEFAULT_SLURM, REPO, Cell, expand, slurm_settings, staged
from afl.config import Config, RoutingConfig, data_seed, load_config, read_yaml
from afl.run import checkpoint

# Training and test set sizes, input shape and classes of the datasets read from files.
DATASETS = {"mnist": (60_000, 10_000, (1, 28, 28), 10), "cifar10": (50_000, 10_000, (3, 32, 32), 10)}
TRAIN_PASSES = 3  # a training sample: one forward and a backward of about twice its cost


@dataclasses.dataclass(frozen=True)
class Work:
    """A cell's estimated work: samples trained on, samples evaluated, FLOPs of each kind."""

    train_samples: float
    eval_samples: float
    flops: float


@functools.lru_cache(maxsize=None)
def _synthetic(num_clients: int, alpha: float, beta: float, seed: int) -> tuple[int, int, tuple[int, ...], int]:
    """The generated set's sizes, shape and classes (they depend on the seed): generated once per seed."""
    from afl.data import synthetic

    ds = synthetic.generate(num_clients, alpha, beta, seed)
    return len(ds.train_y), len(ds.test_y), tuple(ds.input_shape), ds.num_classes


def _data(cfg: Config) -> tuple[int, int, tuple[int, ...], int]:
    d = cfg.data
    if d.name == "synthetic":
        train, test, shape, classes = _synthetic(d.num_clients, d.synthetic_alpha, d.synthetic_beta, data_seed(cfg))
    else:
        train, test, shape, classes = DATASETS[d.name]
    return (min(train, d.train_subset or train), min(test, d.test_subset or test), shape, classes)


def results_of(cfg: Config) -> float:
    """Results (tasks) a cell applies: the server updates of its update or round budget
    (``afl.run.build.planned_updates``) x the rule's results per update, else time x throughput."""
    from afl.queueing.model import network
    from afl.queueing.network import predict
    from afl.run.build import planned_updates

    a, run = cfg.algorithm, cfg.run
    updates = planned_updates(cfg)
    if updates is not None:
        return float(updates * rules.get(a.name).batch(a))

    if isinstance(a.routing, RoutingConfig) and a.routing.optimize is not None:
        a = dataclasses.replace(a, routing="uniform")  # the optimum is known only after its pilot
    mu, p, m = network(dataclasses.replace(cfg, algorithm=a))
    return float(run.time * predict(mu, p, m).throughput)


def work_of(cfg: Config, flops_cache: dict) -> Work:
    """The estimated work of one cell (see the module docstring)."""
    if cfg.run.workload == "none":
        return Work(0.0, 0.0, 0.0)
    train, test, shape, classes = _data(cfg)
    a, c = cfg.algorithm, cfg.client
    if rules.get(a.name).gradient:
        per_result = c.batch_size
    elif c.steps is not None:
        per_result = c.steps * c.batch_size
    else:
        per_result = (c.epochs or 1) * train / cfg.data.num_clients
    results = results_of(cfg)
    updates = results / rules.get(a.name).batch(a)
    evals = (math.floor(updates / cfg.run.eval_every) + 1) * test
    key = (cfg.model.name, shape, classes)
    if key not in flops_cache:
        import torch

        from afl.learning import models

        flops_cache[key] = models.flops_per_sample(
            models.build(cfg.model.name, classes, shape, torch.Generator().manual_seed(0)), shape)
    forward = flops_cache[key]
    train_samples = results * per_result
    return Work(train_samples, float(evals), TRAIN_PASSES * forward * train_samples + forward * evals)


def finished(cell: Cell, results: Path) -> bool:
    """Whether the cell's folder holds a finished run of its config (what the launcher skips)."""
    return checkpoint.finished_run(results / cell.experiment / cell.name, cell.config_hash) is not None


def merge(base: dict, extra: dict) -> dict:
    """``extra`` merged into ``base`` key by key, as Snakemake merges several --configfile."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def plan(config: dict, root: Path, defaults: Path) -> list[dict]:
    """One row per experiment of a workflow config: cells, pending, jobs, resources, work per cell, and
    ``tuning``: the cells of its tuning seeds if it runs in two stages (``afl.cluster.pipeline.staged``:
    of the others only those its figures choose run, so its counts are at most), else None."""
    results = Path(config.get("results", "results"))
    cells = expand(config.get("experiments") or {}, root)
    two = staged({"figures": {}, **config}, cells)
    cache: dict = {}
    rows = []
    for name, these in cells.items():
        spec = config["experiments"][name]
        slurm = slurm_settings(defaults, config.get("slurm"), spec.get("slurm"))
        bases = {path: read_yaml(path) for path in {cell.config for cell in these}}
        works = [work_of(load_config(bases[cell.config], list(cell.sets)), cache) for cell in these]
        flops = np.array([w.flops for w in works])
        pending = sum(not finished(cell, results) for cell in these)
        jobs = array_tasks(pending, slurm)
        rows.append({"experiment": name, "cells": len(these), "pending": pending,
                     "cells_per_job": slurm["cells_per_job"], "jobs": jobs,
                     "arrays": -(-jobs // (DEFAULT_MAX_ARRAY_SIZE - 1)),
                     "gpus": slurm["gpus"], "cpus": slurm["cpus"], "time_min": slurm["time_min"],
                     "train_samples": float(np.median([w.train_samples for w in works])),
                     "tflop_median": float(np.median(flops)) / 1e12, "tflop_max": float(flops.max()) / 1e12,
                     "tflop_total": float(flops.sum()) / 1e12,
                     "tuning": sum(c.columns["seed"] in two[name] for c in these) if name in two else None})
    return rows


def table(rows: list[dict]) -> str:
    """The plan as a fixed-width table with a total line."""
    header = ["experiment", "cells", "pending", "cells/job", "jobs", "arrays", "gpus", "cpus", "time_min",
              "samples/cell", "TFLOP/cell (median)", "TFLOP/cell (max)", "TFLOP (all)"]
    body = [[r["experiment"], r["cells"], r["pending"], r["cells_per_job"], r["jobs"], r["arrays"], r["gpus"],
             r["cpus"], r["time_min"],
             f"{r['train_samples']:.3g}", f"{r['tflop_median']:.3g}", f"{r['tflop_max']:.3g}",
             f"{r['tflop_total']:.3g}"] for r in rows]
    body.append(["all", sum(r["cells"] for r in rows), sum(r["pending"] for r in rows), "",
                 sum(r["jobs"] for r in rows), sum(r["arrays"] for r in rows), "", "", "", "", "", "",
                 f"{sum(r['tflop_total'] for r in rows):.3g}"])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(row, widths)))
             for row in [header, *body]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def cmd_plan(args) -> int:
    config: dict = {}
    for path in args.configfile:
        config = merge(config, read_yaml(path))
    if args.results:
        config["results"] = args.results
    rows = plan(config, REPO, Path(args.slurm_defaults))
    print(table(rows))
    for r in rows:
        if r["tuning"] is not None:
            print(f"two stages: {r['experiment']} runs its {r['tuning']} cells of tuning seeds first, then of its "
                  f"{r['cells'] - r['tuning']} other cells only those its figures choose: its counts are at most "
                  "(docs/comparing.md)")
    print(f"jobs: array tasks of cells/job pending cells, arrays of at most {DEFAULT_MAX_ARRAY_SIZE - 1} tasks "
          "(SLURM's default MaxArraySize; the launcher reads your cluster's); work: samples x FLOPs per sample "
          f"of the model ({TRAIN_PASSES} forward passes per training sample, 1 per test sample): divide by your "
          "device's sustained FLOP/s for a time_min")
    return 0


def add_parser(sub) -> None:
    """``afl plan``: a workflow config's cells, jobs and work, before anything is submitted."""
    p = sub.add_parser("plan", help="a workflow config's cells, jobs and estimated work per cell, before submitting")
    p.add_argument("configfile", nargs="+", help="workflow config(s), merged in order as snakemake --configfile")
    p.add_argument("--results", help="the results folder to look for finished cells in (default: the config's)")
    p.add_argument("--slurm-defaults", default=str(DEFAULT_SLURM), help="SLURM settings file (default: %(default)s)")
    p.set_defaults(func=cmd_plan)
