"""What every peer script of bench/cross_device.py shares: the models, the warm-up, the command line.

Imported from the peers' environment (no afl): the models are afl's ``mlp`` and ``cnn``
(``afl.learning.models``) written out as ``nn.Sequential``, so that ``init_<model>.pt`` loads.
"""

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def build_module(name: str) -> nn.Sequential:
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(),
                             nn.Linear(200, 10), nn.LogSoftmax(dim=1))
    return nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, 1, 1), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, 1, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 10), nn.LogSoftmax(dim=1))


def warm_up(name: str, x: torch.Tensor, y: torch.Tensor, batch: int, lr: float) -> None:
    """One untimed epoch of plain SGD on a throwaway model (torch's lazy initialisations), as every
    implementation of bench/cross_device.py does before its timed rounds."""
    module = build_module(name)
    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    for xb, yb in zip(x.split(batch), y.split(batch)):
        optimizer.zero_grad()
        F.nll_loss(module(xb), yb).backward()
        optimizer.step()


def arguments(description: str) -> argparse.Namespace:
    """``--inputs DIR --model {mlp,cnn} --rounds R --threads T``; torch's threads set to ``T``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--model", choices=["mlp", "cnn"], required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args
