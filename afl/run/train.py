"""``afl train``: build a run (``afl.run.build``), simulate it, write the results; resume, fail cleanly."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

import afl
from afl.config import Config, config_hash, to_dict
from afl.errors import AflError
from afl.learning.models import evaluate
from afl.queueing.model import trainer_prediction
from afl.run.pilot import optimal_routing
from afl import atomic
from afl.run import checkpoint, recorder
from afl.run.build import build
from afl.run.probes import Probes


# Seconds between two redraws of the progress bar during local training.
PROGRESS_SECONDS = 0.5


def check_output_dir(out: Path) -> None:
    """``out`` must be a writable folder or creatable as one; nothing is created here."""
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise AflError(f"--out {out}: {probe} is a file, not a folder; fix: choose another --out")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise AflError(f"--out {out}: {probe} is not writable; fix: choose a writable folder or fix its permissions")


def make_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AflError(f"--out {out}: cannot create it ({exc.strerror}); fix: choose a writable folder") from None


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(afl.__file__).parent, text=True,
                              capture_output=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def slurm_job() -> str | None:
    """The SLURM job running this process: ``ARRAY_TASK`` for an array task, else the job id; None outside SLURM."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def provenance(cfg: Config, started: dt.datetime, device) -> dict:
    """What run.json says of every run, whatever its outcome: config, seed, versions, where and when."""
    return {
        "config": to_dict(cfg),
        "config_hash": config_hash(cfg),
        "seed": cfg.seed,
        "device": str(device),
        "started": started.isoformat(),
        "host": platform.node(),
        "slurm_job": slurm_job(),
        "commit": _commit(),
        "versions": {"afl": afl.__version__, "python": platform.python_version(),
                     "torch": torch.__version__, "numpy": np.__version__, "pandas": pd.__version__},
        "float_paths": float_paths(),
    }


def float_paths() -> dict:
    """What decides float rounding on this machine besides the config (docs/reproducibility.md):
    the CPU, torch's kernel set and threads, and the BLAS/oneDNN path settings."""
    return {"cpu": _cpu_model(), "aten_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(), "portable": afl.PORTABLE,
            **{k: os.environ.get(k) for k in afl.PORTABLE_ENV}}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.processor())
    except OSError:
        return platform.processor()


