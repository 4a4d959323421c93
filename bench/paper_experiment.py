"""The first seed's MNIST experiment end to end, and throughput vs tasks per batch (issue 5, benchmark 5).

Part 1 trains ``config/runs/mnist-paper.yaml`` (1000 rounds of 5 clients x 10 local epochs, batch
64, the paper CNN, Adam with the delay-aware rule, Dirichlet(0.5) over 10 clients) through
``afl.run.train.train`` and prints its wall time and final test accuracy; the first seed's code
took 10 h 32 min on an A100. Part 2 trains ``T`` tasks at once (one local epoch of the CNN
each, clients 0..9 in turn) for each ``T`` in ``--task-batches`` and prints samples/s. Part 3
runs ``k`` cells of the experiment at once on the one device, as an array task of
``cells_per_job: k`` runs them (``afl.cluster.task.CellTask``: a process per cell, the CPUs
split between them; ``--sharing-rounds`` rounds each, seeds 0..k-1), for each ``k`` in
``--cells-per-device``, and prints the samples/s of all k together: what sharing a GPU gains.

Part 4 (``tolerances``) checks on the device the float tolerances docs/reproducibility.md promises and the
CPU tests hold (tests/test_batched.py): five tasks of the paper CNN on MNIST shards, one local
epoch of Adam, trained batched in float32 against the task-by-task reference within 1e-4
relative, compiled against eager within 1e-5, and ``bf16`` against float32 within 25% of each
task's own movement from its start. It prints each measured distance beside its bound and exits
with status 1 if one is out: on a GPU that is the first measurement of the GPU tolerances.

Sized for a GPU. ``--reduced`` makes it a CPU-sized check of the same path (3 rounds, 1
epoch, 10,000 training samples, task batches 1, 2, 5, 1 and 2 cells per device).

    python bench/paper_experiment.py                      # on a GPU: the full experiment
    python bench/paper_experiment.py --reduced            # anywhere: minutes
    python bench/paper_experiment.py --precision bf16 --compile
    python bench/paper_experiment.py --parts tolerances   # the promised tolerances, on this device
    python bench/paper_experiment.py --gpu-session        # what a lent GPU runs first (under 10 min)
"""

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

import common
from afl.cluster.array import CellRun
from afl.cluster.task import CellTask
from afl import params
from afl.learning import models
from afl.run import federation
from afl.learning.trainer import BatchedTrainer, Options, configure_precision
from afl.config import config_hash, load_config, to_dict
from afl.learning.reference import local_train
from afl.rng import Stream, torch_stream
from afl.run.train import train


def paper_config(args, root: Path, device: torch.device, rounds: int, seed: int = 0):
    overrides = [f"data.root={root}", f"run.rounds={rounds}", f"client.epochs={args.epochs}", f"seed={seed}",
                 f"run.device={device.type}", f"run.precision={args.precision}", f"run.compile={args.compile}"]
    if args.train_subset:
        overrides += [f"data.train_subset={args.train_subset}", "data.test_subset=2000"]
    return load_config(common.REPO / "config" / "runs" / "mnist-paper.yaml", overrides)


def experiment(args, root: Path, device: torch.device) -> None:
    """Part 1 for each precision x compile of ``args.variants`` (default: the command line's one);
    a run of fewer than 1000 rounds also states its 1000 rounds extrapolated from its per-round time."""
    rows = []
    for precision, compiled in args.variants or [(args.precision, args.compile)]:
        cfg = paper_config(argparse.Namespace(**{**vars(args), "precision": precision, "compile": compiled}),
                           root, device, args.rounds)
        info: dict = {}
        with tempfile.TemporaryDirectory() as out:
            wall, _ = common.timed(lambda: info.update(train(cfg, Path(out), progress=args.progress)), device)
        per_round = wall / args.rounds
        rows.append([precision, "compiled" if compiled else "eager", args.rounds, f"5 x {args.epochs}",
                     info["updates"], f"{wall:,.1f} s", f"{per_round:.3f} s",
                     f"{1000 * per_round / 60:,.1f} min" + (" (extrapolated)" if args.rounds < 1000 else ""),
                     f"{info['final_test_acc']:.4f}"])
        print(f"{precision}, compile {compiled}: {per_round:.3f} s per round", file=sys.stderr, flush=True)
    print(common.table(["precision", "mode", "rounds", "clients x epochs", "updates", "wall time", "per round",
                        "1000 rounds", "final test accuracy"], rows), flush=True)


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


