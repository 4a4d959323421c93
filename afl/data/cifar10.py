"""CIFAR-10 reader for the python version ``<root>/cifar-10-batches-py/``.

Each of ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` is a pickle (written by
Python 2, read with ``encoding="bytes"``) of a dict with ``b"data"``, a uint8 array
``(n, 3072)`` holding each 32x32 image channel-major (1024 red, 1024 green, 1024 blue
values, each row-major), and ``b"labels"``, ``n`` ints in 0-9. The publisher's files
have ``n = 10000``; smaller files of the same format are accepted.

Pickles can run arbitrary code, so they are always read with an unpickler that only
resolves the globals NumPy array reconstruction needs.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import pickle
from pathlib import Path

import numpy as np

from afl.errors import DataError

try:
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # NumPy < 2
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

FOLDER = "cifar-10-batches-py"
NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}

# (module, name) -> object: everything a pickled ndarray may reference, for NumPy 1 and 2
# spellings and pickle protocols 2-5 (``_codecs.encode`` is how Python 3 writes bytes
# under protocol 2).
_ALLOWED_GLOBALS = {
    **{
        (module, "_reconstruct"): _multiarray._reconstruct
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    },
    **{
        (module, "_frombuffer"): _numeric._frombuffer
        for module in ("numpy.core.numeric", "numpy._core.numeric")
    },
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global outside ``_ALLOWED_GLOBALS``."""

    def __init__(self, data: bytes, path: Path):
        super().__init__(io.BytesIO(data), encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[module, name]
        except KeyError:
            raise DataError(f"refusing to unpickle {module}.{name} from {self._path}") from None


def _fix(folder: Path) -> str:
    return f"fix: re-download with `afl data download cifar10 --root {folder.parent}`"


def _read_batch(folder: Path, name: str, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``(n, 3, 32, 32)`` and labels int64 ``(n,)`` of one batch file."""
    path = folder / name
    if not path.is_file():
        raise DataError(
            f"CIFAR-10 not found under {folder} (looked for {name}); fix: run "
            f"`afl data download cifar10 --root {folder.parent}` "
            "or set data.root / AFL_DATA_ROOT"
        )
    data = path.read_bytes()
    if verify:
        got = hashlib.md5(data).hexdigest()
        if got != MD5[name]:
            raise DataError(
                f"{path}: MD5 mismatch (expected {MD5[name]}, got {got}), the file is "
                f"corrupt or incomplete; {_fix(folder)}"
            )
    try:
        batch = _RestrictedUnpickler(data, path).load()
    except DataError:
        raise
    except Exception as e:  # a malformed pickle can fail in many ways
        raise DataError(f"{path}: not a CIFAR-10 pickle ({e}); {_fix(folder)}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path}: not a CIFAR-10 batch (no b'data'/b'labels'); {_fix(folder)}")
    x, labels = batch[b"data"], batch[b"labels"]
    row = int(np.prod(IMAGE_SHAPE))
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != row:
        raise DataError(
            f"{path}: b'data' must be a uint8 array (n, {row}), got "
            f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}; {_fix(folder)}"
        )
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: b'labels' are not integers ({e}); {_fix(folder)}") from None
    if y.shape != (len(x),):
        raise DataError(
            f"{path}: {y.size} labels for {len(x)} images; {_fix(folder)}"
        )
    if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DataError(f"{path}: labels out of range 0-9; {_fix(folder)}")
    return x.reshape(-1, *IMAGE_SHAPE), y


def read_cifar10(
    root_dir: Path, verify: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read ``(train_x, train_y, test_x, test_y)`` from ``<root_dir>/cifar-10-batches-py``.

    Images are uint8 ``(N, 3, 32, 32)``, labels int64 ``(N,)``; the train split is the
    five data batches in order. With ``verify`` each file's MD5 is checked before it is
    unpickled.
    """
    folder = Path(root_dir) / FOLDER
    train = [_read_batch(folder, name, verify) for name in TRAIN_BATCHES]
    test_x, test_y = _read_batch(folder, TEST_BATCH, verify)
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return train_x, train_y, test_x, test_y
