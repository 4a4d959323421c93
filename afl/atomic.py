"""Atomic writes: a temporary name, fsync, rename over the target, fsync of the folder.

A reader, or a run killed at any moment, never sees a partial file: either the old one or
the new one, whole. Tables, run.json, checkpoints and figures are all written this way, through
``write_bytes``: a write that fails removes its temporary file, and one that finds the disk full
or the quota exceeded is one line (``DiskFull``) naming the file and the fix.
"""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from afl.errors import AflError

if TYPE_CHECKING:  # not imported at run time: the login-node launcher writes JSON only (no pandas)
    import pandas as pd

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(AflError):
    """A write that found no space left on its device, or its quota exceeded."""


def replace_atomically(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _write(tmp: Path, data: bytes) -> None:
    """Write ``data`` to ``tmp`` (the one place afl writes an output's bytes)."""
    with open(tmp, "wb") as fh:
        fh.write(data)


def write_bytes(data: bytes, path: Path) -> None:
    """Write ``data`` to ``path`` atomically. On any failure the temporary file is removed and the
    previous ``path``, if any, is left as it was; a full disk or an exceeded quota is ``DiskFull``."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        _write(tmp, data)
        replace_atomically(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            raise DiskFull(f"{path}: {os.strerror(exc.errno).lower()} while writing it; fix: free space (or raise "
                           "the quota) there, then run again: a run resumes from its last checkpoint") from None
        raise


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    write_bytes(buffer.getvalue(), path)


def write_json(obj: dict, path: Path) -> None:
    write_bytes((json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode(), path)