def cells_per_device(args, root: Path, device: torch.device) -> None:
    cpus = len(os.sched_getaffinity(0))
    rows, first = [], None
    for k in args.cells_per_device:
        with tempfile.TemporaryDirectory() as out:
            cfgs = [paper_config(args, root, device, args.sharing_rounds, seed) for seed in range(k)]
            cells = [CellRun(f"cell{i}", f"{out}/cell{i}", to_dict(c), config_hash(c)).as_task()
                     for i, c in enumerate(cfgs)]
            threads = max(1, cpus // k)
            wall, _ = common.timed(lambda: CellTask(cells, threads)(), device)
            # Trained samples: every applied task is `epochs` passes over its client's shard.
            samples = sum(int((t["tasks"] * t["num_samples"]).sum()) * cfg.client.epochs for cfg, t in
                          zip(cfgs, (pd.read_parquet(Path(c["out"]) / "clients.parquet") for c in cells)))
        rate = samples / wall
        first = first or rate
        rows.append([k, threads, f"{samples:,}", f"{wall:,.1f} s", f"{rate:,.0f}", f"{rate / first:.2f}x"])
        print(f"{k} cells at once: {rate:,.0f} samples/s", file=sys.stderr, flush=True)
    print(common.table(["cells per device", "threads per cell", "samples (all cells)", "wall time",
                        "samples/s (all cells)", f"vs {args.cells_per_device[0]} at once"], rows))


# The bounds of tests/test_batched.py: relative distance of two results' parameter vectors.
BOUNDS = {"batched float32 vs task by task": 1e-4, "compiled vs eager": 1e-5}
BF16_SHARE = 0.25  # bf16 vs float32: at most this share of the task's own movement (tests/test_batched.py)


def tolerances(root: Path, device: torch.device) -> bool:
    """Part 4: the promised tolerances measured on ``device``; True if all hold."""
    cfg = load_config({"data": {"name": "mnist", "root": str(root), "num_clients": 10, "train_subset": 5000},
                       "run": {"device": str(device)}})
    configure_precision("fp32")  # exact float32, no TF32: the promise is about float32
    fed = federation.build(cfg, device)
    model = models.build("cnn", 10, (1, 28, 28), torch_stream(0, Stream.INIT)).to(device)
    bases = [params.flatten(models.build("cnn", 10, (1, 28, 28), torch_stream(i + 1, Stream.INIT))).to(device)
             for i in range(5)]
    shards = [fed.shards.host(c) for c in range(5)]
    plans = [common.adam_plan(epochs=1, delay=0.7 * i) for i in range(5)]

    def batched(options: Options):
        gens = [torch_stream(0, Stream.TRAIN, c, 3) for c in range(5)]
        return BatchedTrainer(model, fed.train_x, fed.train_y, options).train(bases, shards, plans, gens)

    eager = batched(Options(precision="fp32"))
    reference = [local_train(model, b, fed.train_x, fed.train_y, torch.from_numpy(s).to(device), p,
                             torch_stream(0, Stream.TRAIN, c, 3))
                 for c, (b, s, p) in enumerate(zip(bases, shards, plans))]
    torch._dynamo.reset()
    compiled = batched(Options(precision="fp32", compile=True))
    bf16 = batched(Options(precision="bf16"))
    rows, ok = [], True
    for name, got, want in (("batched float32 vs task by task", eager, reference), ("compiled vs eager", compiled, eager)):
        worst = max(float((g.vector - w.vector).norm() / w.vector.norm()) for g, w in zip(got, want))
        ok &= worst <= BOUNDS[name]
        rows.append([name, f"{worst:.2e} relative", f"{BOUNDS[name]:.0e}", "ok" if worst <= BOUNDS[name] else "OUT"])
    share = max(float((b.vector - a.vector).norm() / (a.vector - base).norm()) for a, b, base in zip(eager, bf16, bases))
    ok &= share <= BF16_SHARE
    rows.append(["bf16 vs float32", f"{share:.3f} of the task's movement", f"{BF16_SHARE}",
                 "ok" if share <= BF16_SHARE else "OUT"])
    print(common.table(["tolerance (5 tasks, paper CNN, 1 epoch of Adam)", "measured (worst task)", "bound", ""], rows))
    return ok


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
    parser.add_argument("--cells-per-device", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--sharing-rounds", type=int, default=20, help="rounds of each cell in part 3")
    parser.add_argument("--reduced", action="store_true", help="a CPU-sized run (see above)")
    parser.add_argument("--gpu-session", action="store_true",
                        help="the GPU measurement in one command of under 10 minutes (bench/RESULTS.md): part 1 "
                             "at 50 rounds (1000 extrapolated) in fp32, tf32 and bf16, eager and compiled; tasks "
                             "per batch 1 and 5; 1, 2, 4 and 8 cells per GPU at 10 rounds; the tolerances")
    parser.add_argument("--progress", action="store_true", help="show the training progress bar")
    parser.add_argument("--parts", nargs="+", choices=["experiment", "batches", "sharing", "tolerances"],
                        default=["experiment", "batches", "sharing", "tolerances"],
                        help="which parts to run (default: all)")
    args = parser.parse_args(argv)
    args.variants = None
    if args.gpu_session:
        args.rounds, args.task_batches, args.sharing_rounds = 50, [1, 5], 10
        args.variants = [(p, c) for p in ("fp32", "tf32", "bf16") for c in (False, True)]
    if args.reduced:
        args.rounds, args.epochs, args.train_subset, args.task_batches = 3, 1, 10_000, [1, 2, 5]
        args.cells_per_device, args.sharing_rounds = [1, 2], 3
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    root = common.data_root(args.data_root)
    print(f"machine: {common.machine()}")
    print(f"device: {device}, precision {args.precision}, compile {args.compile}; fp32 matmul rate "
          f"{common.matmul_rate(device) / 1e12:.2f} TFLOP/s")
    if "experiment" in args.parts:
        experiment(args, root, device)
    if "batches" in args.parts:
        task_batches(args, root, device)
    if "sharing" in args.parts:
        cells_per_device(args, root, device)
    if "tolerances" in args.parts and not tolerances(root, device):
        return 1


if __name__ == "__main__":
    sys.exit(main())
