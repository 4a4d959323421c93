"""In-memory datasets and the ``load`` entry point.

Images are stored as float32 tensors ``(N, C, H, W)`` normalised per pixel as
``(x / 255 - 0.5) / 0.5``, i.e. into ``[-1, 1]``; labels as int64 ``(N,)``.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from afl.data import cifar10, mnist, synthetic
from afl.data.dataset import Dataset

DATASETS = ("mnist", "cifar10", "synthetic")


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The dataset root: ``root`` if given, else ``$AFL_DATA_ROOT``, else ``./data``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("AFL_DATA_ROOT") or "data")


def md5_file(path: Path) -> str:
    """The hex MD5 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 images ``(N, C, H, W)`` -> float32 tensor ``(x / 255 - 0.5) / 0.5``."""
    x = images.astype(np.float32)
    x /= 255.0
    x -= 0.5
    x /= 0.5
    return torch.from_numpy(x)


def labels_to_tensor(labels: np.ndarray) -> torch.Tensor:
    """Integer labels -> int64 tensor ``(N,)``."""
    return torch.from_numpy(labels.astype(np.int64))


def load(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    num_clients: int = 10,
    seed: int = 0,
    synthetic_alpha: float = 1.0,
    synthetic_beta: float = 1.0,
    verify: bool = True,
) -> Dataset:
    """Load ``name`` (one of ``DATASETS``) from ``root`` (see ``resolve_root``).

    ``num_clients``, ``seed`` and ``synthetic_alpha``/``synthetic_beta`` only apply to
    the synthetic dataset, which is generated rather than read; ``verify`` checks the
    publisher's MD5s of the files read.
    """
    if name == "synthetic":
        return synthetic.generate(num_clients, synthetic_alpha, synthetic_beta, seed)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    root = resolve_root(root).resolve()
    return _read(name, root, verify, _files(root / (mnist.FOLDER if name == "mnist" else cifar10.FOLDER)))


def _files(folder: Path) -> tuple:
    """What identifies the files in ``folder``: names, sizes and modification times."""
    if not folder.is_dir():
        return ()
    return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))


@functools.lru_cache(maxsize=2)
def _read(name: str, root: Path, verify: bool, files: tuple) -> Dataset:
    """The files of ``name`` under ``root``, read once per process while ``files`` (``_files``) stay
    the same: a worker that runs many cells (``afl.cluster.worker``) reads them for its first cell
    only. Nothing changes a dataset's tensors in place (a run's subsets and shards are copies or
    indices), so the cells can share them."""
    if name == "mnist":
        train_x, train_y, test_x, test_y = mnist.read_mnist(root / mnist.FOLDER, verify=verify)
        train_x, test_x = train_x[:, None], test_x[:, None]
        num_classes = mnist.NUM_CLASSES
    else:
        train_x, train_y, test_x, test_y = cifar10.read_cifar10(root, verify=verify)
        num_classes = cifar10.NUM_CLASSES
    return Dataset(
        name=name,
        train_x=images_to_tensor(train_x),
        train_y=labels_to_tensor(train_y),
        test_x=images_to_tensor(test_x),
        test_y=labels_to_tensor(test_y),
        num_classes=num_classes,
    )
