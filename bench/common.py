"""Shared helpers of the benchmark scripts: the machine, its matmul rate, timing, tables."""

import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
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


def baseline(rev: str, into: Path) -> Path:
    """The ``afl`` package as of git revision ``rev``, extracted under ``into``: put the returned
    folder first on ``PYTHONPATH`` and a child process imports that code instead of this checkout's
    (the "before" of a before/after measurement in one run)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "afl"], capture_output=True, check=False)
    if archive.returncode:
        raise SystemExit(f"--baseline {rev}: {archive.stderr.decode().strip()}; fix: name a commit of this clone")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def codes(rev: str | None, into: Path) -> dict[str, Path | None]:
    """The code a before/after measurement runs, keyed by its label: ``rev``'s package first
    (``baseline``, extracted under ``into``), then this checkout (``None``: no ``PYTHONPATH``);
    this checkout alone without ``rev``."""
    here = {"this checkout": None}
    return {f"baseline {rev}": baseline(rev, into), **here} if rev else here


def interleaved(script: Path, args: list[str], codes: dict[str, Path | None], repeats: int) -> dict[str, list[dict]]:
    """``script --child ARGS`` run ``repeats`` times on each of ``codes``, interleaved (A B A B ...)
    so that a slow spell of the machine falls on both, each run in a fresh process: each code's
    JSON results."""
    runs = {code: [] for code in codes}
    for _ in range(repeats):
        for code, path in codes.items():
            runs[code].append(child_json(script, args, path))
    return runs


def child_json(script: Path, args: list[str], pythonpath: Path | None = None) -> dict:
    """Run ``script --child ARGS`` in a fresh Python (with ``pythonpath`` first on the path) and
    return the JSON object it prints last."""
    return run_json([sys.executable, str(script), "--child", *args], pythonpath)


def run_json(argv: list[str], pythonpath: Path | None = None) -> dict:
    """Run the command ``argv`` (with ``pythonpath`` first on the path) and return the JSON object
    it prints last; one that names the ``afl`` it imported must have imported ``pythonpath``'s
    (else this checkout's)."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run(argv, capture_output=True, text=True, env=env)
    name = Path(argv[1]).name
    if out.returncode:
        raise SystemExit(f"{name} {' '.join(argv[2:])} failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    expected = Path(pythonpath or REPO).resolve()
    if "afl" in result and expected not in Path(result["afl"]).resolve().parents:
        raise SystemExit(f"{name}: the child imported afl from {result['afl']}, not from {expected}")
    return result


def adam_plan(epochs: int, delay: float):
    """The training benchmarks' local plan: Adam at 1e-3, batch 64, delay-aware (alpha 0.01), no early stop."""
    from afl.learning.local import LocalPlan  # here: a baseline revision (--baseline) has no afl.learning

    return LocalPlan(optimizer="adam", lr=1e-3, momentum=0.0, weight_decay=0.0, batch_size=64, epochs=epochs,
                     steps=None, lr_rule="delay_aware", lr_alpha=0.01, delay=delay, patience=None)


def simulation(cfg, on_update, fed=None):
    """The wired simulation of ``cfg`` (``afl.run.build``), to time or measure ``.run()``.

    ``fed``: a prebuilt federation (``shards``, ``rates``, ``routing``, data tensors). A baseline
    revision (``--baseline``) from before the run builder has no ``afl.run.build``: its own
    wiring, as its ``afl.train`` did it, stands in.
    """
    try:
        from afl.run.build import build
    except ImportError:
        return _legacy_simulation(cfg, on_update, fed)
    return build(cfg, on_update=on_update, fed=fed).simulation


def _legacy_simulation(cfg, on_update, fed):
    """The wiring of revisions before the run builder (kept only to measure them as baselines)."""
    from afl import algorithms, federation, models, params
    from afl.engine.executor import LazyExecutor, NullWorkload, TrainingWorkload
    from afl.engine.simulator import Simulation
    from afl.rng import Stream, torch_stream

    fed = fed if fed is not None else federation.build(cfg, torch.device("cpu"))
    if cfg.run.workload == "none":
        workload, x0 = NullWorkload(cfg), torch.zeros(0)
    else:
        model = models.build(cfg.model.name, fed.num_classes, fed.input_shape, torch_stream(cfg.seed, Stream.INIT))
        workload = TrainingWorkload(cfg, model, fed.train_x, fed.train_y, fed.shards, cfg.run.updates)
        x0 = params.flatten(model)
    sizes = getattr(fed, "sizes", None)
    sizes = sizes if sizes is not None else np.array([len(s) for s in fed.shards])
    return Simulation(cfg, algorithms.make(cfg.algorithm, fed.routing), LazyExecutor(workload), x0, sizes, fed.rates,
                      fed.routing, workload.steps, on_update, lambda *a: None)
