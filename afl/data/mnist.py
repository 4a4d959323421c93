"""MNIST reader for the IDX files in torchvision's layout ``<root>/MNIST/raw/``.

IDX format (big-endian): images are uint32 magic 2051, count, rows, cols, then
``count * rows * cols`` uint8 pixels row-major; labels are uint32 magic 2049, count,
then ``count`` uint8 labels. Each file may be the publisher's ``.gz`` or a decompressed
copy; the ``.gz`` is preferred when both exist, and only it has a publisher MD5.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from afl.errors import DataError

FOLDER = Path("MNIST", "raw")
NUM_CLASSES = 10
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

# MD5 of the publisher's .gz files (the values torchvision checks).
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def _fix(raw_dir: Path) -> str:
    return f"fix: re-download with `afl data download mnist --root {raw_dir.parent.parent}`"


def _read_bytes(raw_dir: Path, stem: str, verify: bool) -> tuple[Path, bytes]:
    """The decompressed contents of ``stem`` (from ``stem.gz`` if present, else ``stem``)."""
    gz, plain = raw_dir / f"{stem}.gz", raw_dir / stem
    if not gz.is_file():
        if not plain.is_file():
            raise DataError(
                f"MNIST not found under {raw_dir} (looked for {stem}[.gz]); fix: run "
                f"`afl data download mnist --root {raw_dir.parent.parent}` "
                "or set data.root / AFL_DATA_ROOT"
            )
        return plain, plain.read_bytes()
    data = gz.read_bytes()
    if verify:
        got = hashlib.md5(data).hexdigest()
        if got != MD5[gz.name]:
            raise DataError(
                f"{gz}: MD5 mismatch (expected {MD5[gz.name]}, got {got}), the file is "
                f"corrupt or incomplete; {_fix(raw_dir)}"
            )
    try:
        return gz, gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{gz}: not a valid gzip file ({e}); {_fix(raw_dir)}") from None


def _parse_idx(path: Path, data: bytes, magic: int, ndim: int, raw_dir: Path) -> np.ndarray:
    """The uint8 array of an IDX file with ``ndim`` dimensions, after checking its header."""
    header_len = 4 * (1 + ndim)
    if len(data) < header_len:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes); {_fix(raw_dir)}")
    header = np.frombuffer(data, dtype=">u4", count=1 + ndim)
    if header[0] != magic:
        raise DataError(
            f"{path}: bad IDX magic number {header[0]} (expected {magic}); {_fix(raw_dir)}"
        )
    dims = tuple(int(d) for d in header[1:])
    expected = header_len + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(
            f"{path}: {len(data)} bytes but its IDX header {dims} needs {expected}, the file "
            f"is truncated or corrupt; {_fix(raw_dir)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def _read_split(raw_dir: Path, prefix: str, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    images_path, images = _read_bytes(raw_dir, f"{prefix}-images-idx3-ubyte", verify)
    labels_path, labels = _read_bytes(raw_dir, f"{prefix}-labels-idx1-ubyte", verify)
    x = _parse_idx(images_path, images, IMAGES_MAGIC, 3, raw_dir)
    y = _parse_idx(labels_path, labels, LABELS_MAGIC, 1, raw_dir)
    if len(x) != len(y):
        raise DataError(
            f"{labels_path}: {len(y)} labels for {len(x)} images in {images_path.name}: "
            f"{_fix(raw_dir)}"
        )
    if len(y) and y.max() >= NUM_CLASSES:
        raise DataError(f"{labels_path}: label {y.max()} out of range 0-9; {_fix(raw_dir)}")
    return x, y


def read_mnist(
    raw_dir: Path, verify: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read ``(train_x, train_y, test_x, test_y)`` from ``raw_dir`` (``<root>/MNIST/raw``).

    Images are uint8 ``(N, 28, 28)``, labels uint8 ``(N,)``; both are read-only views of
    the file contents. With ``verify`` the ``.gz`` files' MD5s are checked.
    """
    raw_dir = Path(raw_dir)
    train_x, train_y = _read_split(raw_dir, "train", verify)
    test_x, test_y = _read_split(raw_dir, "t10k", verify)
    return train_x, train_y, test_x, test_y