def train(cfg: Config, out: Path, progress: bool = True, restart: bool = False,
          request: checkpoint.Request | None = None) -> dict:
    """Run one simulation; write updates/evals/clients/sampling Parquet tables and run.json into ``out``.

    Resumes from the checkpoint in ``out`` unless ``restart``; a finished run of the same
    config is not run again. Nothing is written before the data and model are ready; a run
    that fails after that writes run.json with status ``failed`` and keeps its checkpoint.
    ``request``: lets another thread ask for a checkpoint now (``afl.cluster.task`` on preemption).
    """
    out = Path(out)
    check_output_dir(out)
    if restart:
        checkpoint.remove(out)
    elif (done := checkpoint.finished_run(out, config_hash(cfg))) is not None:
        return done | {"skipped": True}
    saved = None if restart else checkpoint.load(out)
    if saved is not None and saved["config_hash"] != config_hash(cfg):
        raise AflError(f"--out {out}: holds a checkpoint of another config ({saved['config_hash']}); "
                       "fix: use another --out, or --restart to discard it")
    started = dt.datetime.now(dt.timezone.utc)
    wall0 = time.perf_counter() - (saved["wall_time"] if saved else 0.0)
    rec = recorder.Recorder()

    def on_update(version, now, tasks, arrivals, taus, weights, update_norm):
        rec.update(version, now, tasks, arrivals, taus, weights, update_norm)
        bar.update(1)

    postfix: dict[str, str] = {}
    refreshed = [0.0]

    def on_eval(x, version, now):
        if run.model is None:
            return None
        loss, acc = evaluate(run.model, x, run.federation.test_x, run.federation.test_y, cfg.run.eval_batch)
        # The updates since the previous evaluation: the sampling probe's afl_rule draws.
        applied = rec.applied_since(rec.evals["version"][-1] if rec.evals["version"] else version) \
            if probes.draws else None
        rec.eval(version, now, time.perf_counter() - wall0, loss, acc,
                 rec.server_loss(cfg.algorithm.concurrency), probes.grad_norm_sq(x))
        rec.sample(probes.sampling(x, version, now, applied))
        postfix.update(vtime=f"{now:.4g}", acc=f"{acc:.4f}")
        bar.set_postfix(postfix, refresh=False)
        return loss

    def on_local_step(done, planned):
        # Local training of one batch can take minutes: show its steps and keep the clock moving,
        # at most every PROGRESS_SECONDS (one clock read per local step otherwise).
        now = time.monotonic()
        if now - refreshed[0] >= PROGRESS_SECONDS or done == planned:
            refreshed[0] = now
            postfix["local"] = f"{done}/{planned} steps"
            bar.set_postfix(postfix, refresh=False)
            bar.refresh()

    def on_checkpoint(state):
        checkpoint.save({"config_hash": config_hash(cfg), "simulation": state, "recorder": rec.state_dict(),
                         "rule": getattr(run.aggregator, "state", {}), "wall_time": time.perf_counter() - wall0}, out)
        if request is not None and request.asked.is_set():
            request.asked.clear()
            request.saved.set()

    # The bound's optimal routing comes from a pilot run, here where the run is built (on its node).
    built, routing = optimal_routing(cfg)
    run = build(built, on_update=on_update, on_eval=on_eval, on_checkpoint=on_checkpoint,
                requested=request.asked.is_set if request is not None else lambda: False)
    probes = Probes(run)
    if progress and run.model is not None:
        run.workload.progress = on_local_step
    make_output_dir(out)
    sim, fed, device = run.simulation, run.federation, run.device
    if saved is not None:
        sim.load_state_dict(saved["simulation"])
        rec.load_state_dict(saved["recorder"])
        if saved["rule"]:
            run.aggregator.state.update(saved["rule"])
    bar = tqdm(total=run.planned_updates, initial=sim.version, unit="upd", desc=f"{cfg.algorithm.name}",
               disable=not progress, dynamic_ncols=True, mininterval=0.5, file=sys.stderr)
    try:
        outcome = sim.run()
    except Exception as exc:
        try:
            atomic.write_json(provenance(cfg, started, device) | {
                "status": "failed", "reason": f"{type(exc).__name__}: {exc}", "updates": sim.version,
                "wall_time": time.perf_counter() - wall0}, out / "run.json")
        except atomic.DiskFull:
            pass  # the disk that failed the run fails this record too: the run's own error is the one to tell
        raise
    finally:
        bar.close()
    wall = time.perf_counter() - wall0

    updates, evals = rec.updates_frame(), rec.evals_frame()
    atomic.write_parquet(updates, out / "updates.parquet")
    atomic.write_parquet(evals, out / "evals.parquet")
    atomic.write_parquet(rec.sampling_frame(), out / "sampling.parquet")
    # The closed Jackson network's prediction beside the simulated staleness (docs/theory.md).
    prediction = trainer_prediction(cfg, fed.rates, fed.routing, run.steps)
    atomic.write_parquet(recorder.clients_frame(
        outcome.stats, fed.sizes, fed.rates, fed.routing,
        prediction.relative_delay if prediction is not None else None), out / "clients.parquet")
    info = provenance(cfg, started, device) | {
        "status": outcome.status,
        "reason": outcome.reason,
        "updates": outcome.version,
        "virtual_time": outcome.time,
        "wall_time": wall,
        "updates_per_second": outcome.version / wall if wall > 0 else None,
        "final_test_acc": rec.evals["test_acc"][-1] if rec.evals["test_acc"] else None,
        "resumed": saved is not None,
        "discarded": int(outcome.stats.discarded.sum()),
        "cancelled": int(outcome.stats.cancelled.sum()),
        "wasted_time": float(outcome.stats.wasted_time.sum()),
        "dropped_tasks": int(outcome.stats.dropped.sum()),
        "online_time": float(outcome.stats.online_time.sum()),
        "predicted_throughput": prediction.throughput if prediction is not None else None,
        "routing": routing,
    }
    atomic.write_json(info, out / "run.json")
    checkpoint.remove(out)
    if request is not None:
        request.saved.set()  # the run is over: whoever waits for a checkpoint need not
    return info
