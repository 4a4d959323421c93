"""A generated stand-in for CIFAR-10, written in CIFAR-10's file format. It is NOT CIFAR-10.

``write_cifar10_standin(root)`` writes ``<root>/cifar-10-batches-py/`` laid out as the
publisher's python archive: ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, each a
protocol-2 pickle of a dict with ``b"batch_label"``, ``b"labels"`` (a list of ints 0-9),
``b"data"`` (uint8 ``(n, 3072)``, each 32x32 RGB image channel-major) and ``b"filenames"``;
``batches.meta`` (``b"label_names"``, CIFAR-10's ten names, ``b"num_cases_per_batch"``,
``b"num_vis"``); and ``readme.html``, which says that the files are a stand-in. The real reader
(``afl.data.cifar10``) reads it as it reads CIFAR-10, but only with ``data.verify: false``: the
files do not have the publisher's MD5s, and with ``verify`` on the reader refuses them.

What the images are: each class is a fixed random pattern, a smooth 3x3-cell colour field plus
oriented colour stripes (class ``c``'s stripes at ``c * 9`` degrees, so that a horizontally
flipped image is not another class's). Each image is its class's pattern shifted by up to
``SHIFT`` pixels each way, with a random contrast and brightness and Gaussian pixel noise.
ResNet-20 learns it well above chance in a few rounds, through the same crops and flips as on
CIFAR-10; its accuracies say that the pipeline trains, nothing about CIFAR-10.

Every number comes from a keyed stream ``default_rng([seed, TAG, purpose, ...])``: the same
``seed`` and sizes write the same bytes. The folder is built next to its destination, fsynced
and renamed into place (an earlier stand-in is renamed away first), so a reader finds the old
stand-in whole, no folder, or the new one whole, never a partial one. A folder that holds the
real CIFAR-10 (a file with the publisher's MD5) or files this module does not write is never
touched.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np

from afl.data import cifar10
from afl.data.datasets import md5_file
from afl.errors import DataError

TAG = 0x4346  # "CF": keeps these streams apart from the engine's (seed, purpose) streams
PATTERN, LABELS, IMAGES = 1, 2, 3  # stream purposes after TAG
SHIFT = 4  # largest shift of an image, in pixels, each way
NOISE = 0.12  # std of the Gaussian pixel noise, pixel values in [0, 1]
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")
README = (
    "<html><body><p>A generated stand-in for CIFAR-10 written by afl "
    "(afl.data.standin, <code>afl data standin cifar10</code>), seed {seed}: {train} training and "
    "{test} test images of class-dependent colour patterns, in CIFAR-10's file format. "
    "It is not CIFAR-10: read it with data.verify: false.</p></body></html>\n"
)
FILES = (*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH, "batches.meta", "readme.html")


def _smooth(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of ``(C, g, g)`` to ``(C, size, size)``."""
    g = grid.shape[-1]
    pos = np.linspace(0, g - 1, size)
    lo = np.minimum(pos.astype(int), g - 2)
    w = pos - lo
    rows = grid[:, lo] * (1 - w)[None, :, None] + grid[:, lo + 1] * w[None, :, None]
    return rows[:, :, lo] * (1 - w) + rows[:, :, lo + 1] * w


def class_patterns(seed: int) -> np.ndarray:
    """The ten classes' patterns, float ``(10, 3, 32 + 2 SHIFT, 32 + 2 SHIFT)`` in [0, 1]."""
    size = cifar10.IMAGE_SHAPE[1] + 2 * SHIFT
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    patterns = []
    for c in range(cifar10.NUM_CLASSES):
        rng = np.random.default_rng([seed, TAG, PATTERN, c])
        field = _smooth(rng.uniform(0.0, 1.0, (3, 3, 3)), size)
        angle = np.deg2rad(9.0 * c)
        period = rng.uniform(8.0, 14.0)
        phase = rng.uniform(0.0, 2 * np.pi)
        wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
        colour = rng.uniform(-1.0, 1.0, 3)
        patterns.append(0.65 * field + 0.25 * colour[:, None, None] * wave + 0.175)
    return np.clip(np.stack(patterns), 0.0, 1.0)


def _balanced_labels(n: int, seed: int, split: int) -> np.ndarray:
    """``n`` labels, each class ``n // 10`` or ``n // 10 + 1`` times, in a random order."""
    labels = np.arange(n) % cifar10.NUM_CLASSES
    return np.random.default_rng([seed, TAG, LABELS, split]).permutation(labels)


