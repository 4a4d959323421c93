"""Engine overhead: task results per second with no training (issue 5, benchmark 3).

Every rule at ``n = 10,000`` clients and ``m = 1,000`` tasks in flight with the null workload
(``run.workload: none``: a task returns the model it was sent): what is left is the event
loop, selection, task durations, the executor and the server rule, with every update
recorded as ``afl train`` records it. Each run processes ``--results`` task results (the
client updates the server receives; for ``sfl``/``afl`` one server update applies ``m`` of
them, for ``fedbuff`` ``K = 10``, else one), in a fresh process. Printed: results and server
updates per second, by the wall clock and per CPU second, medians of ``--repeats``.

``--baseline REV`` also runs the same measurement on the package as of git revision ``REV``
(interleaved with this checkout's, each in its own process) and prints the speed-up.

    python bench/engine_overhead.py
    python bench/engine_overhead.py --baseline 9ebdbd7     # before/after the issue-5 engine
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common

RULES = ("sfl", "afl", "fedasync", "fedbuff", "asyncsgd")


def child(rule: str, n: int, m: int, results: int) -> dict:
    """One null-workload run in this (fresh) process: server updates, wall and CPU seconds."""
    import afl
    from afl.config import load_config

    try:
        from afl.run.recorder import Recorder
    except ImportError:  # a baseline revision
        from afl.recorder import Recorder

    raw = {"data": {"num_clients": n}, "algorithm": {"name": rule, "concurrency": m},
           "run": {"workload": "none", "rounds": results // m}}
    if rule == "fedbuff":
        raw["algorithm"]["buffer_size"] = 10
    sim = common.simulation(load_config(raw), Recorder().update)
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = sim.run()
    return {"afl": afl.__file__, "updates": outcome.version, "wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=1_000)
    parser.add_argument("--results", type=int, default=200_000, help="task results per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    parser.add_argument("--baseline", metavar="REV", help="also measure the afl package of git revision REV")
    parser.add_argument("--child", metavar="RULE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(common.json.dumps(child(args.child, args.clients, args.concurrency, args.results)))
        return
    print(f"machine: {common.machine()}")
    print(f"n = {args.clients:,}, m = {args.concurrency:,}, {args.results:,} results per run, null workload, "
          f"median of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        codes = common.codes(args.baseline, Path(tmp))
        sizes = ["--clients", str(args.clients), "--concurrency", str(args.concurrency), "--results", str(args.results)]
        rows, speed = [], {}
        for rule in args.rules:
            runs = common.interleaved(Path(__file__), [rule, *sizes], codes, args.repeats)
            for code, rs in runs.items():
                wall = statistics.median(r["wall"] for r in rs)
                cpu = statistics.median(r["cpu"] for r in rs)
                speed[rule, code] = args.results / wall
                ratio = f"{speed[rule, code] / speed[rule, next(iter(codes))]:.2f}x"
                rows.append([rule, code, rs[0]["updates"], f"{args.results / wall:,.0f}", f"{rs[0]['updates'] / wall:,.0f}",
                             f"{args.results / cpu:,.0f}", ratio])
                print(f"{rule} ({code}): {args.results / wall:,.0f} results/s", file=sys.stderr, flush=True)
    print(common.table(["rule", "code", "server updates", "results/s", "updates/s", "results/CPU-s",
                        "vs first row of the rule"], rows))


if __name__ == "__main__":
    sys.exit(main())
