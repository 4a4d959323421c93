"""The cross-device regime: afl against pfl, FLSim and Flower on one workload, side by side.

The shape of pfl-research's own benchmark: many small clients, a cohort of 50 a round, small
batches, one local epoch. MNIST split IID over ``--clients`` clients (1,000 clients of 60 images;
also 200 and 5,000), 50 clients a round, batch 10, one epoch of plain SGD (lr 0.05), FedAvg
(the plain average: every client holds as many images). Models ``mlp`` and ``cnn`` of
``afl.learning.models``, fp32 on the CPU.

Every implementation trains the same thing: this script writes the inputs once (the normalised
MNIST tensors, afl's partition, the cohort of every round, each model's initial weights from
afl's keyed stream) and each peer script in ``bench/peers/`` reads them. Each implementation
runs in its own process (a peer from ``--peers-python``, the interpreter of an environment where
it is installed), ``--repeats`` times, interleaved (afl pfl flsim flower afl ...), and times its
training loop alone: the rounds, local training plus aggregation, not the setup, not an untimed
warm-up (one epoch of a throwaway model; afl: one round) and not the final evaluation. afl runs
its real simulation (``afl.run.build``: the ``sfl`` rule, concurrency 50, the event engine, the
batched trainer) with no evaluation inside the rounds.

Beside them, for scale, ``plain``: the same workload as a hand-written PyTorch loop with no
framework (clients one after another on one ``nn.Module``): what training clients one at a
time costs on this machine before any framework adds to it.

``--baseline REV`` also times afl as of git revision ``REV`` (its ``afl`` package first on the
child's path): before and after in one run.

Printed: samples per second (median of the repeats; one sample is one image of one local
epoch), each repeat, afl's ratio to every peer, and each implementation's test accuracy after
its rounds (the same training, so close, not equal: the peers shuffle with their own RNGs).
Beside them, the arithmetic rate each reaches (samples/s x 3 forward passes x the model's FLOPs
per sample, ``afl.learning.models.flops_per_sample``) as a share of this machine's fp32 matmul
rate (2048^3 products, measured at the start with the same threads), and per model what 2x the
fastest peer would need: above 100% of the matmul rate, no implementation can reach it here.

    python bench/cross_device.py --peers-python /path/to/peers/bin/python
    python bench/cross_device.py --clients 200 1000 5000 --samples 15000 --peers-python /path/to/peers/bin/python

The peers' environment (its own virtual environment: ``python -m venv peers``):
``pip install torch==2.13.0 pfl==0.6.0 flwr==1.42.0``, then ``pip install --no-deps flsim==0.1.0
opacus==1.6.0`` and ``pip install hydra-core omegaconf tqdm scikit-learn pandas tensorboard``
(FLSim's own requirements would replace the CPU torch with a CUDA one).
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import afl
import common
from afl import params
from afl.config import load_config
from afl.learning import models
from afl.rng import Stream, torch_stream
from afl.run import federation

COHORT, BATCH, LR = 50, 10, 0.05
PEERS = ("pfl", "flsim", "flower")
LABELS = {"afl": "afl (this checkout)", "plain": "plain PyTorch loop (no framework)"}


def afl_config(root: Path, clients: int, model: str, rounds: int):
    """The workload as an afl run: sfl, 50 clients a round, one epoch of SGD at batch 10."""
    return load_config({
        "seed": 0,
        "data": {"name": "mnist", "root": str(root), "num_clients": clients, "partition": "iid"},
        "model": {"name": model},
        "client": {"optimizer": "sgd", "lr": LR, "batch_size": BATCH, "epochs": 1},
        "algorithm": {"name": "sfl", "concurrency": COHORT},
        "run": {"rounds": rounds, "eval_every": 10 ** 9, "device": "cpu", "precision": "fp32"},
    })


def write_inputs(root: Path, clients: int, rounds: int, model_names: list[str], folder: Path) -> None:
    """``folder/data.npz`` (normalised tensors, afl's shards, the cohorts) and ``init_<model>.pt``."""
    cfg = afl_config(root, clients, model_names[0], rounds)
    fed = federation.build(cfg, torch.device("cpu"))
    shards = np.stack([fed.shards.host(c) for c in range(clients)])  # IID: equal sizes
    rng = np.random.default_rng(12345)
    cohorts = np.stack([rng.choice(clients, COHORT, replace=False) for _ in range(rounds)])
    np.savez(folder / "data.npz", train_x=fed.train_x.numpy(), train_y=fed.train_y.numpy(),
             test_x=fed.test_x.numpy(), test_y=fed.test_y.numpy(), shards=shards, cohorts=cohorts,
             lr=LR, batch=BATCH)
    for name in model_names:
        model = models.build(name, fed.num_classes, fed.input_shape, torch_stream(cfg.seed, Stream.INIT))
        torch.save(model.state_dict(), folder / f"init_{name}.pt")


def run_afl(root: Path, clients: int, model: str, rounds: int, threads: int) -> dict:
    """One timed afl run (``--worker afl``): the simulation's rounds, setup and a warm-up round excluded."""
    from afl.run.build import build

    torch.set_num_threads(threads)
    warm = build(afl_config(root, clients, model, 1))  # one untimed round, as every peer warms up
    warm.simulation.run()
    run = build(afl_config(root, clients, model, rounds), fed=warm.federation)
    start = time.perf_counter()
    run.simulation.run()
    seconds = time.perf_counter() - start
    fed = run.federation
    _, accuracy = models.evaluate(run.model, run.simulation.x, fed.test_x, fed.test_y, 2048)
    return {"framework": "afl", "samples": rounds * COHORT * (60000 // clients), "seconds": seconds,
            "test_accuracy": accuracy, "afl": afl.__file__}


def run_plain(folder: Path, model: str, rounds: int, threads: int) -> dict:
    """One timed run of the hand-written loop (``--worker plain``): the least a framework could add.

    Clients one after another, each a plain ``torch.optim.SGD`` loop over its shuffled rows on one
    ``nn.Module``, the server summing the 50 models and dividing. Same inputs, same warm-up."""
    torch.set_num_threads(threads)
    data = np.load(folder / "data.npz")
    x, y = torch.from_numpy(data["train_x"]), torch.from_numpy(data["train_y"])
    shards, cohorts = torch.from_numpy(data["shards"]), data["cohorts"][:rounds]
    net = models.build(model, 10, (1, 28, 28), torch.Generator().manual_seed(0))
    net.load_state_dict(torch.load(folder / f"init_{model}.pt", weights_only=True))
    weights = [p.detach().clone() for p in net.parameters()]
    generator = torch.Generator().manual_seed(0)

    def local_epoch(rows: torch.Tensor) -> None:
        optimizer = torch.optim.SGD(net.parameters(), lr=LR)
        for batch in rows[torch.randperm(len(rows), generator=generator)].split(BATCH):
            optimizer.zero_grad()
            torch.nn.functional.nll_loss(net(x[batch]), y[batch]).backward()
            optimizer.step()

    local_epoch(shards[0])  # warm-up, untimed (it moves the module, reset below)
    start = time.perf_counter()
    for cohort in cohorts:
        total = [torch.zeros_like(w) for w in weights]
        for client in cohort:
            with torch.no_grad():
                for p, w in zip(net.parameters(), weights):
                    p.copy_(w)
            local_epoch(shards[client])
            with torch.no_grad():
                for t, p in zip(total, net.parameters()):
                    t.add_(p)
        weights = [t / len(cohort) for t in total]
    seconds = time.perf_counter() - start
    with torch.no_grad():
        for p, w in zip(net.parameters(), weights):
            p.copy_(w)
    _, accuracy = models.evaluate(net, params.flatten(net), torch.from_numpy(data["test_x"]),
                                  torch.from_numpy(data["test_y"]), 2048)
    return {"framework": "plain", "samples": int(rounds * cohorts.shape[1] * shards.shape[1]), "seconds": seconds,
            "test_accuracy": accuracy}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root")
    parser.add_argument("--clients", type=int, nargs="+", default=[1000])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    parser.add_argument("--samples", type=int, default=30000,
                        help="train about this many samples a run: ceil(samples / (50 x images per client)) rounds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peers", nargs="*", default=list(PEERS), choices=PEERS)
    parser.add_argument("--peers-python", default=sys.executable,
                        help="the interpreter of an environment with pfl, FLSim and Flower installed")
    parser.add_argument("--baseline", metavar="REV", help="also time afl as of git revision REV (before/after)")
    parser.add_argument("--inputs", help="write the inputs here and keep them (default: a temporary folder)")
    parser.add_argument("--worker", choices=["afl", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root = common.data_root(args.data_root)
    if args.worker == "afl":
        print(json.dumps(run_afl(root, args.clients[0], args.model, args.rounds, args.threads)))
        return
    if args.worker == "plain":
        print(json.dumps(run_plain(Path(args.inputs), args.model, args.rounds, args.threads)))
        return

    here = Path(__file__).resolve().parent
    torch.set_num_threads(args.threads)
    peak = common.matmul_rate(torch.device("cpu"))
    print(f"machine: {common.machine()}; fp32 matmul {peak / 1e9:,.0f} GFLOP/s")
    print(f"workload: MNIST IID, {COHORT} clients a round, batch {BATCH}, 1 epoch of SGD {LR}, FedAvg, fp32; "
          f"about {args.samples:,} samples a run; {args.threads} threads everywhere; median of {args.repeats}, interleaved")
    rows, needs = [], []
    base_dir = tempfile.TemporaryDirectory()
    baseline = common.baseline(args.baseline, Path(base_dir.name)) if args.baseline else None
    for clients in args.clients:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(args.inputs or tmp) / f"clients{clients}"
            folder.mkdir(parents=True, exist_ok=True)
            rounds = -(-args.samples // (COHORT * (60000 // clients)))
            write_inputs(root, clients, rounds, args.models, folder)
            for model in args.models:
                afl_argv = [str(here / "cross_device.py"), "--worker", "afl", "--clients", str(clients),
                            "--model", model, "--rounds", str(rounds), "--data-root", str(root)]
                commands = {"afl": (sys.executable, afl_argv, None)}
                if args.baseline:
                    commands[f"afl {args.baseline}"] = (sys.executable, afl_argv, baseline)
                commands["plain"] = (sys.executable, [str(here / "cross_device.py"), "--worker", "plain",
                                                       "--inputs", str(folder), "--model", model,
                                                       "--rounds", str(rounds)], None)
                for peer in args.peers:
                    commands[peer] = (args.peers_python, [str(here / "peers" / f"{peer}_xdev.py"),
                                                          "--inputs", str(folder), "--model", model,
                                                          "--rounds", str(rounds)], None)
                results = {name: [] for name in commands}
                for _ in range(args.repeats):
                    for name, (python, argv_, path) in commands.items():
                        results[name].append(common.run_json([python, *argv_, "--threads", str(args.threads)], path))
                speed = {name: statistics.median(r["samples"] / r["seconds"] for r in rs)
                         for name, rs in results.items()}
                flops = 3 * models.flops_per_sample(models.build(model, 10, (1, 28, 28), torch.Generator()), (1, 28, 28))
                for name, rs in results.items():
                    label = rs[0].get("version", LABELS.get(name, f"afl as of {args.baseline}"))
                    rows.append([clients, rounds, model, label, f"{speed[name]:,.0f}",
                                 f"{speed['afl'] / speed[name]:.2f}x",
                                 " ".join(f"{r['samples'] / r['seconds']:,.0f}" for r in rs),
                                 f"{speed[name] * flops / 1e9:,.0f} ({speed[name] * flops / peak:.0%})",
                                 f"{rs[-1]['test_accuracy']:.3f}"])
                if args.peers:
                    best = max(args.peers, key=lambda n: speed[n])
                    needs.append(f"{clients} clients, {model}: 2x {best} is {2 * speed[best]:,.0f} samples/s, "
                                 f"{2 * speed[best] * flops / 1e9:,.0f} GFLOP/s, {2 * speed[best] * flops / peak:.0%} "
                                 f"of the fp32 matmul rate (afl: {speed['afl'] * flops / peak:.0%})")
                print(f"{clients} clients, {model}: " + ", ".join(f"{n} {v:,.0f}" for n, v in speed.items()),
                      file=sys.stderr, flush=True)
    print(common.table(["clients", "rounds", "model", "implementation", "samples/s", "afl vs it", "each repeat",
                        "GFLOP/s (of matmul)", "test accuracy"], rows))
    print("\n".join(needs))


if __name__ == "__main__":
    sys.exit(main())
