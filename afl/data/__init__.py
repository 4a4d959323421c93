"""Datasets (MNIST, CIFAR-10, FedProx Synthetic), client partitions, downloads and a CIFAR-10 stand-in."""

from afl.data.cifar10 import read_cifar10
from afl.data.dataset import Dataset
from afl.data.datasets import DATASETS, load, resolve_root
from afl.data.download import download
from afl.data.mnist import read_mnist
from afl.data.partition import (
    PARTITIONERS,
    dirichlet,
    iid,
    label_skew,
    partition,
    shards,
)
from afl.data.standin import write_cifar10_standin
from afl.data.synthetic import generate as generate_synthetic

__all__ = [
    "DATASETS",
    "PARTITIONERS",
    "Dataset",
    "dirichlet",
    "download",
    "generate_synthetic",
    "iid",
    "label_skew",
    "load",
    "partition",
    "read_cifar10",
    "read_mnist",
    "resolve_root",
    "shards",
    "write_cifar10_standin",
]
