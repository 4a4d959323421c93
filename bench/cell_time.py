"""A cell's time: whole cells of a workflow config, each trained start to finish in a fresh process.

Each named cell (``EXPERIMENT`` for its experiment's first cell, ``EXPERIMENT:INDEX`` for another)
of ``--config`` (default: the demo's) is run by ``afl.run.train.train`` as a worker runs it, into
a temporary folder, ``--repeats`` times; the wall and CPU seconds of the training alone (imports
and data loading excluded), medians. ``--baseline REV`` also runs every cell on the package as of
git revision ``REV``, interleaved with this checkout's, each in its own process, and prints the
speed-up: the before and after of a change to the simulation, the evaluations or the training,
measured side by side in one run. MNIST comes from ``$AFL_DATA_ROOT`` (else ``../shared/data``).
Run it alone: two cores are easily oversubscribed.

    python bench/cell_time.py                                  # the default cells of config/demo.yaml
    python bench/cell_time.py --baseline HEAD~1 optimal_time mnist:3
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common

# Cells of the experiments whose runs cost the most in config/demo.yaml and config/docs.yaml:
# logistic regression on Synthetic(1,1) (evaluations after most updates) and the MLP on MNIST.
CELLS = ("optimal_time", "optimal_time:40", "heterogeneity", "availability", "rate", "stepsize", "mnist")


def child(config: str, sets: list[str], threads: int) -> dict:
    """One cell trained in this (fresh) process: wall and CPU seconds of ``train`` alone."""
    import torch

    import afl
    from afl.config import load_config
    from afl.run.train import train

    torch.set_num_threads(threads)
    cfg = load_config(config, sets)
    with tempfile.TemporaryDirectory() as out:
        wall, cpu = time.perf_counter(), time.process_time()
        info = train(cfg, Path(out), progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"afl": afl.__file__, "updates": info["updates"], "wall": wall, "cpu": cpu}


def planned(config: Path, names: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Each named cell's base config and overrides, as the workflow plans them."""
    import yaml

    from afl.cluster import pipeline

    experiments = yaml.safe_load(config.read_text())["experiments"]
    cells = {}
    for name in names:
        experiment, _, index = name.partition(":")
        if experiment not in experiments:
            sys.exit(f"cell {name}: no experiment {experiment} in {config}; fix: name one of {', '.join(experiments)}")
        planned_cells = pipeline.experiment_cells(experiment, experiments[experiment], common.REPO)
        i = int(index or 0)
        if not 0 <= i < len(planned_cells):
            sys.exit(f"cell {name}: {experiment} has cells 0 to {len(planned_cells) - 1}; fix: name one of them")
        cells[name] = (planned_cells[i].config, list(planned_cells[i].sets))
    return cells


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cells", nargs="*", default=list(CELLS), help="EXPERIMENT or EXPERIMENT:INDEX (default: %(default)s)")
    parser.add_argument("--config", type=Path, default=common.REPO / "config" / "demo.yaml", help="a workflow config")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per cell (the workflow's default: 1)")
    parser.add_argument("--baseline", metavar="REV", help="also run the cells on the afl package of git revision REV")
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "SETS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("AFL_DATA_ROOT", str(common.data_root(None)))
    if args.child:
        print(json.dumps(child(args.child[0], json.loads(args.child[1]), args.threads)))
        return
    cells = planned(args.config, args.cells)
    print(f"machine: {common.machine()}")
    print(f"cells of {args.config.name}, {args.threads} torch thread(s), median of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        codes = common.codes(args.baseline, Path(tmp))
        rows = []
        for name, (config, sets) in cells.items():
            runs = common.interleaved(Path(__file__), [config, json.dumps(sets), "--threads", str(args.threads)],
                                      codes, args.repeats)
            first = statistics.median(r["wall"] for r in runs[next(iter(codes))])
            for code, rs in runs.items():
                wall = statistics.median(r["wall"] for r in rs)
                rows.append([name, code, rs[0]["updates"], f"{wall:.2f}", f"{statistics.median(r['cpu'] for r in rs):.2f}",
                             f"{first / wall:.2f}x"])
                print(f"{name} ({code}): {wall:.2f} s", file=sys.stderr, flush=True)
    print(common.table(["cell", "code", "server updates", "wall s", "CPU s", "speed-up vs first row of the cell"], rows))


if __name__ == "__main__":
    sys.exit(main())
