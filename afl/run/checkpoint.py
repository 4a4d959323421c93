"""Checkpoints: a run's whole state in one file, written atomically, loaded without code execution.

This module imports torch only when it saves or loads, so that the login-node launcher
(``afl.cluster.array``) can use its names and ``finished_run`` cheaply.

The file holds plain data and tensors only (``torch.save``; loaded with ``weights_only=True``,
which refuses anything else). It is written to a temporary name, fsynced and renamed over
the previous checkpoint, so a kill at any moment leaves either the old or the new
checkpoint whole, never a partial one.
"""

import io
import json
import threading
from pathlib import Path

import numpy as np

from afl.errors import AflError
from afl.atomic import write_bytes

NAME = "checkpoint.pt"
FINAL = ("completed", "diverged")  # a run with this status is not run again: the same config ends the same way


def plain(obj):
    """``obj`` with NumPy scalars made Python numbers, which ``weights_only`` loading accepts."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save(state: dict, out: Path) -> None:
    """Write the checkpoint atomically (``afl.atomic.write_bytes``: a full disk is one line, and the
    previous checkpoint stays whole)."""
    import torch

    buffer = io.BytesIO()
    torch.save(plain(state), buffer)
    write_bytes(buffer.getvalue(), Path(out) / NAME)


def load(out: Path) -> dict | None:
    """The checkpoint in ``out``, or None; leftovers of an interrupted write are removed."""
    out = Path(out)
    for leftover in out.glob(f".{NAME}.tmp-*"):
        leftover.unlink(missing_ok=True)
    path = out / NAME
    if not path.exists():
        return None
    import torch

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # a damaged file: say which, and how to start over
        raise AflError(f"{path}: unreadable checkpoint ({type(exc).__name__}); "
                       "fix: rerun with --restart to start from scratch") from None


def finished_run(out: Path, config_hash: str) -> dict | None:
    """run.json of a finished (``FINAL`` status) run of the config with this hash in ``out``, if any."""
    try:
        info = json.loads((Path(out) / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return info if info.get("config_hash") == config_hash and info.get("status") in FINAL else None


def remove(out: Path) -> None:
    (Path(out) / NAME).unlink(missing_ok=True)


class Request:
    """A checkpoint asked for from another thread (the handler of a SLURM preemption signal).

    ``ask`` sets ``asked``; the simulation saves at its next quiescent point and ``train`` sets
    ``saved`` once the file is in place, or when the run ends first (nothing left to save).
    """

    def __init__(self):
        self.asked = threading.Event()
        self.saved = threading.Event()

    def ask(self, timeout: float) -> bool:
        """Ask for a checkpoint and wait for it; False if none was written within ``timeout`` s."""
        self.saved.clear()
        self.asked.set()
        return self.saved.wait(timeout)