def _images(patterns: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 ``(n, 3072)`` rows, channel-major, of the labels' patterns shifted, scaled and noised."""
    n = len(labels)
    h = cifar10.IMAGE_SHAPE[1]
    dy, dx = rng.integers(0, 2 * SHIFT + 1, (2, n))
    rows = dy[:, None] + np.arange(h)
    cols = dx[:, None] + np.arange(h)
    x = patterns[labels[:, None, None, None], np.arange(3)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    contrast = rng.uniform(0.7, 1.3, (n, 1, 1, 1))
    brightness = rng.normal(0.0, 0.08, (n, 1, 1, 1))
    x = (x - 0.5) * contrast + 0.5 + brightness + rng.normal(0.0, NOISE, x.shape)
    return np.rint(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8).reshape(n, -1)


def _pickle(obj, path: Path) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)  # the publisher's files are Python 2 protocol-2 pickles


def _fsync_tree(folder: Path) -> None:
    for path in [*folder.iterdir(), folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_replaceable(folder: Path) -> None:
    """Refuse a folder that holds the real CIFAR-10 or files the stand-in does not write."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise DataError(f"{folder}: exists and is not a folder; fix: choose another --root")
    for name, md5 in cifar10.MD5.items():
        path = folder / name
        if path.is_file() and md5_file(path) == md5:
            raise DataError(
                f"{folder}: holds the real CIFAR-10 ({name} has the publisher's MD5), refusing to "
                "overwrite it with a stand-in; fix: choose another --root"
            )
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in FILES)
    if foreign:
        raise DataError(
            f"{folder}: holds files a stand-in does not write ({', '.join(foreign)}), refusing to "
            "replace it; fix: choose another --root or move them away"
        )


def write_cifar10_standin(
    root: str | os.PathLike, *, train: int = 5000, test: int = 1000, seed: int = 0
) -> Path:
    """Write the stand-in (``train`` training images in five batches, ``test`` test images)
    to ``<root>/cifar-10-batches-py`` and return that folder; an earlier stand-in there is
    replaced. Raises ``DataError`` if the folder holds the real CIFAR-10 or other files."""
    train, test, seed = int(train), int(test), int(seed)
    if train < len(cifar10.TRAIN_BATCHES) or test < 1:
        raise ValueError(f"need train >= {len(cifar10.TRAIN_BATCHES)} and test >= 1, "
                         f"got train={train}, test={test}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    root = Path(root)
    folder = root / cifar10.FOLDER
    _check_replaceable(folder)
    try:
        _write(root, folder, train, test, seed)
    except OSError as e:
        raise DataError(f"{folder}: could not write the stand-in ({e}); fix: choose a writable --root") from None
    return folder


def _write(root: Path, folder: Path, train: int, test: int, seed: int) -> None:
    """Build the stand-in next to ``folder`` and rename it into place."""
    root.mkdir(parents=True, exist_ok=True)
    patterns = class_patterns(seed)
    parts = np.array_split(_balanced_labels(train, seed, 0), len(cifar10.TRAIN_BATCHES))
    splits = list(zip(cifar10.TRAIN_BATCHES, parts))
    splits.append((cifar10.TEST_BATCH, _balanced_labels(test, seed, 1)))
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{folder.name}.standin-"))
    old = None
    try:
        for index, (name, labels) in enumerate(splits):
            rng = np.random.default_rng([seed, TAG, IMAGES, index])
            label = (f"stand-in training batch {index + 1} of {len(cifar10.TRAIN_BATCHES)}"
                     if name != cifar10.TEST_BATCH else "stand-in testing batch 1 of 1")
            _pickle({
                b"batch_label": label.encode(),
                b"labels": [int(v) for v in labels],
                b"data": _images(patterns, labels, rng),
                b"filenames": [f"standin_{name}_{i:05d}.png".encode() for i in range(len(labels))],
            }, tmp / name)
        _pickle({
            b"num_cases_per_batch": len(splits[0][1]),
            b"label_names": [n.encode() for n in LABEL_NAMES],
            b"num_vis": int(np.prod(cifar10.IMAGE_SHAPE)),
        }, tmp / "batches.meta")
        (tmp / "readme.html").write_text(README.format(seed=seed, train=train, test=test))
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the real archive's folder is world-readable
        _fsync_tree(tmp)
        if folder.exists():
            old = Path(tempfile.mkdtemp(dir=root, prefix=f".{folder.name}.old-"))
            os.replace(folder, old / folder.name)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
        if old is not None:
            shutil.rmtree(old)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
