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

from afl import extensions
from afl.data import cifar10, mnist, synthetic
from afl.data.dataset import Dataset
from afl.errors import AflError, config_fail

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
    """Load ``name`` (one of ``DATASETS``, or a provider from outside afl: ``afl.extensions``) from
    ``root`` (see ``resolve_root``). A provider is called as ``provider(root, seed)`` and returns a
    ``Dataset`` (tensors as described above; ``client_indices`` for a natural partition).

    ``num_clients``, ``seed`` and ``synthetic_alpha``/``synthetic_beta`` only apply to
    the synthetic dataset, which is generated rather than read; ``verify`` checks the
    publisher's MD5s of the files read.
    """
    if name == "synthetic":
        return synthetic.generate(num_clients, synthetic_alpha, synthetic_beta, seed)
    if name not in DATASETS and extensions.external(extensions.DATA_GROUP, name):
        return _provided(name, resolve_root(root), seed)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    root = resolve_root(root).resolve()
    return _read(name, root, verify, _files(root / (mnist.FOLDER if name == "mnist" else cifar10.FOLDER)))


def _provided(name: str, root: Path, seed: int) -> Dataset:
    """The ``Dataset`` a provider from outside afl returns (``provider(root, seed)``), checked: float32
    inputs and int64 labels in ``0..num_classes-1``, as many of each, train and test alike."""
    provider = extensions.load_function(extensions.DATA_GROUP, "data.name", name, "dataset provider",
                                        "(root, seed) -> afl.data.Dataset")
    try:
        ds = provider(root, seed)
    except AflError:
        raise
    except Exception as exc:  # a provider that fails: one line, not its traceback
        config_fail("data.name", f"{name}(root, seed) raised {type(exc).__name__}: {exc}", "fix the provider")
    if not isinstance(ds, Dataset):
        config_fail("data.name", f"{name} returned a {type(ds).__name__}, not an afl.data.Dataset",
                    "return Dataset(name, train_x, train_y, test_x, test_y, num_classes)")
    for split in ("train", "test"):
        x, y = getattr(ds, f"{split}_x"), getattr(ds, f"{split}_y")
        problem = (f"{split}_x is not a float32 tensor" if not (isinstance(x, torch.Tensor) and x.dtype == torch.float32)
                   else f"{split}_y is not an int64 tensor" if not (isinstance(y, torch.Tensor) and y.dtype == torch.int64)
                   else f"{split}_x holds {len(x)} samples and {split}_y {len(y)} labels" if len(x) != len(y) or y.ndim != 1
                   else f"{split}_y has labels outside 0..{ds.num_classes - 1}" if len(y) and not (
                       0 <= int(y.min()) and int(y.max()) < ds.num_classes)
                   else f"{split} has no samples" if not len(y) else None)
        if problem is not None:
            config_fail("data.name", f"{name}: {problem}", "return inputs as float32 and labels as int64 "
                        "class indices, one per sample")
    if ds.num_classes < 2 or tuple(ds.test_x.shape[1:]) != ds.input_shape:
        config_fail("data.name", f"{name}: {ds.num_classes} classes, or test inputs of another shape than the training "
                    "inputs", "return at least 2 classes and inputs of one shape")
    return ds


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
