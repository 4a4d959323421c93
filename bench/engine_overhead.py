"""Engine overhead: server updates per second with no training (issue 5, benchmark 3).

Every rule at ``n = 10,000`` clients and ``m = 1,000`` tasks in flight with the null workload
(``run.workload: none``: a task returns the model it was sent): what is left is the event
loop, selection, task durations, the executor and the server rule, with every update
recorded as ``afl train`` records it. Each rule runs ``--results`` task results (for
``sfl``/``afl`` a server update applies ``m`` of them, for ``fedbuff`` ``K = 10``, else one);
printed: results per second and server updates per second, by the wall clock and per CPU
second, medians of ``--repeats``.

    python bench/engine_overhead.py
    PYTHONPATH=/path/to/older/checkout python bench/engine_overhead.py   # the same on older code
"""

import argparse
import statistics
import sys

import torch

import common
from afl import algorithms, federation, recorder
from afl.config import load_config
from afl.engine.executor import LazyExecutor, NullWorkload
from afl.engine.simulator import Simulation

RULES = ("sfl", "afl", "fedasync", "fedbuff", "asyncsgd")


def simulate(rule: str, n: int, m: int, results: int) -> tuple[int, float, float]:
    """(server updates, wall seconds, CPU seconds) of one null-workload run."""
    raw = {"data": {"num_clients": n}, "algorithm": {"name": rule, "concurrency": m},
           "run": {"workload": "none", "rounds": results // m}}
    if rule == "fedbuff":
        raw["algorithm"]["buffer_size"] = 10
    cfg = load_config(raw)
    fed = federation.build(cfg, torch.device("cpu"))
    workload, rec = NullWorkload(cfg), recorder.Recorder()
    sim = Simulation(cfg, algorithms.make(cfg.algorithm, fed.routing), LazyExecutor(workload), torch.zeros(0),
                     fed.sizes, fed.rates, fed.routing, workload.steps, rec.update, lambda *a: None)
    outcome = None

    def run():
        nonlocal outcome
        outcome = sim.run()

    wall, cpu = common.timed(run, torch.device("cpu"))
    return outcome.version, wall, cpu


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=1_000)
    parser.add_argument("--results", type=int, default=200_000, help="task results per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rules", nargs="+", default=list(RULES))
    args = parser.parse_args(argv)
    print(f"machine: {common.machine()}")
    print(f"n = {args.clients}, m = {args.concurrency}, {args.results} results per run, null workload")
    rows = []
    for rule in args.rules:
        runs = [simulate(rule, args.clients, args.concurrency, args.results) for _ in range(args.repeats)]
        updates = runs[0][0]
        wall = statistics.median(r[1] for r in runs)
        cpu = statistics.median(r[2] for r in runs)
        rows.append([rule, updates, f"{args.results / wall:,.0f}", f"{updates / wall:,.0f}",
                     f"{args.results / cpu:,.0f}", f"{updates / cpu:,.0f}"])
        print(f"{rule}: {args.results / wall:,.0f} results/s", file=sys.stderr, flush=True)
    print(common.table(["rule", "server updates", "results/s", "updates/s", "results/CPU-s", "updates/CPU-s"], rows))


if __name__ == "__main__":
    sys.exit(main())
