"""Peak memory as the number of clients grows (issue 5, benchmark 4).

For ``n`` in 10 ... 100,000, each measured in a fresh process (peak resident set size, and
the part of it above the process after imports and data loading):

- ``engine``: the null workload (``run.workload: none``), ``m = min(1000, n)`` tasks in
  flight, ``--updates`` FedAsync updates: the simulator's own memory;
- ``training``: logistic regression (or ``--model mlp``) really trained on MNIST, ``m =
  min(1000, n)`` tasks in flight, FedAsync; with more clients than MNIST has samples,
  each client holds ``--samples`` random samples (clients overlap), which changes nothing
  for the engine: memory should grow with ``m`` and the model, not with ``n``.

``--baseline REV`` also measures the package as of git revision ``REV`` (each in its own
process, interleaved with this checkout's).

    python bench/scale_memory.py                      # n = 10 ... 100,000, both modes
    python bench/scale_memory.py --baseline 9ebdbd7   # before/after the issue-5 engine
    python bench/scale_memory.py --clients 100000 --modes training --updates 20000
"""

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import common


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, n: int, updates: int, samples: int, model_name: str, data_root: str) -> dict:
    """One measurement, in this (fresh) process."""
    import afl
    from afl.config import load_config

    try:
        from afl.run import federation
        from afl.run.recorder import Recorder
    except ImportError:  # a baseline revision
        from afl import federation
        from afl.recorder import Recorder

    m = min(1000, n)
    raw = {"data": {"num_clients": n}, "model": {"name": model_name},
           "algorithm": {"name": "fedasync", "concurrency": m},
           "client": {"epochs": 1, "batch_size": 10, "lr": 0.05}, "run": {"updates": updates, "eval_every": updates}}
    if mode == "engine":
        raw["run"]["workload"] = "none"
    cfg = load_config(raw)
    rates, routing = np.ones(n), np.full(n, 1.0 / n)
    if mode == "engine":
        parts = np.zeros((n, 1), dtype=np.int64)  # one (unused) sample each: no data is loaded
        data = None
    else:
        from afl.data import load

        data = load("mnist", data_root)
        parts = np.random.default_rng(0).integers(0, len(data.train_y), (n, samples))
    if hasattr(federation, "Shards"):
        shards = federation.Shards(list(parts), torch.device("cpu"))
    else:  # a baseline from before issue 5: one index tensor per client
        shards = tuple(torch.as_tensor(p) for p in parts)
    fed = federation.Federation(*(None, None, None, None) if data is None else
                                (data.train_x, data.train_y, data.test_x, data.test_y),
                                shards, rates, routing, 10, (1, 28, 28) if data is None else data.input_shape)
    base = _rss_mb()
    sim = common.simulation(cfg, Recorder().update, fed)
    start = time.perf_counter()
    outcome = sim.run()
    return {"afl": afl.__file__, "mode": mode, "n": n, "m": m, "updates": outcome.version, "seconds": time.perf_counter() - start,
            "peak_mb": _rss_mb(), "above_start_mb": _rss_mb() - base}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000, 10_000, 100_000])
    parser.add_argument("--modes", nargs="+", default=["engine", "training"], choices=["engine", "training"])
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=20, help="samples per client (training)")
    parser.add_argument("--model", default="logreg", choices=["logreg", "mlp"])
    parser.add_argument("--data-root")
    parser.add_argument("--baseline", metavar="REV", help="also measure the afl package of git revision REV")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root = str(common.data_root(args.data_root))
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.updates, args.samples, args.model, root)))
        return
    print(f"machine: {common.machine()}")
    print(f"FedAsync, m = min(1000, n), {args.updates:,} updates; training: {args.model}, {args.samples} samples "
          "per client, batch 10, 1 epoch")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        codes = common.codes(args.baseline, Path(tmp))
        for mode in args.modes:
            for n in args.clients:
                for code, path in codes.items():
                    r = common.child_json(Path(__file__), [mode, str(n), "--updates", str(args.updates), "--samples",
                                                           str(args.samples), "--model", args.model,
                                                           "--data-root", root], path)
                    rows.append([r["mode"], code, f"{r['n']:,}", r["m"], r["updates"], f"{r['seconds']:.1f}",
                                 f"{r['peak_mb']:.0f}", f"{r['above_start_mb']:.0f}"])
                    print(f"{mode} n={n} ({code}): {r['peak_mb']:.0f} MB", file=sys.stderr, flush=True)
    print(common.table(["mode", "code", "n", "m", "updates", "seconds", "peak RSS MB", "MB above start"], rows))


if __name__ == "__main__":
    sys.exit(main())
