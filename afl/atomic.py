"""Atomic writes: a temporary name, fsync, rename over the target, fsync of the folder.

A reader, or a run killed at any moment, never sees a partial file: either the old one or
the new one, whole. Tables, run.json, checkpoints and figures are all written this way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not imported at run time: the login-node launcher writes JSON only (no pandas)
    import pandas as pd


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


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    tmp = tmp_name(path)
    frame.to_parquet(tmp, index=False)
    replace_atomically(tmp, path)


def write_json(obj: dict, path: Path) -> None:
    tmp = tmp_name(path)
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    replace_atomically(tmp, path)
