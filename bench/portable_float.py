"""The cost of ``AFL_PORTABLE_FLOAT=1``: the batched engine's training throughput with and without it.

The switch (docs/reproducibility.md, promise 3) takes effect as torch loads, so each setting
runs in fresh child processes, interleaved (default, portable, default, portable, ...). The
workload is ``bench/training_throughput.py``'s: MNIST, Dirichlet(0.5) over 10 clients, one
round of 5 clients, 1 local epoch of Adam (delay-aware, batch 64), trained at once by
``afl.learning.trainer.BatchedTrainer``. Printed per model: samples per second (median over the
children's medians) and the ratio portable / default.

    python bench/portable_float.py                      # cnn, mlp, logreg; 2 children per setting
    python bench/portable_float.py --models cnn --rounds 3 --repeats 5
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import afl  # noqa: I001  (first: with AFL_PORTABLE_FLOAT=1 it pins the float paths before torch loads)
import common

HERE = Path(__file__).resolve()


def child(args) -> None:
    import numpy as np
    import torch

    from afl import params
    from afl.learning import models
    from afl.run import federation
    from afl.learning.trainer import BatchedTrainer, Options, configure_host_allocator, configure_precision
    from afl.config import load_config
    from afl.rng import Stream, torch_stream
    
    common.set_threads(args.threads)
    root = common.data_root(args.data_root)
    cfg = load_config({"data": {"name": "mnist", "root": str(root), "num_clients": 10, "alpha": 0.5}})
    configure_precision(cfg.run.precision)
    configure_host_allocator()
    fed = federation.build(cfg, torch.device("cpu"))
    clients = np.sort(np.random.default_rng(0).choice(10, 5, replace=False))
    delays = np.random.default_rng(1).uniform(0, 2, 5)
    shards = [fed.shards.host(int(c))[:args.max_samples] for c in clients]
    samples = sum(len(s) for s in shards)
    speeds = {}
    for name in args.models:
        model = models.build(name, 10, (1, 28, 28), torch_stream(0, Stream.INIT))
        bases = [params.flatten(model)] * len(clients)
        plans = [common.adam_plan(epochs=1, delay=float(d))
                 for d in delays]
        trainer = BatchedTrainer(model, fed.train_x, fed.train_y, Options())
        run = lambda: trainer.train(bases, shards, plans,  # noqa: E731
                                    [torch_stream(0, Stream.TRAIN, int(c), 0) for c in clients])
        run()  # warm-up
        speeds[name] = samples / statistics.median(common.timed(run, torch.device("cpu"))[0]
                                                   for _ in range(args.repeats))
    print(json.dumps({"afl": afl.__file__, "portable": afl.PORTABLE, "machine": common.machine(),
                      "capability": torch.backends.cpu.get_cpu_capability(), "speeds": speeds}))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root")
    parser.add_argument("--models", nargs="+", default=["cnn", "mlp", "logreg"])
    parser.add_argument("--rounds", type=int, default=2, help="child processes per setting, interleaved")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of training in each child")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--max-samples", type=int, help="use at most this many samples of each client (quick runs)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    forwarded = ["--models", *args.models, "--repeats", str(args.repeats)]
    for flag in ("data_root", "threads", "max_samples"):
        if getattr(args, flag) is not None:
            forwarded += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    settings = {"default": "0", "portable": "1"}
    results: dict[str, list[dict]] = {label: [] for label in settings}
    saved = os.environ.get("AFL_PORTABLE_FLOAT")
    try:
        for _ in range(args.rounds):
            for label, value in settings.items():
                os.environ["AFL_PORTABLE_FLOAT"] = value
                results[label].append(common.child_json(HERE, forwarded))
    finally:
        os.environ.pop("AFL_PORTABLE_FLOAT", None) if saved is None else os.environ.update(AFL_PORTABLE_FLOAT=saved)
    print(f"machine: {results['default'][0]['machine']}")
    print(f"kernels: default {results['default'][0]['capability']}, portable {results['portable'][0]['capability']}")
    rows = []
    for name in args.models:
        speed = {label: statistics.median(r["speeds"][name] for r in runs) for label, runs in results.items()}
        rows.append([name, f"{speed['default']:,.0f}", f"{speed['portable']:,.0f}",
                     f"{speed['portable'] / speed['default']:.2f}x"])
    print(common.table(["model", "default samples/s", "AFL_PORTABLE_FLOAT=1 samples/s", "portable / default"], rows))


if __name__ == "__main__":
    sys.exit(main())
