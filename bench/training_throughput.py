"""Local-training throughput: the engine against the first seed's approach, side by side.

Benchmarks 1 and 2 of issue 5. The workload: MNIST, Dirichlet(0.5) over 10 clients, one
round of 5 clients (the paper's local settings: Adam, gamma_0 = 1e-3 with the delay-aware
rule, delays uniform(0, 2), batch 64), ``--epochs`` local epochs each. Four implementations
(five with ``--bf16``) run it in this process, interleaved (A B C D A B C D ...), on the same data:

- ``seed-style``: the first seed's approach, written for this benchmark: clients trained one
  after another, a per-sample ``torch.utils.data.Dataset`` that does what torchvision's
  ``MNIST`` with ``ToTensor()`` and ``Normalize`` does for each sample (a PIL image, converted
  to a float tensor, normalised), a shuffling ``DataLoader`` of batch 64, a new Adam
  optimizer each epoch;
- ``lean loader``: the same with a leaner per-sample ``__getitem__`` (NumPy slice to a
  normalised tensor, no PIL): the per-sample design without torchvision's per-sample costs;
- ``sequential``: ``afl.learning.reference.local_train``, one task after another with the dataset as a
  tensor and batches by index (the engine before batching, kept as its reference);
- ``batched``: ``afl.learning.trainer.BatchedTrainer``, all tasks of the round at once (the engine).

The process is set up as ``afl train`` sets it up (``configure_precision``, and on CPU
``configure_host_allocator``), so every implementation, the reference too, runs under the
engine's allocator setting and the ratios measure the code alone; ``--default-allocator``
leaves glibc's default for all of them.

Printed per model: samples per second by the wall clock (median of ``--repeats``), the ratios
to the two per-sample references, and the fraction of the machine's measured matrix-multiply
rate in the same precision (fp32, or bf16 for ``batched bf16``) that training reaches (3 x
``models.flops_per_sample`` FLOPs per sample: forward plus backward). ``--bf16`` adds the
engine with ``run.precision: bf16`` (autocast; on CPUs with AMX, its bf16 tiles).

    python bench/training_throughput.py                  # cnn, mlp, logreg; 1 epoch; 3 repeats
    python bench/training_throughput.py --models cnn --epochs 2 --bf16
"""

import argparse
import statistics
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import common
from afl import params
from afl.learning import models
from afl.run import federation
from afl.learning.trainer import BatchedTrainer, Options, configure_host_allocator, configure_precision
from afl.config import load_config
from afl.data import mnist
from afl.rules.lr import delay_aware
from afl.rng import Stream, torch_stream
from afl.learning.reference import local_train


