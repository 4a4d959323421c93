"""Shared helpers of the benchmark scripts: the machine, its matmul rate, timing, tables."""

import os
import platform
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def set_threads(threads: int | None) -> None:
    """``--threads``: torch's intra-op threads (on a loaded machine, 1 avoids threads waiting on
    each other at every operation; the matmul rate is then measured with the same count)."""
    if threads:
        torch.set_num_threads(threads)


def data_root(given: str | None) -> Path:
    """The dataset root: ``--data-root``, else $AFL_SHARED_DATA, $AFL_DATA_ROOT, ../shared/data."""
    for candidate in (given, os.environ.get("AFL_SHARED_DATA"), os.environ.get("AFL_DATA_ROOT")):
        if candidate:
            return Path(candidate)
    return REPO.parent / "shared" / "data"


def machine() -> str:
    """One line: CPU model, cores, torch threads, GPU, torch version, current load."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"{gpu}; load average {load}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[float, float]:
    """Wall and process CPU seconds of ``fn()``, the device synchronised before and after.

    On a shared machine the CPU seconds of a single-threaded run (``--threads 1``) measure
    the work itself; wall seconds also count the time other processes held the cores.
    """
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def matmul_rate(device: torch.device, dtype=torch.float32, n: int = 2048, repeats: int = 7, clock: int = 0) -> float:
    """The machine's measured matrix-multiply rate in FLOP/s: median of ``repeats`` n x n x n
    products, timed by the wall (``clock=0``) or CPU (``clock=1``) clock."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    return 2 * n**3 / statistics.median(timed(lambda: a @ b, device)[clock] for _ in range(repeats))


def table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
