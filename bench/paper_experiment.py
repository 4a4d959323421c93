"""The first seed's MNIST experiment end to end, and throughput vs tasks per batch (issue 5, benchmark 5).

Part 1 trains ``config/runs/mnist-paper.yaml`` (1000 rounds of 5 clients x 10 local epochs, batch
64, the paper CNN, Adam with the delay-aware rule, Dirichlet(0.5) over 10 clients) through
``afl.run.train.train`` and prints its wall time and final test accuracy; the first seed's code
took 10 h 32 min on an A100. Part 2 trains ``T`` tasks at once (one local epoch of the CNN
each, clients 0..9 in turn) for each ``T`` in ``--task-batches`` and prints samples/s.

Sized for a GPU. ``--reduced`` makes it a CPU-sized check of the same path (3 rounds, 1
epoch, 10,000 training samples, task batches 1, 2, 5).

    python bench/paper_experiment.py                      # on a GPU: the full experiment
    python bench/paper_experiment.py --reduced            # anywhere: minutes
    python bench/paper_experiment.py --precision bf16 --compile
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

import common
from afl import params
from afl.learning import models
from afl.run import federation
from afl.learning.trainer import BatchedTrainer, Options, configure_precision
from afl.config import load_config
from afl.rng import Stream, torch_stream
from afl.run.train import train


def experiment(args, root: Path, device: torch.device) -> None:
    overrides = [f"data.root={root}", f"run.rounds={args.rounds}", f"client.epochs={args.epochs}",
                 f"run.device={device.type}", f"run.precision={args.precision}", f"run.compile={args.compile}"]
    if args.train_subset:
        overrides += [f"data.train_subset={args.train_subset}", "data.test_subset=2000"]
    cfg = load_config(common.REPO / "config" / "runs" / "mnist-paper.yaml", overrides)
    info: dict = {}
    with tempfile.TemporaryDirectory() as out:
        wall, _ = common.timed(lambda: info.update(train(cfg, Path(out), progress=args.progress)), device)
    print(common.table(["rounds", "clients x epochs", "updates", "wall time", "per round", "final test accuracy"],
                       [[args.rounds, f"5 x {args.epochs}", info["updates"], f"{wall:,.1f} s",
                         f"{wall / args.rounds:.2f} s", f"{info['final_test_acc']:.4f}"]]), flush=True)


def task_batches(args, root: Path, device: torch.device) -> None:
    cfg = load_config({"data": {"name": "mnist", "root": str(root), "num_clients": 10,
                                "train_subset": args.train_subset}, "run": {"device": str(device)}})
    configure_precision(args.precision)
    fed = federation.build(cfg, device)
    model = models.build("cnn", 10, (1, 28, 28), torch_stream(0, Stream.INIT))
    trainer = BatchedTrainer(model, fed.train_x, fed.train_y, Options(precision=args.precision, compile=args.compile))
    base = params.flatten(model).to(device)
    rows = []
    for count in args.task_batches:
        tasks = [(t % 10, t // 10) for t in range(count)]
        shards = [fed.shards.host(c) for c, _ in tasks]
        plans = [common.adam_plan(epochs=1, delay=1.0)] * count
        samples = sum(len(s) for s in shards)

        def run():
            trainer.train([base] * count, shards, plans, [torch_stream(0, Stream.TRAIN, c, i) for c, i in tasks])

        run()  # warm-up: kernels, allocator
        wall = statistics.median(common.timed(run, device)[0] for _ in range(args.repeats))
        rows.append([count, samples, f"{samples / wall:,.0f}"])
        print(f"{count} tasks: {samples / wall:,.0f} samples/s", file=sys.stderr, flush=True)
    print(common.table(["tasks per batch", "samples", "samples/s"], rows))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="tf32", choices=["tf32", "fp32", "bf16"])
    parser.add_argument("--compile", action="store_true", help="run.compile: torch.compile (CUDA graphs on a GPU)")
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-subset", type=int)
    parser.add_argument("--task-batches", type=int, nargs="+", default=[1, 2, 5, 10, 20, 50])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reduced", action="store_true", help="a CPU-sized run (see above)")
    parser.add_argument("--progress", action="store_true", help="show the training progress bar")
    parser.add_argument("--skip-experiment", action="store_true")
    args = parser.parse_args(argv)
    if args.reduced:
        args.rounds, args.epochs, args.train_subset, args.task_batches = 3, 1, 10_000, [1, 2, 5]
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    root = common.data_root(args.data_root)
    print(f"machine: {common.machine()}")
    print(f"device: {device}, precision {args.precision}, compile {args.compile}; fp32 matmul rate "
          f"{common.matmul_rate(device) / 1e12:.2f} TFLOP/s")
    if not args.skip_experiment:
        experiment(args, root, device)
    task_batches(args, root, device)


if __name__ == "__main__":
    sys.exit(main())