class LeanDataset(Dataset):
    """A per-sample data path without PIL: one NumPy slice, normalised on access."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray):
        self.images, self.labels, self.indices = images, labels, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = self.indices[i]
        x = torch.from_numpy(self.images[j].astype(np.float32)).div_(255).sub_(0.5).div_(0.5).unsqueeze(0)
        return x, int(self.labels[j])


class SeedDataset(LeanDataset):
    """The first seed's data path: what torchvision's ``MNIST`` with ``ToTensor()`` and
    ``Normalize((0.5,), (0.5,))`` does for each sample, without torchvision."""

    def __getitem__(self, i: int):
        j = self.indices[i]
        picture = Image.fromarray(self.images[j])  # MNIST.__getitem__
        x = torch.from_numpy(np.array(picture, np.uint8, copy=True))  # ToTensor
        x = x.view(picture.size[1], picture.size[0], 1).permute((2, 0, 1)).contiguous()
        x = x.to(dtype=torch.get_default_dtype()).div(255)
        mean = torch.as_tensor((0.5,), dtype=x.dtype)  # Normalize
        std = torch.as_tensor((0.5,), dtype=x.dtype)
        if (std == 0).any():
            raise ValueError("std evaluated to zero")
        return x.sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1)), int(self.labels[j])


def reference_round(model: torch.nn.Module, bases, shards, plans, dataset) -> None:
    """One round the first seed's way: clients one after another, a ``DataLoader`` over a
    per-sample ``dataset``, a new Adam optimizer each local epoch."""
    for base, shard, plan in zip(bases, shards, plans):
        params.load(model, base)
        model.train()
        loader = DataLoader(dataset(shard), batch_size=plan.batch_size, shuffle=True)
        for epoch in range(plan.epochs):
            opt = torch.optim.Adam(model.parameters(), lr=delay_aware(plan.lr, epoch, plan.delay, plan.lr_alpha))
            for xb, yb in loader:
                loss = F.nll_loss(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root")
    parser.add_argument("--models", nargs="+", default=["cnn", "mlp", "logreg"])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--clients", type=int, default=5, help="clients per round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="also time the batched engine with bf16 autocast")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--max-samples", type=int, help="use at most this many samples of each client (quick runs)")
    parser.add_argument("--default-allocator", action="store_true", help="skip configure_host_allocator")
    args = parser.parse_args(argv)
    common.set_threads(args.threads)

    device = torch.device(args.device)
    root = common.data_root(args.data_root)
    cfg = load_config({"data": {"name": "mnist", "root": str(root), "num_clients": 10, "alpha": 0.5},
                       "run": {"device": args.device}})
    configure_precision(cfg.run.precision)
    if device.type == "cpu" and not args.default_allocator:
        configure_host_allocator()
    fed = federation.build(cfg, device)
    images, labels, _, _ = mnist.read_mnist(root / mnist.FOLDER)
    clients = np.sort(np.random.default_rng(0).choice(10, args.clients, replace=False))
    delays = np.random.default_rng(1).uniform(0, 2, args.clients)
    shards = [fed.shards.host(int(c))[:args.max_samples] for c in clients]
    samples = args.epochs * sum(len(s) for s in shards)
    rates = {"fp32": common.matmul_rate(device), "bf16": common.matmul_rate(device, torch.bfloat16)}
    print(f"machine: {common.machine()}")
    print(f"allocator: {'glibc default' if args.default_allocator else 'configure_host_allocator'}")
    print(f"workload: MNIST, Dirichlet(0.5), 10 clients; clients {clients.tolist()} "
          f"({[len(s) for s in shards]} samples), {args.epochs} epoch(s): {samples} samples per round; "
          f"Adam 1e-3 delay-aware, batch 64; median of {args.repeats}, implementations interleaved")
    print(f"measured matmul rate (2048^3): fp32 {rates['fp32'] / 1e9:,.0f} GFLOP/s, "
          f"bf16 {rates['bf16'] / 1e9:,.0f} GFLOP/s")
    headers = ["model", "implementation", "samples/s", "vs seed-style", "vs lean loader",
               "of the matmul rate (same precision)", "each repeat (samples/s)"]

    rows = []
    for name in args.models:
        model = models.build(name, 10, (1, 28, 28), torch_stream(0, Stream.INIT)).to(device)
        flops = 3 * models.flops_per_sample(model, (1, 28, 28))
        bases = [params.flatten(model)] * args.clients
        plans = [common.adam_plan(epochs=args.epochs, delay=float(d))
                 for d in delays]
        gens = lambda: [torch_stream(0, Stream.TRAIN, int(c), 0) for c in clients]  # noqa: E731
        engines = {
            "seed-style": lambda: reference_round(model, bases, shards, plans,
                                                  lambda s: SeedDataset(images, labels, s)),
            "lean loader": lambda: reference_round(model, bases, shards, plans,
                                                   lambda s: LeanDataset(images, labels, s)),
            "sequential": lambda: [local_train(model, b, fed.train_x, fed.train_y, torch.from_numpy(s).to(device),
                                               p, g) for b, s, p, g in zip(bases, shards, plans, gens())],
        }
        for label, options in [("batched", Options()), ("batched bf16", Options(precision="bf16"))]:
            if label == "batched" or args.bf16:
                trainer = BatchedTrainer(models.build(name, 10, (1, 28, 28), torch_stream(0, Stream.INIT)),
                                         fed.train_x, fed.train_y, options)
                engines[label] = lambda trainer=trainer: trainer.train(bases, shards, plans, gens())
        times = {label: [] for label in engines}
        for _ in range(args.repeats):
            for label, run in engines.items():
                times[label].append(common.timed(run, device)[0])
        speed = {label: samples / statistics.median(ts) for label, ts in times.items()}
        for label, value in speed.items():
            rate = rates["bf16" if label.endswith("bf16") else "fp32"]
            rows.append([name, label, f"{value:,.0f}", f"{value / speed['seed-style']:.2f}x",
                         f"{value / speed['lean loader']:.2f}x", f"{value * flops / rate:.0%}",
                         " ".join(f"{samples / t:,.0f}" for t in times[label])])
        print(f"{name}: batched {speed['batched'] / speed['seed-style']:.2f}x the seed-style reference",
              file=sys.stderr, flush=True)
    print(common.table(headers, rows))


if __name__ == "__main__":
    sys.exit(main())
